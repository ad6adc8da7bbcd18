"""Bad input gets a 4xx problem and changes nothing (issue 9, section 2), through the real app:
amounts (one strict decimal parser, no exponent arithmetic), strict integers, NUL and lone
surrogates anywhere, descriptions limited by bytes, backend errors as 502, cursors and ports,
no existence leak through another owner's ids, and a request body limit."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest

from satvault.accounts import service as acc
from satvault.backends import errors as be
from satvault.config import Settings
from satvault.ledger.platform import ensure_platform_accounts
from satvault.payouts.models import Withdrawal
from satvault.web.app import create_app
from tests.web.rows import row_counts

PROBLEM = "application/problem+json"
# A valid regtest address (BIP173 test vector form) for BIP21 destinations.
ADDRESS = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


@asynccontextmanager
async def app_client(db_url: str, tmp_path: Any, engine: Any, runtime: Any = None,
                     **overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(database_url=db_url, home=tmp_path, lightning_backend="none",
                        **overrides)
    app = create_app(settings, engine=engine, start_workers=False, runtime=runtime)
    async with app.router.lifespan_context(app):
        app.state.runtime = runtime
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://t") as client:
            yield client


@pytest.fixture
async def world(sessions) -> dict[str, Any]:
    async with sessions() as s, s.begin():
        await ensure_platform_accounts(s, "BTC")
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        alice = await acc.create_user(s, email="alice@example.com")
        bob = await acc.create_user(s, email="bob@example.com")
        merchant = await acc.create_merchant(s, name="Shop")
        store = await acc.create_store(s, merchant_id=merchant.id, name="Web")
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        _, alice_key = await acc.create_api_key(
            s, owner_id=alice.id, scopes=["wallet:read", "wallet:write", "withdrawals:write"])
        alice_wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=alice.id)
        bob_wallet = await acc.ensure_wallet(s, owner_type="user", owner_id=bob.id)
    return {"admin": {"Authorization": f"Bearer {admin_key}"},
            "alice": {"Authorization": f"Bearer {alice_key}"},
            "alice_wallet": alice_wallet.id, "bob_wallet": bob_wallet.id, "store": store.id,
            "merchant": merchant.id, "alice_id": alice.id}


def assert_problem(r: httpx.Response, status: int = 422) -> dict[str, Any]:
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == PROBLEM
    body: dict[str, Any] = r.json()
    assert body["status"] == status
    return body


# ------------------------------------------------------------------------------- amounts

BAD_AMOUNTS = [
    ("1E+999980", "BTC"),  # froze the server ~40 s: int(Decimal) of a huge exponent
    ("1E+999999", "BTC"),  # decimal.Overflow: a 500
    ("12.00999999999999999999999999999", "USD"),  # was charged as 12.01
    ("12.001", "USD"), ("12.010", "USD"), ("1.5", "JPY"), ("0.000000000001", "BTC"),
    ("١٢", "USD"), ("\uff11\uff12", "USD"), ("1_000", "SATS"), ("1,000", "SATS"),
    (" 12", "USD"), ("12 ", "USD"), ("\t12", "USD"), ("+12", "USD"), ("-12", "USD"),
    ("1e3", "SATS"), (".5", "USD"), ("5.", "USD"), ("NaN", "USD"), ("Infinity", "USD"),
    ("0", "SATS"), ("0.00", "USD"), ("", "USD"), ("9" * 19, "SATS"),
    ("999999999999999999", "BTC"),  # 18 digits parse, but more than 21 million BTC
]


async def test_store_invoice_amounts_are_parsed_strictly_and_fast(db_url, tmp_path, engine,
                                                                  sessions, world):
    async with app_client(db_url, tmp_path, engine) as c:
        before = await row_counts(sessions)
        # The app's first request pays for warming its caches: not part of what is timed.
        assert_problem(await c.post(f"/api/v1/stores/{world['store']}/invoices",
                                    headers={**world["admin"], "Idempotency-Key": "warm"},
                                    json={"amount": "x", "currency": "USD"}))
        for i, (amount, currency) in enumerate(BAD_AMOUNTS):
            # CPU time, not wall time: the freeze this guards against burnt CPU (~40 s), and
            # CPU time does not stretch when the machine is busy with other work.
            started = time.process_time()
            r = await c.post(f"/api/v1/stores/{world['store']}/invoices",
                             headers={**world["admin"], "Idempotency-Key": f"k-{i}"},
                             json={"amount": amount, "currency": currency,
                                   "payment_methods": ["onchain"]})
            assert time.process_time() - started < 1.0, amount
            assert_problem(r)
        after = await row_counts(sessions, skip=("idempotency_keys",))
        assert after == {k: v for k, v in before.items() if k != "idempotency_keys"}


async def test_bip21_amounts_are_read_as_bip21_writes_them(db_url, tmp_path, engine, world):
    async with app_client(db_url, tmp_path, engine) as c:
        for i, amount in enumerate(("1E500000", "1e-3", ".001", "\uff11", "0.000000001",
                                    "1_0", "-1", "0", "21000001", "9" * 40)):
            started = time.process_time()  # CPU: steady on a busy machine (see above)
            r = await c.post(f"/api/v1/wallets/{world['alice_wallet']}/withdrawals",
                             headers={**world["alice"], "Idempotency-Key": f"w-{i}"},
                             json={"destination": f"bitcoin:{ADDRESS}?amount={amount}"})
            assert time.process_time() - started < 1.0, amount
            body = assert_problem(r)
            assert "amount" in body["detail"], body


@pytest.mark.parametrize("value", ["1000", 1000.0, True, 10**30, -1000, 0, 2**63])
async def test_money_fields_are_strict_bounded_integers(db_url, tmp_path, engine, sessions,
                                                        world, value):
    async with app_client(db_url, tmp_path, engine) as c:
        before = await row_counts(sessions, skip=("idempotency_keys",))
        posts = [
            (f"/api/v1/wallets/{world['alice_wallet']}/deposits",
             {"method": "onchain", "amount_msat": value}),
            (f"/api/v1/wallets/{world['alice_wallet']}/withdrawals",
             {"destination": ADDRESS, "amount_msat": value}),
            (f"/api/v1/wallets/{world['alice_wallet']}/lnurl-withdraw", {"amount_msat": value}),
            (f"/api/v1/wallets/{world['alice_wallet']}/lnurl-withdraw",
             {"amount_msat": 5000, "min_msat": value}),
        ]
        for path, body in posts:
            r = await c.post(path, json=body, headers={**world["alice"],
                                                       "Idempotency-Key": f"{path}{value}"})
            problem = assert_problem(r)
            assert problem["errors"][0]["loc"][:2] == ["body", next(
                k for k, v in body.items() if v is value)], problem
        if value not in (0,) and not (isinstance(value, int) and value < 0):
            # counts and settings are strict too (0 and negatives are in range for some)
            for body in ({"name": "s", "merchant_id": "m", "spread_bp": value},
                         {"name": "s", "merchant_id": "m", "speed_policy": value}):
                assert_problem(await c.post("/api/v1/stores", json=body, headers={
                    **world["admin"], "Idempotency-Key": f"s{value}{body}"}))
        after = await row_counts(sessions, skip=("idempotency_keys",))
        assert after == before


async def test_speed_policy_true_is_not_one(db_url, tmp_path, engine, world):
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.patch(f"/api/v1/stores/{world['store']}", headers=world["admin"],
                          json={"speed_policy": True})
        assert_problem(r)
        r = await c.post(f"/api/v1/stores/{world['store']}/invoices", json={
            "amount": "1000", "currency": "SATS", "expiration_minutes": 15.0,
            "payment_methods": ["onchain"]},
            headers={**world["admin"], "Idempotency-Key": "float-minutes"})
        assert_problem(r)


async def test_booleans_are_json_and_a_patch_refuses_a_field_it_does_not_have(
        db_url, tmp_path, engine, sessions, world):
    """Found from outside (webhooks, and these beside them): ``"yes"`` was a boolean,
    ``"1"`` a tier, and a PATCH with a field it does not have answered 200 having changed
    nothing, so the client believed it had set it. Nothing changes."""
    alice = world["alice_id"]
    async with app_client(db_url, tmp_path, engine) as c:
        before = await row_counts(sessions, skip=("idempotency_keys",))
        admin = world["admin"]
        for body in ({"nmae": "Renamed"},
                     {"name": "Renamed", "redirect_url": "https://x.example"}):
            assert_problem(await c.patch(f"/api/v1/stores/{world['store']}", headers=admin,
                                         json=body))
        for required in ("yes", "true", 1):
            assert_problem(await c.put(f"/api/v1/auth/totp-required/{alice}",
                                       headers=admin, json={"required": required}))
        r = await c.post(f"/api/v1/admin/kyc/user/{alice}/records", headers=admin, json={
            "tier": "1", "decision": "approve", "full_name": "Alice"})
        assert_problem(r)
        assert r.json()["errors"][0]["loc"] == ["body", "tier"]
        assert await row_counts(sessions, skip=("idempotency_keys",)) == before
        store = (await c.get(f"/api/v1/stores/{world['store']}", headers=admin)).json()
        assert store["name"] == "Web"


# ------------------------------------------------------------------ NUL and lone surrogates

async def test_nul_and_lone_surrogates_are_refused_everywhere(db_url, tmp_path, engine,
                                                              sessions, world):
    store, wallet = world["store"], world["alice_wallet"]
    admin, alice = world["admin"], world["alice"]
    bodies = [
        (f"/api/v1/wallets/{wallet}/deposits", alice, {"description": "a\x00b"}),
        (f"/api/v1/wallets/{wallet}/lnurl-withdraw", alice,
         {"amount_msat": 5000, "description": "a\x00b"}),
        (f"/api/v1/stores/{store}/invoices", admin,
         {"amount": "1000", "currency": "SATS", "order_id": "o\x00"}),
        (f"/api/v1/stores/{store}/invoices", admin,
         {"amount": "1000", "currency": "SATS", "redirect_url": "https://x/\x00"}),
        (f"/api/v1/stores/{store}/invoices", admin,
         {"amount": "1000", "currency": "SATS", "metadata": {"note": "\ud800"}}),
        (f"/api/v1/stores/{store}/invoices", admin,
         {"amount": "1000", "currency": "SATS", "metadata": {"\udfff": 1}}),
        (f"/api/v1/stores/{store}/invoices", admin,
         {"amount": "1000", "currency": "SATS", "metadata": {"a": [{"b": ["\x00"]}]}}),
        ("/api/v1/stores", admin, {"name": "shop\x00", "merchant_id": "mer_x"}),
        (f"/api/v1/stores/{store}/webhooks", admin,
         {"url": "https://example.com/\ud83d", "events": ["invoice.settled"]}),
    ]
    async with app_client(db_url, tmp_path, engine) as c:
        before = await row_counts(sessions)
        for path, headers, body in bodies:
            # json.dumps writes lone surrogates as \ud800 escapes, as a client's JSON would.
            r = await c.post(path, content=json.dumps(body), headers={
                **headers, "Idempotency-Key": "nul", "Content-Type": "application/json"})
            problem = assert_problem(r)
            assert problem["type"].endswith("/invalid-characters"), (body, problem)
        # raw bytes that are not UTF-8 at all (an encoded surrogate)
        r = await c.post(f"/api/v1/stores/{store}/invoices",
                         content=b'{"amount": "\xed\xa0\x80"}',
                         headers={**admin, "Idempotency-Key": "raw",
                                  "Content-Type": "application/json"})
        assert_problem(r)
        for path in (f"/api/v1/stores/{store}/invoices?order_id=a%00b",
                     f"/api/v1/stores/{store}/invoices?status=%00",
                     f"/api/v1/stores/{store}/webhooks/wh%00/deliveries?status=x",
                     "/api/v1/stores?merchant_id=%00",
                     "/api/v1/withdrawals/wd_%00", "/api/v1/deposits/dep%00",
                     "/api/v1/invoices/inv_%00x", "/api/v1/lnurl-withdraw/%00",
                     "/api/v1/events/stream?invoice_id=inv%00",
                     f"/api/v1/events/stream?wallet_id={wallet}%00", "/i/inv%00/status"):
            r = await c.get(path, headers=admin)
            assert_problem(r).get("type", "").endswith("/invalid-characters")
        # The endpoints wallets call answer in LNURL's own way (LUD-01), refused all the same.
        for path in ("/.well-known/lnurlp/a%00", "/lnurlp/a/callback?amount=1000&comment=a%00b"):
            r = await c.get(path)
            assert r.status_code == 200, r.text
            assert r.json()["status"] == "ERROR" and "NUL" in r.json()["reason"], r.text
        assert await row_counts(sessions) == before


async def test_metadata_with_escaped_surrogate_pairs_is_kept(db_url, tmp_path, engine, world):
    """A proper pair (\\ud83d\\ude00, an emoji) is valid Unicode and passes the guard."""
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.get(f"/api/v1/stores/{world['store']}/invoices",
                        params={"order_id": "\U0001f600"}, headers=world["admin"])
        assert r.status_code == 200, r.text
        r = await c.patch(f"/api/v1/stores/{world['store']}", headers={
            **world["admin"], "Content-Type": "application/json"},
            content='{"name": "caf\\u00e9 \\ud83d\\ude00"}')
        assert r.status_code == 200 and r.json()["name"] == "café \U0001f600"


@pytest.mark.parametrize("name", ["Content-Type", "Content-Length", "Transfer-Encoding"])
async def test_a_repeated_framing_header_is_refused(db_url, tmp_path, engine, sessions, world,
                                                    name):
    """Two Content-Type headers once let a NUL through: the guard read the last one
    (``text/plain``: not a body any route parses), Starlette and FastAPI read the first
    (``application/json``) and stored the name. A request that says twice how its body is
    framed or typed is refused with a 400 before anything reads it."""
    body = json.dumps({"name": "shop\x00evil", "merchant_id": world["merchant"]})
    first, second = {"Content-Type": ("application/json", "text/plain"),
                     "Content-Length": (str(len(body)), str(len(body))),
                     "Transfer-Encoding": ("chunked", "identity")}[name]
    headers = httpx.Headers([*world["admin"].items(), ("Idempotency-Key", "twice"),
                             ("Content-Type", "application/json"), (name, first),
                             (name, second)])
    before = await row_counts(sessions)
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.post("/api/v1/stores", content=body, headers=headers)
    assert_problem(r, 400)
    assert await row_counts(sessions) == before


@pytest.mark.parametrize("content_type", ["text/plain", "application/octet-stream", None])
async def test_a_json_body_is_checked_whatever_type_it_declares(db_url, tmp_path, engine,
                                                                sessions, world, content_type):
    """The guard does not decide from the declared type whether a body will be parsed (a route
    may call ``request.json()`` itself, and FastAPI reads a body without a type as JSON): a body
    that parses as JSON is checked whatever the Content-Type says."""
    body = json.dumps({"name": "shop\x00evil", "merchant_id": world["merchant"]}).encode()
    headers = {**world["admin"], "Idempotency-Key": "typed"}
    before = await row_counts(sessions)
    async with app_client(db_url, tmp_path, engine) as c:
        request = c.build_request("POST", "/api/v1/stores", content=body, headers=headers)
        if content_type is None:
            request.headers.pop("Content-Type", None)
        else:
            request.headers["Content-Type"] = content_type
        r = await c.send(request)
    assert assert_problem(r)["type"].endswith("/invalid-characters")
    assert await row_counts(sessions) == before


def _multipart(parts: list[tuple[str, str | None, bytes]], charset: str = "") -> tuple[bytes, str]:
    """A multipart/form-data body of (name, filename or None, content) parts, written by hand
    so that a name or filename may hold what no client library would send."""
    boundary = "guardboundary1234"
    body = b"".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"'.encode()
        + (f'; filename="{filename}"'.encode() if filename is not None else b"")
        + b"\r\n\r\n" + content + b"\r\n" for name, filename, content in parts)
    return body + f"--{boundary}--\r\n".encode(), \
        f"multipart/form-data; boundary={boundary}{charset}"


@pytest.mark.parametrize("parts", [
    [("name", None, b"Evil\x00Shop")],                    # a value
    [("na\x00me", None, b"Shop")],                         # a field name
    [("file", "a\x00.psbt", b"cHNidP8=")],                # a file's name
], ids=["value", "name", "filename"])
async def test_multipart_forms_are_checked_as_starlette_parses_them(db_url, tmp_path, engine,
                                                                    sessions, parts):
    """Every page form (``Form(...)``, ``request.form()``) parses multipart/form-data as well as
    urlencoded: the guard once checked only the latter, and a NUL in a multipart field reached
    the database. It now parses the form with Starlette's own parser (python-multipart) and
    checks field names, values and file names; a file's content is the route's to judge.
    A page's form is answered with a page naming the field (found from outside: it was the
    API's problem+json, raw JSON in the browser); the API's forms keep problem+json."""
    body, content_type = _multipart(parts)
    before = await row_counts(sessions)
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.post("/dashboard/merchants", content=body,
                         headers={"Content-Type": content_type})
        assert r.status_code == 422 and r.headers["content-type"].startswith("text/html")
        assert "cannot be stored" in r.text and "Nothing was changed" in r.text, r.text
        assert repr(parts[0][0]).replace("'", "&#39;") in r.text, r.text
        r = await c.post("/api/v1/auth/token", content=body,
                         headers={"Content-Type": content_type})
        assert assert_problem(r)["type"].endswith("/invalid-characters")
    assert await row_counts(sessions) == before


async def test_a_multipart_file_may_hold_any_bytes(db_url, tmp_path, engine, sessions):
    """A file's bytes are not text (a binary PSBT holds NUL bytes): the guard passes them on,
    with the form's other fields, in a declared charset too. An encoded surrogate is not UTF-8,
    so Starlette reads that field as Latin-1: no surrogate reaches a route."""
    body, content_type = _multipart([
        ("file", "a.psbt", b"psbt\xff\x00\x00\x01"),
        ("pasted", None, "caf\u00e9".encode("latin-1")),
        ("name", None, "Evil\ud800Shop".encode("utf-8", "surrogatepass"))],
        charset="; charset=latin-1")
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.post("/dashboard/merchants", content=body,
                         headers={"Content-Type": content_type})
    assert r.status_code == 303  # the guard let it through (to sign in)


# --------------------------------------------------------- descriptions and backend errors

class RefusingNode:
    """A Lightning backend whose node refuses every invoice with ``error``."""

    name = "refusing"

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.calls = 0

    async def create_invoice(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        raise self.error


async def test_descriptions_are_limited_by_utf8_bytes(db_url, tmp_path, engine, sessions,
                                                      world):
    """256 emoji are 256 characters but 1,024 bytes: refused before the node is asked."""
    node = RefusingNode(be.TxRejected(2, "memo too large"))
    runtime = SimpleNamespace(lightning=node, payer_wake=None, rates=None)
    async with app_client(db_url, tmp_path, engine, runtime=runtime) as c:
        before = await row_counts(sessions, skip=("idempotency_keys",))
        for path, body in (
                (f"/api/v1/wallets/{world['alice_wallet']}/deposits",
                 {"method": "lightning", "amount_msat": 5000, "description": "\U0001f600" * 256}),
                (f"/api/v1/wallets/{world['alice_wallet']}/deposits",
                 {"method": "lightning", "amount_msat": 5000, "description": "é" * 320}),
                (f"/api/v1/wallets/{world['alice_wallet']}/lnurl-withdraw",
                 {"amount_msat": 5000, "description": "\U0001f600" * 160})):
            r = await c.post(path, json=body, headers={**world["alice"], "Idempotency-Key": "d"})
            problem = assert_problem(r)
            assert "bytes" in problem["errors"][0]["msg"], problem
        assert node.calls == 0
        assert await row_counts(sessions, skip=("idempotency_keys",)) == before


@pytest.mark.parametrize("error", [be.TxRejected(2, "memo too large"),
                                   be.BackendProtocolError("garbage"), be.NotFound("x"),
                                   be.BackendError("other")])
async def test_every_backend_error_is_a_502_problem(db_url, tmp_path, engine, world, error):
    node = RefusingNode(error)
    runtime = SimpleNamespace(lightning=node, payer_wake=None, rates=None)
    async with app_client(db_url, tmp_path, engine, runtime=runtime) as c:
        r = await c.post(f"/api/v1/wallets/{world['alice_wallet']}/deposits", headers=world[
            "alice"], json={"method": "lightning", "amount_msat": 5000, "description": "hi"})
        body = assert_problem(r, 502)
        assert node.calls == 1
        assert str(error) not in body["detail"]  # the node's words stay in the log


# --------------------------------------------------------------------- cursors, ports, ints

def _cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


async def test_cursors_and_query_integers_are_bounded(db_url, tmp_path, engine, world):
    store, admin = world["store"], world["admin"]
    async with app_client(db_url, tmp_path, engine) as c:
        for cursor in (_cursor("2026-01-01T00:00:00|inv_x"),  # a time without zone
                       _cursor("0001-01-01T00:00:00+14:00|inv_x"),  # before year 1 in UTC
                       _cursor("2026-01-01T00:00:00+00:00|inv_\x00"),
                       _cursor("s:" + "9" * 40), "%%%"):
            r = await c.get(f"/api/v1/stores/{store}/invoices", params={"cursor": cursor},
                            headers=admin)
            assert r.status_code in (422,), (cursor, r.text)
        r = await c.get(f"/api/v1/wallets/{world['alice_wallet']}/transactions",
                        params={"cursor": _cursor("s:" + "9" * 40)}, headers=world["alice"])
        assert_problem(r)
        ok = await c.get(f"/api/v1/stores/{store}/invoices", headers=admin, params={
            "cursor": _cursor(datetime(2026, 1, 1, tzinfo=UTC).isoformat() + "|inv_x"),
            "created_from": "2026-01-01T00:00:00"})  # a filter without zone is UTC
        assert ok.status_code == 200, ok.text
        r = await c.get(f"/api/v1/stores/{store}/invoices", headers=admin,
                        params={"created_to": "9999-12-31T23:59:59-14:00"})
        assert_problem(r)
        webhook = await c.post(f"/api/v1/stores/{store}/webhooks", headers=admin, json={
            "url": "http://127.0.0.1:8080/hook", "events": ["invoice.settled"]})
        assert webhook.status_code == 201, webhook.text
        wid = webhook.json()["id"]
        for before in (2**63, 10**30):
            r = await c.get(f"/api/v1/stores/{store}/webhooks/{wid}/deliveries",
                            params={"before": before}, headers=admin)
            assert_problem(r)
        for url in ("http://127.0.0.1:99999/hook", "http://127.0.0.1:0/hook",
                    "http://127.0.0.1:65536/"):
            r = await c.post(f"/api/v1/stores/{store}/webhooks", headers=admin,
                             json={"url": url, "events": ["invoice.settled"]})
            assert_problem(r)
            r = await c.patch(f"/api/v1/stores/{store}/webhooks/{wid}", headers=admin,
                              json={"url": url})
            assert_problem(r)


# ---------------------------------------------------------------- another owner's objects

async def test_another_owners_withdrawal_or_deposit_looks_missing(db_url, tmp_path, engine,
                                                                  sessions, world):
    now = datetime.now(UTC)
    async with sessions() as s, s.begin():
        s.add(Withdrawal(id="wd_bobs", wallet_id=world["bob_wallet"], method="onchain",
                         destination=ADDRESS, script_pubkey=None, amount_msat=5_000_000,
                         fee_reserve_msat=0, fee_msat=None, status="pending", batch_id=None,
                         txid=None, hold_id="wd:wd_bobs:hold", store_id=None, invoice_id=None,
                         created_at=now, updated_at=now))
    from satvault.lightning.models import LnInvoice
    async with sessions() as s, s.begin():
        s.add(LnInvoice(id="lni_bobs", wallet_id=world["bob_wallet"], purpose="deposit",
                        payment_hash="00" * 32, bolt11="lnbcrt1x", amount_msat=5000,
                        description="", description_hash=None, status="open",
                        created_at=now, expires_at=now))
    async with app_client(db_url, tmp_path, engine) as c:
        for theirs, missing in (("/api/v1/withdrawals/wd_bobs", "/api/v1/withdrawals/wd_nope"),
                                ("/api/v1/deposits/lni_bobs", "/api/v1/deposits/lni_nope")):
            a = await c.get(theirs, headers=world["alice"])
            b = await c.get(missing, headers=world["alice"])
            assert a.status_code == b.status_code == 404
            id_a, id_b = theirs.rsplit("/", 1)[1], missing.rsplit("/", 1)[1]
            assert a.text.replace(id_a, "ID") == b.text.replace(id_b, "ID"), (a.text, b.text)
            assert world["bob_wallet"] not in a.text
        mine = await c.get("/api/v1/withdrawals/wd_bobs", headers=world["admin"])
        assert mine.status_code == 200  # the admin sees it: the row is really there


# ------------------------------------------------------------------------- request size

async def test_large_bodies_are_refused_before_they_are_read(db_url, tmp_path, engine, sessions,
                                                             world):
    path = f"/api/v1/stores/{world['store']}/invoices"
    headers = {**world["admin"], "Idempotency-Key": "big"}
    before = await row_counts(sessions, skip=("idempotency_keys",))
    async with app_client(db_url, tmp_path, engine, max_body_bytes=4096) as c:
        big = json.dumps({"amount": "1000", "currency": "SATS", "metadata": {"x": "a" * 5000}})
        assert_problem(await c.post(path, content=big, headers=headers), 413)

        async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: counted as it comes
            yield big[:3000].encode()
            yield big[3000:].encode()

        assert_problem(await c.post(path, content=chunks(), headers=headers), 413)
        small = await c.post(path, json={"amount": "1000", "currency": "SATS",
                                         "payment_methods": ["lightning"]}, headers=headers)
        assert small.status_code == 422  # read and answered by the route: no Lightning here
        assert "Lightning" in small.json()["detail"]
        app = c._transport.app  # type: ignore[attr-defined]

    # Up front: a Content-Length over the limit is answered without one receive() call.
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was read")

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1",
             "method": "POST", "scheme": "http", "path": path, "raw_path": path.encode(),
             "query_string": b"", "root_path": "", "server": ("t", 80), "client": ("c", 1),
             "headers": [(b"host", b"t"), (b"content-length", b"10485760"),
                         (b"content-type", b"application/json")]}
    async with app.router.lifespan_context(app):
        await app(scope, receive, send)
    assert sent[0]["status"] == 413
    assert await row_counts(sessions, skip=("idempotency_keys",)) == before


async def test_the_invoice_service_refuses_metadata_that_is_not_unicode(sessions, world,
                                                                        tmp_path, db_url):
    """Below the edge guard too: a caller of the service (not only HTTP) cannot store a lone
    surrogate, which would be written escaped and then fail every read of the invoice."""
    from satvault.accounts.models import Store
    from satvault.invoices.service import InvoiceRequest, quote_store_invoice
    from satvault.kernel.errors import InvalidInput

    settings = Settings(database_url=db_url, home=tmp_path, lightning_backend="none")
    async with sessions() as s:
        store = await s.get(Store, world["store"])
    with pytest.raises(InvalidInput, match="Unicode"):
        await quote_store_invoice(store=store, settings=settings, lightning=None,
                                  request=InvoiceRequest(
                                      amount="1000", currency="SATS",
                                      metadata={"note": "\ud800"},
                                      payment_methods=("onchain",)))


async def test_an_invoice_stored_with_a_lone_surrogate_stays_readable(db_url, tmp_path, engine,
                                                                      sessions, world):
    """One created before the guard (metadata stored as a ``\\ud800`` escape) is shown with
    U+FFFD in its place; it and the list pages holding it are no longer 500s."""
    from satvault.invoices.models import StoreInvoice

    now = datetime.now(UTC)
    async with sessions() as s, s.begin():
        s.add(StoreInvoice(
            id="inv_old", store_id=world["store"], wallet_id=world["alice_wallet"],
            status="new", additional_status="none", currency="SATS", amount="1000",
            amount_minor=1_000_000, due_msat=1_000_000, rate_minor_per_btc=None,
            rate_source=None, rate_at=None, order_id=None,
            metadata_json='{"note": "a\\ud800b", "ok": "\\ud83d\\ude00"}',
            payment_methods="onchain", speed_policy=1, tolerance_bp=0, redirect_url=None,
            deposit_id=None, confirmed_msat=0, seen_msat=0, full_seen_at=None,
            expires_at=now, created_at=now, updated_at=now, settled_at=None))
    async with app_client(db_url, tmp_path, engine) as c:
        one = await c.get("/api/v1/invoices/inv_old", headers=world["admin"])
        assert one.status_code == 200, one.text
        assert one.json()["metadata"] == {"note": "a\ufffdb", "ok": "\U0001f600"}
        page = await c.get(f"/api/v1/stores/{world['store']}/invoices", headers=world["admin"])
        assert page.status_code == 200 and page.json()["items"][0]["id"] == "inv_old"


@pytest.mark.parametrize(("body", "says"), [
    (b'{"name": "shop", "spread_bp": ' + b"9" * 5000 + b"}", "more than 4300 digits"),
    ('{"name": "caf\u00e9"}'.encode("latin-1"), "not UTF-8"),
])
async def test_a_body_json_cannot_read_is_a_422(db_url, tmp_path, engine, sessions, world,
                                                 body, says):
    """Found from outside: a JSON integer of 5,000 digits (Python refuses to convert more than
    4,300) and a body that is not UTF-8 answered a bare 400 "There was an error parsing the
    body", where every other body that is not valid JSON is the documented 422
    invalid-request. Nothing is written either way."""
    headers = {**world["admin"], "Idempotency-Key": "unreadable",
               "Content-Type": "application/json"}
    before = await row_counts(sessions)
    async with app_client(db_url, tmp_path, engine) as c:
        r = await c.post("/api/v1/stores", content=body, headers=headers)
    problem = assert_problem(r, 422)
    assert problem["type"].endswith("/invalid-request") and says in json.dumps(problem), problem
    assert await row_counts(sessions) == before
