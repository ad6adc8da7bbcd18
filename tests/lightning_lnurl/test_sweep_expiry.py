"""The listener's bounded sweep expires only what it asked the node about (found from
outside, stop 32): it used to mark every open invoice five minutes past its expiry
``expired`` by the clock alone, paid ones it had not looked at yet included, and an expired
invoice is never asked about again, so a settlement whose notification was lost was never
credited."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

from sqlalchemy import select, update

from satvault.backends.lightning import InvoiceState
from satvault.db import utcnow
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.lightning.models import LnInvoice
from tests.lightning_lnurl.conftest import LnEnv


async def test_a_bounded_sweep_credits_a_paid_invoice_it_had_not_looked_at_yet(ln: LnEnv):
    wallet = ln.wallets["alice"]
    async with ln.sessions() as s, s.begin():
        bills = [await create_invoice(s, backend=ln.lightning, wallet=wallet,
                                      amount_msat=5_000 + i) for i in range(3)]
    paid = max(bills, key=lambda b: b.id)  # the last in the sweep's order
    # Paid on the node before its expiry, the notification lost; now 6 minutes past it.
    ln.lightning.invoices[paid.payment_hash] = replace(
        ln.lightning.invoices[paid.payment_hash], state=InvoiceState.SETTLED,
        paid_msat=paid.amount_msat, settle_index=1)
    async with ln.sessions() as s, s.begin():
        await s.execute(update(LnInvoice).values(expires_at=utcnow() - timedelta(minutes=6)))
    listener = InvoiceListener(ln.sessions, ln.lightning, node="fake")
    for _ in range(4):
        await listener.sweep(limit=1)
    r = await ln.client.get(f"/api/v1/deposits/{paid.id}", headers=ln.auth("alice"))
    assert r.json()["status"] == "paid", r.json()
    assert (await ln.balance("alice"))["posted"] == paid.amount_msat
    async with ln.sessions() as s:  # the unpaid ones were asked, and expired
        statuses = dict((await s.execute(select(LnInvoice.id, LnInvoice.status))).all())
    assert sorted(statuses.values()) == ["expired", "expired", "paid"], statuses
    await ln.check()
