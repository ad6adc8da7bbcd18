"""A wallet whose payments of other wallets' invoices keep being refused after the invoice
left the node is paused before it can cancel more of them.

Paying one of our own invoices takes it off the node before the unit of work decides; a
payment the risk rules (or a limit a concurrent payment used up) then refuse has cost the
payee that BOLT11. Nothing stopped a wallet from doing it again and again: any wallet could
get a merchant's invoices cancelled at will. Now each such refusal is counted against the
paying wallet, and once it has ``internal_refusals_per_day`` of them in the last 24 hours its
payments of our invoices are refused *before* anything is taken off the node
(``429 refused-too-often``), until the oldest leaves the window. Other wallets pay as before.
"""

from __future__ import annotations

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.accounts.models import Wallet
from satvault.lightning.invoices import create_invoice
from satvault.lightning.models import LnInvoice, LnInvoiceStatus
from satvault.risk.lists import refresh_sanctions
from tests.chainenv import LnEnv, api_client
from tests.factories import merchant_wallet
from tests.invoices.test_invoices import settle_all
from tests.lightning.test_lightning import _payers_key, fund
from tests.lightning.test_refused_internal import _pay, _row
from tests.lightning.test_reserved_invoices import _count_node_cancels, _pay_from, _payer

SAT = 1000
FUNDS = 100_000 * SAT
BUDGET = 3  # the default internal_refusals_per_day


async def _bill(env: LnEnv, wallet: Wallet, msat: int = 1_000 * SAT) -> LnInvoice:
    async with env.sessions() as s, s.begin():
        return await create_invoice(s, backend=env.runtime.lightning, wallet=wallet,
                                    amount_msat=msat)


async def test_a_wallet_refused_too_often_is_paused_before_the_node(lnenv: LnEnv, clock):
    env = lnenv
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    bob = await env.wallet_for("bob@example.com")
    carol = await env.wallet_for("carol@example.com")
    dave, daves = await _payer(env, "dave@example.com")
    async with env.sessions() as s, s.begin():  # the rules refuse every payment to bob
        await refresh_sanctions(s, text=f"wallet:{bob.id}\n", actor="user:admin")
    async with api_client(env) as c:
        for i in range(BUDGET):
            bill = await _bill(env, bob)
            r = await _pay(c, env, auth, f"bob-{i}", bill.bolt11)
            assert r.status_code == 403 and r.json()["type"].endswith("/risk-rejected"), r.text
            assert (await _row(env, bill.bolt11)).status == LnInvoiceStatus.CANCELED
        cancels = _count_node_cancels(env)
        # One more: refused before the node, the invoice still payable from outside.
        bill = await _bill(env, bob)
        r = await _pay(c, env, auth, "bob-more", bill.bolt11)
        assert r.status_code == 429, r.text
        assert r.json()["type"].endswith("/refused-too-often"), r.text
        assert f"{BUDGET} payments" in r.json()["detail"], r.text
        assert cancels == []
        assert (await _row(env, bill.bolt11)).status == LnInvoiceStatus.OPEN
        assert env.network.pay("customer1", bill.bolt11).status.value.upper() == "SUCCEEDED"
        await settle_all(env)
        assert (await _row(env, bill.bolt11)).status == LnInvoiceStatus.PAID
        # Nor can it pay anybody else's invoice of ours meanwhile (an amountless one too, on
        # the general path); another wallet can.
        carols = await _bill(env, carol)
        paused = await _pay(c, env, auth, "carol", carols.bolt11)
        assert paused.status_code == 429, paused.text
        amountless = await _bill(env, carol, None)  # type: ignore[arg-type]
        paused = await _pay(c, env, auth, "carol-any", amountless.bolt11, 1_000 * SAT)
        assert paused.status_code == 429, paused.text
        assert cancels == []
        paid = await _pay_from(c, dave, daves, "dave", carols.bolt11)
        assert paid.status_code == 201 and paid.json()["status"] == "confirmed", paid.text
        # A day later the window has room again.
        clock.advance(seconds=24 * 3600 + 60)
        later = await _bill(env, carol)
        r = await _pay(c, env, auth, "carol-later", later.bolt11)
        assert r.status_code == 201 and r.json()["status"] == "confirmed", r.text
    await env.check()


async def test_refusals_that_cancel_nothing_do_not_count(lnenv: LnEnv):
    """A refusal given before the node (too little money, one's own invoice) and a payment
    refused after another payer paid the invoice meanwhile cancel nothing: they are not
    counted, and the wallet keeps paying."""
    env = lnenv
    await fund(env, env.wallet, 5_000 * SAT)
    auth = await _payers_key(env)
    carol = await env.wallet_for("carol@example.com")
    async with api_client(env) as c:
        for i in range(BUDGET + 1):
            big = await _bill(env, carol, 50_000 * SAT)
            r = await _pay(c, env, auth, f"big-{i}", big.bolt11)
            assert r.status_code == 422, r.text
            assert (await _row(env, big.bolt11)).status == LnInvoiceStatus.OPEN
            mine = await _bill(env, env.wallet)
            r = await _pay(c, env, auth, f"mine-{i}", mine.bolt11)
            assert r.status_code == 422, r.text
        ok = await _pay(c, env, auth, "ok", (await _bill(env, carol)).bolt11)
        assert ok.status_code == 201, ok.text
    async with env.sessions() as s:
        assert (await s.execute(select(LnInvoice.status).where(
            LnInvoice.wallet_id == carol.id, LnInvoice.status == LnInvoiceStatus.CANCELED))
        ).first() is None
    await env.check()


async def test_a_held_payment_returned_counts_too(lnenv: LnEnv):
    """A payment held for review whose case returns the money cost the payee its invoice as
    well: it counts against the payer like a refusal."""
    from tests.lightning.test_reserved_invoices import _case_of, _review_big_payments
    from tests.risk.test_withdrawals import keys

    env = lnenv
    _, admin = await keys(env)
    await _review_big_payments(env)
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    carol = await env.wallet_for("carol@example.com")
    async with api_client(env) as c:
        for i in range(BUDGET):
            bill = await _bill(env, carol, 20_000 * SAT)
            held = await _pay(c, env, auth, f"held-{i}", bill.bolt11)
            assert held.status_code == 201 and held.json()["status"] == "review", held.text
            case = await _case_of(env, held.json()["id"])
            for step, body in (("investigate", {}),
                               ("close", {"resolution": "confirmed_risk", "money": "return"})):
                r = await c.post(f"/api/v1/admin/risk/cases/{case}/{step}", headers=admin,
                                 json=body)
                assert r.status_code == 200, r.text
            assert (await _row(env, bill.bolt11)).status == LnInvoiceStatus.CANCELED
        r = await _pay(c, env, auth, "more", (await _bill(env, carol)).bolt11)
        assert r.status_code == 429, r.text
    await env.check()


async def test_a_persons_wallets_share_one_budget(lnenv: LnEnv):
    """The budget was per wallet, so a person with a merchant (or several) had as many
    budgets as wallets: a user's wallet used its three, then the user's shop's wallet went on
    cancelling invoices. The refusals now count against the person as the limits do (a
    user's own wallet and the wallets of the merchants the user owns): the shop's wallet is
    refused before the node too. Another person's wallet still pays."""
    env = lnenv
    await fund(env, env.wallet, FUNDS)
    auth = await _payers_key(env)
    bob = await env.wallet_for("bob@example.com")
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        shop, shops = await merchant_wallet(s, env.wallet.owner_id, "Alice's shop")
        _, token = await acc.create_api_key(s, owner_id=shop,
                                            scopes=["wallet:read", "withdrawals:write"])
        await refresh_sanctions(s, text=f"wallet:{bob.id}\n", actor="user:admin")
    await fund(env, shops, FUNDS)
    shop_auth = {"Authorization": f"Bearer {token}"}
    dave, daves = await _payer(env, "dave@example.com")
    async with api_client(env) as c:
        for i in range(BUDGET):
            r = await _pay(c, env, auth, f"bob-{i}", (await _bill(env, bob)).bolt11)
            assert r.status_code == 403, r.text
        cancels = _count_node_cancels(env)
        carols = await _bill(env, carol)
        paused = await _pay_from(c, shops, shop_auth, "shop", carols.bolt11)
        assert paused.status_code == 429, paused.text
        assert paused.json()["type"].endswith("/refused-too-often"), paused.text
        assert cancels == [] and (await _row(env, carols.bolt11)).status == LnInvoiceStatus.OPEN
        paid = await _pay_from(c, dave, daves, "dave", carols.bolt11)
        assert paid.status_code == 201 and paid.json()["status"] == "confirmed", paid.text
    await env.check()


def test_migration_0069_gives_earlier_refusals_their_person(tmp_path):
    """Refusals recorded before migration 0069 count against the person too: a user's
    wallet's against the user, an owned merchant's against its owner, an unowned
    merchant's against the merchant. Downgraded and upgraded again, the same."""
    import sqlite3

    from alembic import command

    from satvault.migrate import alembic_config, upgrade

    path = tmp_path / "m.db"
    url = f"sqlite:///{path}"
    upgrade(url, "0068_released_bounded")
    at = "2026-12-01 00:00:00"
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO merchants (id, name, owner_user_id, created_at) VALUES "
                   "('mer_owned', 'Owned', 'usr_alice', ?), ('mer_alone', 'Alone', NULL, ?)",
                   (at, at))
        for n, (wid, kind, owner) in enumerate((("wal_u", "user", "usr_alice"),
                                                 ("wal_m", "merchant", "mer_owned"),
                                                 ("wal_a", "merchant", "mer_alone"))):
            db.execute("INSERT INTO wallets (id, owner_type, owner_id, asset, "
                       "ledger_account_id, created_at) VALUES (?, ?, ?, 'BTC', ?, ?)",
                       (wid, kind, owner, 100 + n, at))
            db.execute("INSERT INTO internal_refusals (wallet_id, payment_hash, at) "
                       "VALUES (?, ?, ?)", (wid, wid.ljust(64, "0"), at))
    want = {"wal_u": "usr_alice", "wal_m": "usr_alice", "wal_a": "mer_alone"}

    def persons() -> dict[str, str]:
        with sqlite3.connect(path) as db:
            return dict(db.execute("SELECT wallet_id, person FROM internal_refusals"))

    upgrade(url)
    assert persons() == want
    command.downgrade(alembic_config(url), "0068_released_bounded")
    upgrade(url)
    assert persons() == want
