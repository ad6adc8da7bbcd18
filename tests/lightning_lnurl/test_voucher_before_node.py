"""A voucher's redemption with one of our own invoices, checked as the API's withdrawals are
before the payee's invoice leaves the node (found from outside, stop 32): the withdrawal
policy's rules on the payment alone refuse it first, and racing redemptions of one link are
refused at its claim (migration 0072), so neither kills the payee's invoice nor counts
against the voucher's owner."""

from __future__ import annotations

import asyncio
import itertools

from sqlalchemy import func, select

from satvault.accounts import service as acc
from satvault.accounts.models import User
from satvault.backends.lightning import InvoiceState
from satvault.lightning.models import InternalRefusal, LnInvoice, LnInvoiceStatus
from satvault.withdrawals.policy import service as pol
from tests.lightning_lnurl.conftest import LnEnv
from tests.lightning_lnurl.test_withdraw import redeem, voucher

FUND = 10_000_000
_n = itertools.count()


async def wd(ln: LnEnv, dest: str, who: str = "alice"):
    return await ln.client.post(f"/api/v1/wallets/{ln.wallets[who].id}/withdrawals",
                                json={"destination": dest},
                                headers={**ln.auth(who), "Idempotency-Key": f"k{next(_n)}"})


async def _bob_invoice(ln: LnEnv, msat: int = 100_000) -> str:
    r = await ln.client.post(f"/api/v1/wallets/{ln.wallets['bob'].id}/deposits",
                             headers=ln.auth("bob"),
                             json={"method": "lightning", "amount_msat": msat})
    assert r.status_code == 201, r.text
    return r.json()["bolt11"]


async def _admin(s, email: str):
    found = (await s.execute(select(User).where(User.email == email))).scalar_one_or_none()
    return found or await acc.create_user(s, email=email, is_admin=True)


async def _block_internal(ln: LnEnv, rules=None) -> None:
    """Make a policy live (proposed by one admin, approved by another); default: block
    every internal payment."""
    if rules is None:
        rules = [{"name": "nothing internal", "action": "block", "rails": ["internal"]}]
    async with ln.sessions() as s, s.begin():
        a1 = await _admin(s, "adm1@example.com")
        a2 = await _admin(s, "adm2@example.com")
        v = await pol.propose_policy(s, admin=a1.id, raw={"rules": rules})
        await pol.approve_policy(s, admin=a2.id, version=v.version)


async def test_api_path_leaves_the_payees_invoice_alone(ln: LnEnv):
    """Control: through the API the policy block is decided before the node."""
    await ln.fund("alice", FUND)
    await _block_internal(ln)
    pr = await _bob_invoice(ln)
    r = await wd(ln, pr)
    assert r.status_code == 403 and r.json()["type"].endswith("/withdrawal-blocked"), r.text
    async with ln.sessions() as s:
        row = (await s.execute(select(LnInvoice).where(LnInvoice.bolt11 == pr))).scalar_one()
    assert row.status == LnInvoiceStatus.OPEN
    assert ln.lightning.invoices[row.payment_hash].state == InvoiceState.OPEN


async def test_voucher_redemption_blocked_by_policy_leaves_the_payees_invoice_alone(ln: LnEnv):
    await ln.fund("alice", FUND)
    await _block_internal(ln)
    v = await voucher(ln, 100_000)
    pr = await _bob_invoice(ln)
    res = await redeem(ln, v, pr)
    assert res["status"] == "ERROR", res  # refused by the policy: fine
    async with ln.sessions() as s:
        row = (await s.execute(select(LnInvoice).where(LnInvoice.bolt11 == pr))).scalar_one()
        refusals = (await s.execute(select(func.count()).select_from(InternalRefusal))
                    ).scalar_one()
    # Expected (as on the API path): bob's invoice is still payable, nothing counted.
    assert (ln.lightning.invoices[row.payment_hash].state, row.status, refusals) == \
        (InvoiceState.OPEN, LnInvoiceStatus.OPEN, 0), \
        "bob's invoice was cancelled on the node by a refused redemption"


async def test_a_voucher_holder_can_lock_its_owner_out_of_internal_payments(ln: LnEnv):
    """Three refused redemptions by whoever holds the link (anonymous) count against the
    voucher owner's person: afterwards the owner cannot pay any of our invoices for 24 h,
    even once the policy no longer blocks."""
    await ln.fund("alice", FUND)
    await _block_internal(ln)
    v = await voucher(ln, 100_000)
    for _ in range(3):
        res = await redeem(ln, v, await _bob_invoice(ln))
        assert res["status"] == "ERROR", res
    # the operator lifts the block; alice pays bob directly:
    await _block_internal(ln, rules=[])
    pr = await _bob_invoice(ln)
    r = await wd(ln, pr)
    assert r.status_code == 201, r.text


async def test_racing_redemptions_do_not_kill_invoices_or_count_against_the_owner(ln: LnEnv):
    """No policy at all: whoever holds one link calls its callback four times at once, each
    with another invoice of ours (bob's). One redemption wins; the others are refused at the
    claim before the node is asked (they used to take their invoices off the node first, and
    each refusal counted against the voucher's owner)."""
    await ln.fund("alice", FUND)
    v = await voucher(ln, 100_000)
    prs = [await _bob_invoice(ln) for _ in range(4)]
    res = await asyncio.gather(*(redeem(ln, v, pr) for pr in prs))
    assert sum(r["status"] == "OK" for r in res) == 1, res
    assert all("being redeemed" in r["reason"] or "already used" in r["reason"]
               for r in res if r["status"] != "OK"), res
    async with ln.sessions() as s:
        rows = (await s.execute(select(LnInvoice).where(LnInvoice.bolt11.in_(prs)))
                ).scalars().all()
        refusals = (await s.execute(select(func.count()).select_from(InternalRefusal))
                    ).scalar_one()
    states = sorted(str(r.status) for r in rows)
    r = await wd(ln, await _bob_invoice(ln))
    assert (states, refusals, r.status_code) == (["open", "open", "open", "paid"], 0, 201), \
        (states, refusals, r.text)
