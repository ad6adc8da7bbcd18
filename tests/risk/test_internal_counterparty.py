"""An internal payment's counterparty is the wallet it pays (``wallet:<id>``) on every path
that settles one inside the ledger, not only on the API's fast path: a listed wallet is
refused whether it is paid by its BOLT11, through its Lightning Address (resolved to one of
our invoices) or by a withdraw voucher redeemed with its invoice."""

from __future__ import annotations

from sqlalchemy import select

from satvault.risk.lists import refresh_sanctions
from satvault.risk.models import RiskDecision
from tests.lightning_lnurl.conftest import LnEnv, ln  # noqa: F401
from tests.lightning_lnurl.test_withdraw import FUND, redeem, voucher, withdrawals


async def test_a_listed_wallet_is_refused_however_it_is_paid_internally(ln: LnEnv):  # noqa: F811
    await ln.fund("alice", FUND)
    bob = ln.wallets["bob"]
    r = await ln.client.post(f"/api/v1/wallets/{bob.id}/lightning-address",
                             json={"username": "bob"}, headers=ln.auth("bob"))
    assert r.status_code == 201, r.text
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"wallet:{bob.id}\n", actor="user:admin")
    ln.client._transport.app.state.lnurl_http = ln.client  # type: ignore[attr-defined]

    async def bob_invoice(msat: int) -> str:
        got = await ln.client.get("/lnurlp/bob/callback", params={"amount": msat})
        return str(got.json()["pr"])

    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    direct = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": "a"},
                                  json={"destination": await bob_invoice(10_000)})
    by_address = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": "b"},
                                      json={"destination": "bob@lnurl.test",
                                            "amount_msat": 10_000})
    for answer in (direct, by_address):
        assert answer.status_code == 403, answer.text
        assert answer.json()["type"].endswith("/risk-rejected"), answer.text
    v = await voucher(ln, 20_000)
    refused = await redeem(ln, v, await bob_invoice(20_000))
    # The decision is the operator's: the anonymous redeemer gets no reason (found from outside).
    assert refused["status"] == "ERROR" and "cannot be redeemed" in refused["reason"], refused
    assert await withdrawals(ln) == 0
    assert (await ln.balance("bob"))["posted"] == 0
    async with ln.sessions() as s:
        seen = set((await s.execute(select(RiskDecision.features))).scalars())
    assert all(f'"counterparty": "wallet:{bob.id}"' in f for f in seen), seen
    await ln.check()


async def test_a_listed_wallet_pays_nobody(ln: LnEnv):  # noqa: F811
    """Found from outside: ``wallet:<id>`` on the sanctions list refused payments *to* that
    wallet, but the listed wallet itself paid another customer's invoice (confirmed, no case)
    and could withdraw: only the destination and counterparty were looked up. The paying
    wallet is a party to its own payments: they are refused."""
    await ln.fund("alice", FUND)
    async with ln.sessions() as s, s.begin():
        await refresh_sanctions(s, text=f"wallet:{ln.wallets['alice'].id}\n",
                                actor="user:admin")
    url = f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals"
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/deposits",
                             json={"method": "lightning", "amount_msat": 10_000},
                             headers=ln.auth("bob"))
    assert r.status_code == 201, r.text
    internal = await ln.client.post(url, headers={**ln.auth("alice"), "Idempotency-Key": "i"},
                                    json={"destination": r.json()["bolt11"]})
    assert internal.status_code == 403, internal.text
    assert internal.json()["type"].endswith("/risk-rejected"), internal.text
    assert await withdrawals(ln) == 0
    assert (await ln.balance("bob"))["posted"] == 0
    await ln.check()
