"""Once an invoice's monitoring window is over, payments no longer move it: the money reaches
the merchant's wallet, the invoice keeps its status and sends nothing.

Found from outside: with the window over, a payment to an abandoned order that had expired
made it ``invalid``, then ``settled`` (``invoice.settled``: a shop shipping on it ships an
order nobody paid in time); an ``invalid`` invoice, "final", turned ``settled`` a block
later; and a ``settled`` invoice went on to ``paid_over`` ten minutes after its window."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from satvault.db import utcnow
from satvault.events.models import OutboxEvent
from satvault.invoices.models import StoreInvoice
from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, settle_all, shop  # noqa: F401

SAT = 1000


async def _age(env: LnEnv, invoice_id: str, **moments: timedelta) -> None:
    """Move the invoice's moments back by the given amounts (its window is then over)."""
    now = utcnow()
    async with env.sessions() as s, s.begin():
        await s.execute(update(StoreInvoice).where(StoreInvoice.id == invoice_id)
                        .values(**{k: now - v for k, v in moments.items()}))


async def _events(env: LnEnv, invoice_id: str) -> list[str]:
    async with env.sessions() as s:
        return list((await s.execute(select(OutboxEvent.type).where(
            OutboxEvent.subject_type == "invoice", OutboxEvent.subject_id == invoice_id)
            .order_by(OutboxEvent.id))).scalars())


async def test_payments_after_the_window_leave_the_invoice_as_it_was(lnenv: LnEnv,
                                                                     shop):  # noqa: F811
    env = lnenv
    window = timedelta(minutes=env.settings.invoice_monitoring_minutes)
    async with api_client(env) as c:
        get = lambda i: c.get(f"/api/v1/invoices/{i}", headers=shop["read"])  # noqa: E731
        abandoned = (await create(c, shop, "abandoned", amount="30000", currency="SATS",
                                  payment_methods=["onchain"])).json()
        paid = (await create(c, shop, "paid", amount="30000", currency="SATS",
                             payment_methods=["onchain"])).json()
        # Paid and settled in time.
        env.chain.pay(paid["payment_methods"]["onchain"]["address"], 30_000)
        env.chain.mine(1)
        await settle_all(env)
        assert (await get(paid["id"])).json()["status"] == "settled"
        await _age(env, abandoned["id"], expires_at=window + timedelta(minutes=5))
        await _age(env, paid["id"], expires_at=window + timedelta(minutes=10),
                   settled_at=window + timedelta(minutes=5))
        await settle_all(env)
        before = {i: (await get(i)).json() for i in (abandoned["id"], paid["id"])}
        assert before[abandoned["id"]]["status"] == "expired"
        # Paid in full in time, never confirmed by the end of its window: invalid.
        late = (await create(c, shop, "late-unconfirmed", amount="30000", currency="SATS",
                             payment_methods=["onchain"])).json()
        env.chain.pay(late["payment_methods"]["onchain"]["address"], 30_000)
        await settle_all(env)
        assert (await get(late["id"])).json()["status"] == "processing"
        await _age(env, late["id"], expires_at=window + timedelta(minutes=5))
        await settle_all(env)
        assert (await get(late["id"])).json()["status"] == "invalid"
        events = {i: await _events(env, i) for i in (abandoned["id"], late["id"], paid["id"])}
        wallet_before = await env.balances(shop["wallet"])

        # Now, after every window: a payment to the abandoned order, the invalid one's
        # confirmation, and more money to the settled one.
        env.chain.pay(abandoned["payment_methods"]["onchain"]["address"], 30_000)
        env.chain.pay(paid["payment_methods"]["onchain"]["address"], 5_000)
        await settle_all(env)
        env.chain.mine(1)
        await settle_all(env)

        for i, status in ((abandoned["id"], "expired"), (late["id"], "invalid"),
                          (paid["id"], "settled")):
            now = (await get(i)).json()
            assert now["status"] == status, (i, now)
            assert await _events(env, i) == events[i], i  # nothing sent
        assert (await get(abandoned["id"])).json()["paid_msat"] == \
            before[abandoned["id"]]["paid_msat"]
        assert (await get(paid["id"])).json()["additional_status"] == \
            before[paid["id"]]["additional_status"]
    # The money reached the wallet all the same (less the platform fee).
    wallet_after = await env.balances(shop["wallet"])
    assert wallet_after["available"] > wallet_before["available"] + 60_000 * SAT
    await env.check()
