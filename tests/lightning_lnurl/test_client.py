"""The LNURL-pay client against a fake LNURL service (``httpx.MockTransport``): the happy
paths for every destination form, and every refusal, each before anything is paid."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import bolt11
import httpx
import pytest

from satvault.lightning import lnurl
from satvault.lightning.errors import LnurlError
from satvault.lightning.lnurl import (
    decode_lnurl,
    encode_lnurl,
    is_lnurl_destination,
    resolve_pay_request,
)
from tests.lightning_lnurl.fakes import make_bolt11

METADATA = json.dumps([["text/plain", "A coffee"], ["text/identifier", "bob@pay.test"]])


class FakeService:
    """One LNURL-pay endpoint at /lnurlp/bob (also /.well-known/lnurlp/bob), callback /cb."""

    def __init__(self, base: str = "http://pay.test") -> None:
        self.base = base
        self.metadata = METADATA
        self.pay_request: dict[str, Any] = {
            "tag": "payRequest", "callback": f"{base}/cb", "minSendable": 1_000,
            "maxSendable": 1_000_000, "metadata": self.metadata, "commentAllowed": 10}
        self.seen: list[httpx.Request] = []
        # Hooks a test may replace: what the callback answers for an amount.
        self.answer: Callable[[int], Any] = self.honest

    def honest(self, amount: int) -> dict[str, Any]:
        digest = hashlib.sha256(self.metadata.encode()).digest()
        return {"pr": make_bolt11(amount, description_hash=digest), "routes": [],
                "successAction": {"tag": "message", "message": "Thanks!"}}

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path in ("/lnurlp/bob", "/.well-known/lnurlp/bob"):
            return httpx.Response(200, json=self.pay_request)
        if request.url.path == "/cb":
            return httpx.Response(200, json=self.answer(int(request.url.params["amount"])))
        return httpx.Response(404, json={"status": "ERROR", "reason": "no such thing"})


@pytest.fixture
def service() -> FakeService:
    return FakeService()


@pytest.fixture
async def http(service: FakeService) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.MockTransport(service.handler)) as client:
        yield client


async def pay(http: httpx.AsyncClient, destination: str, amount: int = 21_000,
              **kw: Any) -> lnurl.LnurlPayResult:
    kw.setdefault("allow_private_hosts", True)
    return await resolve_pay_request(destination, amount, http=http, **kw)


def test_destination_forms():
    bech = encode_lnurl("https://pay.example.com/lnurlp/bob")
    assert bech.startswith("LNURL1")
    assert decode_lnurl(bech.lower()) == "https://pay.example.com/lnurlp/bob"
    yes = [bech, bech.lower(), f"lightning:{bech}", f"LIGHTNING:{bech.lower()}",
           "lnurlp://pay.example.com/lnurlp/bob", "lnurlw://pay.example.com/w/1",
           "bob@pay.example.com", "Bob@Pay.Example.com", "bob.smith_1-x@pay.example.com",
           "bob+tips@pay.example.com", f"https://pay.example.com/?lightning={bech}"]
    no = ["", "bob", "bob@", "@", "bob@@x.com", "bob smith@x.com", "bob@x_y.com",
          "lnbcrt1pxyz", "bcrt1q8uq9hrte4u3d2pes3gmrxeffws053ylettc383",
          "https://pay.example.com/lnurlp/bob", "LNURL1NOTBECH32", bech[:-1] + "q",
          bech[:20] + bech[20:].lower()]
    assert [d for d in yes if not is_lnurl_destination(d)] == []
    assert [d for d in no if is_lnurl_destination(d)] == []


@pytest.mark.parametrize("destination", [
    encode_lnurl("http://pay.test/lnurlp/bob"),
    "lightning:" + encode_lnurl("http://pay.test/lnurlp/bob").lower(),
    "bob@pay.test",
    "Bob@PAY.test",
    "lnurlp://pay.test/lnurlp/bob",
])
async def test_happy_path(http, service, destination):
    result = await pay(http, destination, 21_000)
    inv = bolt11.decode(result.bolt11)
    assert int(inv.amount_msat) == 21_000
    assert inv.description_hash == hashlib.sha256(METADATA.encode()).hexdigest()
    assert result.metadata == METADATA and result.description == "A coffee"
    assert (result.min_msat, result.max_msat) == (1_000, 1_000_000)
    assert result.success_action == {"tag": "message", "message": "Thanks!"}
    first, callback = service.seen
    wanted = "/.well-known/lnurlp/bob" if "@" in destination else "/lnurlp/bob"
    assert first.url.path == wanted and first.url.scheme == "http"
    assert callback.url.params["amount"] == "21000" and "comment" not in callback.url.params


async def test_comment_is_sent_within_comment_allowed(http, service):
    await pay(http, "bob@pay.test", comment="gm ☕")
    assert service.seen[-1].url.params["comment"] == "gm ☕"


@pytest.mark.parametrize("amount", [999, 1_000_001])
async def test_amount_outside_min_max_is_refused(http, service, amount):
    with pytest.raises(LnurlError, match=r"outside what this recipient accepts: 1000 to"):
        await pay(http, "bob@pay.test", amount)
    assert len(service.seen) == 1  # the callback was never asked for an invoice


async def test_comment_too_long_or_not_accepted(http, service):
    with pytest.raises(LnurlError, match="at most 10"):
        await pay(http, "bob@pay.test", comment="x" * 11)
    service.pay_request.pop("commentAllowed")
    with pytest.raises(LnurlError, match="accepts no comment"):
        await pay(http, "bob@pay.test", comment="hi")
    assert all(r.url.path != "/cb" for r in service.seen)


async def test_description_hash_mismatch_is_refused(http, service):
    service.answer = lambda amount: {"pr": make_bolt11(
        amount, description_hash=hashlib.sha256(b"something else").digest())}
    with pytest.raises(LnurlError, match="does not commit to its metadata"):
        await pay(http, "bob@pay.test")
    service.answer = lambda amount: {"pr": make_bolt11(amount, description="A coffee")}
    with pytest.raises(LnurlError, match="does not commit to its metadata"):
        await pay(http, "bob@pay.test")


async def test_amount_mismatch_is_refused(http, service):
    digest = hashlib.sha256(METADATA.encode()).digest()
    service.answer = lambda amount: {"pr": make_bolt11(amount + 1_000, description_hash=digest)}
    with pytest.raises(LnurlError, match="not the 21000 msat asked for"):
        await pay(http, "bob@pay.test", 21_000)
    service.answer = lambda amount: {"pr": make_bolt11(None, description_hash=digest)}
    with pytest.raises(LnurlError, match="for any msat"):
        await pay(http, "bob@pay.test", 21_000)


async def test_invalid_invoice_is_refused(http, service):
    for pr in ("lnbcrt1garbage", "", None, 42):
        service.answer = lambda amount, pr=pr: {"pr": pr}
        with pytest.raises(LnurlError, match="invoice"):
            await pay(http, "bob@pay.test")


async def test_service_errors_carry_the_reason(http, service):
    service.answer = lambda amount: {"status": "ERROR", "reason": "wallet is frozen"}
    with pytest.raises(LnurlError, match="refused: wallet is frozen"):
        await pay(http, "bob@pay.test")
    # Status codes mean nothing (LUD-01): the ERROR body decides, whatever the code.
    with pytest.raises(LnurlError, match="refused: no such thing"):
        await pay(http, "carol@pay.test")


async def test_malformed_pay_requests_are_refused(http, service):
    cases = [
        ({"tag": "withdrawRequest"}, "not a payRequest"),
        ({"minSendable": 5_000, "maxSendable": 1_000}, "range"),
        ({"minSendable": "1000"}, "minSendable"),
        ({"metadata": "not json"}, "not JSON"),
        ({"metadata": json.dumps([["text/identifier", "bob@pay.test"]])}, "text/plain"),
        ({"callback": None}, "callback"),
        ({"callback": "ftp://pay.test/cb"}, "https"),
    ]
    original = dict(service.pay_request)
    for change, message in cases:
        service.pay_request = {**original, **change}
        with pytest.raises(LnurlError, match=message):
            await pay(http, "bob@pay.test")


async def test_success_actions(http, service):
    honest = service.honest

    def with_action(action: Any) -> Callable[[int], Any]:
        return lambda amount: {**honest(amount), "successAction": action}

    service.answer = with_action({"tag": "url", "url": "http://pay.test/order/1",
                                  "description": "Your order"})
    assert (await pay(http, "bob@pay.test")).success_action["url"] == "http://pay.test/order/1"
    service.answer = with_action(None)
    assert (await pay(http, "bob@pay.test")).success_action is None
    for action, message in [({"tag": "url", "url": "https://evil.test/x", "description": ""},
                             "own domain"),
                            ({"tag": "launch-rocket"}, "unsupported successAction"),
                            ({"tag": "message", "message": "x" * 145}, "malformed")]:
        service.answer = with_action(action)
        with pytest.raises(LnurlError, match=message):
            await pay(http, "bob@pay.test")


async def test_private_hosts_are_refused_unless_allowed(http, service, monkeypatch):
    for destination in ("lnurlp://localhost/lnurlp/bob", "bob@127.0.0.1",
                        encode_lnurl("https://[::1]/lnurlp/bob"),
                        encode_lnurl("https://169.254.169.254/latest/meta-data"),
                        encode_lnurl("http://pay.test/lnurlp/bob")):
        with pytest.raises(LnurlError):
            await pay(http, destination, allow_private_hosts=False)

    names = {"metadata.test": ["169.254.169.254"], "mixed.test": ["93.184.215.14", "10.0.0.7"],
             "mapped.test": ["::ffff:127.0.0.1"], "empty.test": [],
             # Found from outside (stop 35): the LNURL client's own check passed a NAT64 or
             # 6to4 form of a private address and Azure's public wire server; it shares the
             # webhooks' guard now (satvault.kernel.netguard).
             "nat64.test": ["64:ff9b::a00:7"], "sixtofour.test": ["2002:a00:7::1"],
             "azure.test": ["168.63.129.16"]}

    async def resolve(host: str, port: int) -> list[str]:
        if host not in names:
            raise OSError(-2, "Name or service not known")
        return names[host]

    monkeypatch.setattr(lnurl, "_resolve_host", resolve)
    refusals = set()
    for host in (*names, "nxdomain.test"):
        with pytest.raises(LnurlError, match="does not resolve to a public address") as refused:
            await pay(http, f"bob@{host}", allow_private_hosts=False)
        # One answer whatever the cause: a payer must not map internal names by the
        # difference, nor learn an internal address.
        refusals.add(str(refused.value).replace(host, "<host>"))
        assert "10.0.0.7" not in str(refused.value)
    assert len(refusals) == 1, refusals
    assert service.seen == []


async def test_public_host_is_called_at_the_checked_address(monkeypatch):
    public = FakeService(base="https://pay.example.com")
    lookups: list[str] = []

    async def resolve(host: str, port: int) -> list[str]:
        lookups.append(f"{host}:{port}")
        return ["93.184.215.14"]

    monkeypatch.setattr(lnurl, "_resolve_host", resolve)
    async with httpx.AsyncClient(transport=httpx.MockTransport(public.handler)) as client:
        result = await resolve_pay_request("bob@pay.example.com", 5_000, http=client,
                                           allow_private_hosts=False)
    assert int(bolt11.decode(result.bolt11).amount_msat) == 5_000
    assert lookups == ["pay.example.com:443", "pay.example.com:443"]
    for request in public.seen:
        assert request.url.host == "93.184.215.14" and request.url.scheme == "https"
        assert request.headers["host"] == "pay.example.com"
        assert request.extensions["sni_hostname"] == "pay.example.com"
    # A plain-http callback from a public service is refused when private hosts are not allowed.
    public.pay_request["callback"] = "http://pay.example.com/cb"
    async with httpx.AsyncClient(transport=httpx.MockTransport(public.handler)) as client:
        with pytest.raises(LnurlError, match="https"):
            await resolve_pay_request("bob@pay.example.com", 5_000, http=client,
                                      allow_private_hosts=False)


async def test_redirects_are_not_followed(service):
    def handler(request: httpx.Request) -> httpx.Response:
        service.seen.append(request)
        return httpx.Response(302, headers={"Location": "http://169.254.169.254/"})

    transport = httpx.MockTransport(handler)
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as client:
        with pytest.raises(LnurlError, match="redirect"):
            await pay(client, "bob@pay.test")
    assert len(service.seen) == 1


async def test_response_size_is_capped(service):
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=b"[" + b"1," * lnurl.MAX_RESPONSE_BYTES + b"1]")

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(LnurlError, match="more than"):
            await pay(client, "bob@pay.test")


async def test_slow_service_times_out(monkeypatch):
    async def handler(request: httpx.Request) -> httpx.Response:
        await asyncio.Event().wait()  # never answers
        return httpx.Response(200, json={})

    monkeypatch.setattr(lnurl, "EXCHANGE_DEADLINE", 0.05)
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        with pytest.raises(LnurlError, match="did not answer within"):
            await pay(client, "bob@pay.test")


async def test_transport_errors_and_non_json_become_lnurl_errors():
    def broken(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    async with httpx.AsyncClient(transport=httpx.MockTransport(broken)) as client:
        with pytest.raises(LnurlError, match=r"could not reach pay\.test"):
            await pay(client, "bob@pay.test")
    html = httpx.MockTransport(lambda r: httpx.Response(200, text="<html>hi</html>"))
    async with httpx.AsyncClient(transport=html) as client:
        with pytest.raises(LnurlError, match="did not answer with JSON"):
            await pay(client, "bob@pay.test")


async def test_links_that_are_not_pay_requests_are_not_fetched(http, service):
    for destination in ("lnurlw://pay.test/w/1", "keyauth://pay.test/auth?k1=00",
                        encode_lnurl("http://pay.test/auth?tag=login&k1=" + "00" * 32),
                        encode_lnurl("http://pay.test/w?tag=withdrawRequest&k1=1")):
        with pytest.raises(LnurlError, match="not a payRequest"):
            await pay(http, destination)
    assert service.seen == []


async def test_bad_destinations_and_amounts(http):
    for destination in ("not a destination", "bob@pay.test:8080", encode_lnurl(
            "https://x.onion/p")):
        with pytest.raises(LnurlError):
            await pay(http, destination, allow_private_hosts=False)
    with pytest.raises(LnurlError, match="positive"):
        await pay(http, "bob@pay.test", 0)
