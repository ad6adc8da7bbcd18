"""Lightning Addresses served by satvault (LUD-16/06/09/12): claiming a name, the payRequest,
the callback's invoice, refusals, and a full round trip through our own client."""

from __future__ import annotations

import asyncio
import hashlib
import json
import ssl

import bolt11
import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from satvault.db import utcnow
from satvault.lightning.errors import LnurlError
from satvault.lightning.lnurl import decode_lnurl, encode_lnurl, resolve_pay_request
from satvault.lightning.lnurl_models import LightningAddress
from satvault.lightning.lnurl_service import address_metadata
from satvault.lightning.models import LnInvoice
from satvault.lightning.payments import request_ln_withdrawal, take_off_node
from satvault.withdrawals.service import prepare_destination
from tests.lightning_lnurl.conftest import LnEnv


async def claim(ln: LnEnv, who: str, username: str, *, key: str | None = None):
    return await ln.client.post(f"/api/v1/wallets/{ln.wallets[who].id}/lightning-address",
                                json={"username": username}, headers=ln.auth(key or who))


async def test_claim_returns_address_and_lnurl(ln: LnEnv):
    r = await claim(ln, "alice", "  Alice.B_1-x ")
    assert r.status_code == 201, r.text
    body = r.json()
    assert body["address"] == "alice.b_1-x@lnurl.test" and body["username"] == "alice.b_1-x"
    assert body["lnurl"].startswith("LNURL1")
    assert decode_lnurl(body["lnurl"]) == "http://lnurl.test/.well-known/lnurlp/alice.b_1-x"


async def test_claim_conflicts_and_validation(ln: LnEnv):
    assert (await claim(ln, "alice", "alice")).status_code == 201
    for who, name in (("bob", "alice"), ("bob", "ALICE"), ("alice", "alice"), ("bob", "admin")):
        r = await claim(ln, who, name)
        assert r.status_code == 409, r.text
        assert r.headers["content-type"] == "application/problem+json"
    for name in ("bad name", "a+b", "ünï", "a@b", "x" * 65, "", "dot/slash"):
        r = await claim(ln, "bob", name)
        assert r.status_code == 422, (name, r.text)
    assert (await claim(ln, "bob", "bob", key="bob_read")).status_code == 403
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "mallory"}, headers=ln.auth("alice"))
    assert r.status_code == 404


async def test_database_guards_usernames(ln: LnEnv):
    for bad in ("Upper", "sp ace", "plus+tag"):
        with pytest.raises(IntegrityError):
            async with ln.sessions() as s, s.begin():
                s.add(LightningAddress(username=bad, wallet_id=ln.wallets["alice"].id,
                                       created_at=utcnow()))


async def test_pay_request_and_callback(ln: LnEnv):
    await claim(ln, "alice", "alice")
    r = await ln.client.get("/.well-known/lnurlp/alice")
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "*"
    pay = r.json()
    assert pay["tag"] == "payRequest"
    assert pay["callback"] == "http://lnurl.test/lnurlp/alice/callback"
    assert pay["minSendable"] == 1_000
    assert pay["maxSendable"] == ln.settings.ln_max_payment_msat
    assert pay["commentAllowed"] == 144
    assert pay["metadata"] == address_metadata("alice", "lnurl.test")
    assert ["text/identifier", "alice@lnurl.test"] in json.loads(pay["metadata"])
    # A LUD-16 tag ("+tips") reaches the same name with the same metadata.
    assert (await ln.client.get("/.well-known/lnurlp/alice+tips")).json() == pay

    r = await ln.client.get(pay["callback"], params={"amount": 12_345, "comment": "gm"})
    body = r.json()
    assert body["routes"] == []
    assert body["successAction"] == {"tag": "message", "message": "Thanks, payment received"}
    inv = bolt11.decode(body["pr"])
    assert int(inv.amount_msat) == 12_345
    assert inv.description_hash == hashlib.sha256(pay["metadata"].encode()).hexdigest()
    async with ln.sessions() as s:
        row = (await s.execute(select(LnInvoice))).scalar_one()
    assert row.wallet_id == ln.wallets["alice"].id and row.purpose == "lnurl"
    assert row.amount_msat == 12_345 and row.description.endswith("gm")
    assert row.description_hash == inv.description_hash


@pytest.mark.parametrize(("query", "reason"), [
    ({"amount": 999}, "between 1000 and"),
    ({"amount": 10_000_000_001}, "between 1000 and"),
    ({}, "amount"),
    ({"amount": "12abc"}, "amount"),
    ({"amount": "-5000"}, "amount"),
    ({"amount": 5_000, "comment": "x" * 145}, "at most 144"),
])
async def test_callback_refusals(ln: LnEnv, query, reason):
    await claim(ln, "alice", "alice")
    r = await ln.client.get("/lnurlp/alice/callback", params=query)
    assert r.status_code == 200
    assert r.json()["status"] == "ERROR" and reason in r.json()["reason"]
    async with ln.sessions() as s:
        assert (await s.execute(select(LnInvoice))).first() is None


async def test_unknown_names(ln: LnEnv):
    for path in ("/.well-known/lnurlp/nobody", "/lnurlp/nobody/callback?amount=5000",
                 "/.well-known/lnurlp/Bad%20Name"):
        body = (await ln.client.get(path)).json()
        assert body == {"status": "ERROR", "reason": "unknown Lightning Address"}


async def test_round_trip_through_our_client_then_paid_internally(ln: LnEnv):
    await claim(ln, "alice", "alice")
    await ln.fund("bob", 100_000)
    result = await resolve_pay_request("alice@lnurl.test", 21_000, comment="for coffee",
                                       http=ln.client, allow_private_hosts=True)
    assert int(bolt11.decode(result.bolt11).amount_msat) == 21_000
    assert result.description == "Payment to alice@lnurl.test"
    taken = await take_off_node(ln.sessions, wallet=ln.wallets["bob"], bolt11=result.bolt11,
                                amount_msat=None, settings=ln.settings, backend=ln.lightning)
    assert taken
    async with ln.sessions() as s, s.begin():
        wd = await request_ln_withdrawal(s, wallet=ln.wallets["bob"], bolt11=result.bolt11,
                                         amount_msat=None, settings=ln.settings,
                                         backend=ln.lightning, original="alice@lnurl.test",
                                         taken_off_node=taken)
    assert wd.method == "internal" and wd.status == "confirmed"
    assert (await ln.balance("alice"))["available"] == 21_000
    assert (await ln.balance("bob"))["available"] == 79_000
    await ln.check()


async def test_concurrent_claims_of_one_name(ln: LnEnv):
    results = await asyncio.gather(*(claim(ln, who, "satoshi") for who in
                                     ("alice", "bob", "alice", "bob")))
    assert sorted(r.status_code for r in results) == [201, 409, 409, 409]
    async with ln.sessions() as s:
        assert len((await s.execute(select(LightningAddress))).all()) == 1


async def test_a_node_failure_in_the_callback_tells_the_payer_nothing_of_the_node(ln: LnEnv,
                                                                              monkeypatch):
    """Node errors are satvault errors too (one error base); the callback still answers them
    with its own words, never the node's text, and creates nothing."""
    from satvault.backends.errors import BackendProtocolError

    await claim(ln, "alice", "alice")

    async def broken(*_args, **_kwargs):
        raise BackendProtocolError("lnd: internal detail 10.0.0.7:10009 macaroon expired")

    monkeypatch.setattr(ln.lightning, "create_invoice", broken)
    r = await ln.client.get("/lnurlp/alice/callback", params={"amount": 5_000})
    assert r.status_code == 200 and r.json()["status"] == "ERROR"
    assert r.json()["reason"] == "could not create an invoice right now; try again"
    assert "10.0.0.7" not in r.text and "macaroon" not in r.text
    async with ln.sessions() as s:
        assert (await s.execute(select(LnInvoice))).first() is None


async def test_paying_pay_links_loads_the_trust_store_once(ln: LnEnv, monkeypatch):
    """A payment to an LNURL or a Lightning address is resolved with a client of its own, and
    each such client built a TLS context: the CA bundle loaded and parsed again, 30-50 ms of
    CPU per payment whether the link was http or https. The platform's clients share one
    context now, so paying three links loads the trust store once at most (once if nothing
    in this process loaded it before)."""
    loads: list[object] = []
    real = ssl.SSLContext.load_verify_locations

    def counting(self: ssl.SSLContext, *args: object, **kwargs: object) -> None:
        loads.append(args or kwargs)
        real(self, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ssl.SSLContext, "load_verify_locations", counting)
    nobody = encode_lnurl("http://127.0.0.1:9/lnurlp/nobody")  # the discard port: refused
    for _ in range(3):
        with pytest.raises(LnurlError):
            await prepare_destination(ln.sessions, settings=ln.settings,
                                      lightning=ln.lightning, wallet=ln.wallets["bob"],
                                      destination=nobody, amount_msat=21_000)
    assert len(loads) <= 1, loads


@pytest.mark.parametrize("comment", ["hi\nthere", "pay \u202eevil", "\x1b[31mred", "a\u2028b"])
async def test_a_comment_that_is_not_one_line_is_refused(ln: LnEnv, comment: str):
    """Found from outside: a LUD-12 comment carried newlines, ANSI escapes and direction
    controls into the payee's deposit description; it is refused the LNURL way, as names and
    labels are, and no invoice is made."""
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201, r.text
    answer = await ln.client.get("/lnurlp/bob/callback",
                                 params={"amount": 10_000, "comment": comment})
    assert answer.status_code == 200, answer.text
    assert answer.json()["status"] == "ERROR", answer.text
    assert "comment may not contain U+" in answer.json()["reason"], answer.text
    ok = await ln.client.get("/lnurlp/bob/callback",
                             params={"amount": 10_000, "comment": "thanks, caf\u00e9 \u263a"})
    assert "pr" in ok.json(), ok.text


@pytest.mark.parametrize("username", [".", "..", "...", "-", "_.", "._-"])
async def test_a_username_needs_a_letter_or_digit(ln: LnEnv, username: str):
    """Found from outside: ``.`` and ``..`` could be claimed, and no client can pay them (a
    URL path normalises them away); a name needs at least one of a-z 0-9."""
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": username}, headers=ln.auth("bob"))
    assert r.status_code == 422, r.text
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/lightning-address",
                             json={"username": "a.b"}, headers=ln.auth("bob"))
    assert r.status_code == 201, r.text


async def test_a_refused_character_on_a_wallet_facing_endpoint_is_an_lnurl_error(ln: LnEnv):
    """Found from outside: a NUL in a callback's query got the API's 422 problem+json, which
    a LUD-01 wallet does not read; the wallet-facing endpoints answer the LNURL way (HTTP
    200, status ERROR, a reason), the API keeps its problem."""
    await claim(ln, "bob", "bob")
    for url in ("/lnurlp/bob/callback?amount=1000&comment=a%00b",
                "/.well-known/lnurlp/bob?x=%00", "/lnurlw/tok/callback?k1=%00&pr=x",
                "/lnurlw/tok%00en", "/lnurl-auth/callback?k1=%00"):
        r = await ln.client.get(url)
        assert r.status_code == 200, (url, r.text)
        body = r.json()
        assert body["status"] == "ERROR", (url, body)
        assert "NUL" in body["reason"], (url, body)
        assert r.headers["access-control-allow-origin"] == "*"
    api = await ln.client.get(f"/api/v1/wallets/{ln.wallets['bob'].id}?x=%00",
                              headers=ln.auth("bob"))
    assert api.status_code == 422 and api.json()["type"].endswith("/invalid-characters")
