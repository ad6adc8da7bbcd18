"""A Lightning Address on a list names it however the payer writes it: ``BOB@HOST`` and
``lightning:bob@host`` are the same address (LUD-16 names are lower case, domains are
case-insensitive), and an LNURL's bech32 is case-insensitive like an address's."""

from __future__ import annotations

import json
import re

import httpx
import pytest

from satvault.lightning.lnurl import encode_lnurl
from satvault.risk.lists import refresh_sanctions
from tests.lightning_lnurl.conftest import LnEnv, ln  # noqa: F401
from tests.lightning_lnurl.test_client import FakeService
from tests.lightning_lnurl.test_withdraw import FUND, withdrawals


async def test_a_listed_lightning_address_is_refused_in_any_case(ln: LnEnv):  # noqa: F811
    await ln.fund("alice", FUND)
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201, r.text
    lnurl = r.json()["lnurl"]
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"bob@lnurl.test\n{lnurl.lower()}\n", actor="user:a")
    ln.client._transport.app.state.lnurl_http = ln.client  # type: ignore[attr-defined]
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    for n, destination in enumerate(("BOB@LNURL.TEST", "lightning:bob@lnurl.test",
                                     lnurl.upper(), f"lightning:{lnurl.upper()}")):
        answer = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": f"{n}"},
                                      json={"destination": destination, "amount_msat": 10_000})
        assert answer.status_code == 403, (destination, answer.text)
        assert answer.json()["type"].endswith("/risk-rejected"), answer.text
    assert await withdrawals(ln) == 0


async def test_a_listed_pay_link_is_refused_in_its_other_forms(ln: LnEnv):  # noqa: F811
    """The same payRequest is reachable as a Lightning Address, a bech32 LNURL, a LUD-17
    ``lnurlp://`` link and a LUD-01 fallback ``https://…?lightning=LNURL1…`` link: a list
    naming it in one form refuses it in every other (each resolves to the same service)."""
    await ln.fund("alice", FUND)
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201, r.text
    lnurl = r.json()["lnurl"]
    ln.client._transport.app.state.lnurl_http = ln.client  # type: ignore[attr-defined]
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    cases = [("bob@lnurl.test", "lnurlp://lnurl.test/.well-known/lnurlp/bob"),
             ("bob@lnurl.test", lnurl),
             ("bob@lnurl.test", f"https://wallet.example/pay?lightning={lnurl}"),
             (lnurl.lower(), "bob@lnurl.test"),
             (lnurl.lower(), f"https://wallet.example/pay?lightning={lnurl}"),
             (lnurl.lower(), "lnurlp://LNURL.test/.well-known/lnurlp/bob")]
    for n, (listed, destination) in enumerate(cases):
        async with ln.sessions() as s, s.begin():
            await refresh_sanctions(s, text=f"{listed}\n", actor="user:a")
        answer = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": f"{n}"},
                                      json={"destination": destination, "amount_msat": 10_000})
        assert answer.status_code == 403, (listed, destination, answer.text)
        assert answer.json()["type"].endswith("/risk-rejected"), answer.text
    assert await withdrawals(ln) == 0


async def test_a_listed_lightning_address_is_refused_in_its_variants(ln: LnEnv):  # noqa: F811
    """Found from outside: a listed ``bob@host`` was paid as ``bob+x@host`` (LUD-16 services
    route a ``+tag`` to ``bob``, this one too), and as ``lnurlp://`` links with a trailing
    slash, a doubled slash or a query, which a lenient service answers as the address."""
    await ln.fund("alice", FUND)
    service = FakeService()  # its metadata names no address: the link's forms alone count
    service.metadata = service.pay_request["metadata"] = json.dumps([["text/plain", "Tea"]])

    def lenient(request: httpx.Request) -> httpx.Response:
        path = re.sub("/+", "/", request.url.path).rstrip("/").split("+")[0]
        return service.handler(httpx.Request(request.method, request.url.copy_with(path=path)))

    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text="bob@pay.test\n", actor="user:a")
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    async with httpx.AsyncClient(transport=httpx.MockTransport(lenient)) as http:
        ln.client._transport.app.state.lnurl_http = http  # type: ignore[attr-defined]
        for n, destination in enumerate((
                "bob+x@pay.test", "lightning:BOB+shop@pay.test",
                "lnurlp://pay.test/.well-known/lnurlp/bob/",
                "lnurlp://pay.test//.well-known/lnurlp/bob",
                "lnurlp://pay.test/.well-known//lnurlp/bob+x//",
                "lnurlp://pay.test/.well-known/lnurlp/bob?x=1",
                encode_lnurl("http://pay.test/.well-known/lnurlp/bob/?x=1"))):
            answer = await ln.client.post(
                url, headers={**ln.auth("alice"), "Idempotency-Key": f"{n}"},
                json={"destination": destination, "amount_msat": 10_000})
            assert answer.status_code == 403, (destination, answer.text)
            assert answer.json()["type"].endswith("/risk-rejected"), answer.text
    assert await withdrawals(ln) == 0


@pytest.mark.parametrize("kind", ["text/identifier", "text/email"])
async def test_a_pay_link_whose_metadata_names_a_listed_address_is_refused(
        ln: LnEnv, kind: str):  # noqa: F811
    """A payRequest's metadata may name its Lightning Address (``text/identifier`` or
    ``text/email``, LUD-16): a listed address is refused whatever link reached it, here a
    bech32 LNURL of another path, a form the list does not name."""
    await ln.fund("alice", FUND)
    service = FakeService()
    service.metadata = service.pay_request["metadata"] = json.dumps(
        [["text/plain", "A coffee"], [kind, "Bob+Tip@Pay.Test"]])
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text="bob@pay.test\n", actor="user:a")
    async with httpx.AsyncClient(transport=httpx.MockTransport(service.handler)) as http:
        ln.client._transport.app.state.lnurl_http = http  # type: ignore[attr-defined]
        answer = await ln.client.post(
            f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals",
            headers={**ln.auth("alice"), "Idempotency-Key": "meta"},
            json={"destination": encode_lnurl("http://pay.test/lnurlp/bob"),
                  "amount_msat": 10_000})
    assert answer.status_code == 403, answer.text
    assert answer.json()["type"].endswith("/risk-rejected"), answer.text
    assert await withdrawals(ln) == 0
