"""Statements per operation on the hot paths, counted on SQLite and PostgreSQL through the
HTTP API (issue 10 sets the targets: store invoice ≤ 6, internal payment ≤ 8, any list page
independent of its length). Transaction control (BEGIN, COMMIT) is not counted as a
statement; transactions are counted apart. The ceilings here are what the code does today, so
a change that adds statements fails; lower them as the paths get leaner."""

from __future__ import annotations

from satvault.accounts import service as acc
from satvault.lightning.invoices import InvoiceListener, create_invoice
from satvault.risk.service import live_rule_set
from tests.chainenv import Env, LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.lightning.test_lightning import fund
from tests.onchain.test_watcher import deposit, view
from tests.statements import Statements, count_statements

SAT = 1000
_LEDGER = ("SELECT ledger_accounts.", "SELECT ? AS src, ledger_transfers",
           "SELECT $1::VARCHAR AS src", "INSERT INTO ledger_transfers", "UPDATE ledger_accounts",
           "SELECT ledger_transfers.", "UPDATE ledger_transfers", "WITH locked AS")


def breakdown(n: Statements) -> dict[str, int]:
    """Statements without BEGIN/COMMIT, split into the idempotency claim, the ledger
    transfer's own statements (issue 10's other branches shrink those) and the rest."""
    work = [s for s in n.sql if s.split()[0].upper() not in ("BEGIN", "COMMIT", "ROLLBACK")]
    idem = sum("idempotency_keys" in s for s in work)
    ledger = sum(s.startswith(_LEDGER) for s in work)
    return {"total": len(work), "idempotency": idem, "ledger": ledger,
            "rest": len(work) - idem - ledger}


async def test_statements_per_store_invoice_and_list_page(lnenv: LnEnv, shop):  # noqa: F811
    env = lnenv
    engine = env.sessions.kw["bind"]
    await env.runtime.watcher.step()  # the deposit address pool, topped up as in production
    async with api_client(env) as c:
        assert (await create(c, shop, "warm", amount="1000", currency="SATS")).status_code == 201
        with count_statements(engine) as n:
            r = await create(c, shop, "counted", amount="1000", currency="SATS")
        assert r.status_code == 201, r.text
        print(f"store invoice, both methods: {n.total}\n{n}")
        # Address claim, ln_invoices, deposit_requests, store_invoices, outbox, idempotency
        # key: no store, wallet or webhook lookup (before issue 10: 16 in 3 transactions).
        assert n.total <= 6 and n.transactions == 1, str(n)
        with count_statements(engine) as n:
            again = await create(c, shop, "counted", amount="1000", currency="SATS")
        assert again.json() == r.json() and again.headers["Idempotent-Replayed"] == "true"
        print(f"store invoice, replayed: {n.total}\n{n}")
        for i in range(8):
            await create(c, shop, f"more-{i}", amount="1000", currency="SATS")
        pages = {}
        for size in (2, 10):
            with count_statements(engine) as n:
                r = await c.get(f"/api/v1/stores/{shop['store']}/invoices?limit={size}",
                                headers=shop["key"])
            assert r.status_code == 200 and len(r.json()["items"]) == size
            pages[size] = n.total
        print(f"invoice list pages: {pages}")
        assert pages[10] == pages[2], pages  # a page costs the same whatever its length


async def test_statements_per_internal_payment(lnenv: LnEnv):
    env = lnenv
    engine = env.sessions.kw["bind"]
    await fund(env, env.wallet, 100_000 * SAT)
    carol = await env.wallet_for("carol@example.com")
    async with env.sessions() as s, s.begin():
        bills = [await create_invoice(s, backend=env.runtime.lightning, wallet=carol,
                                      amount_msat=1_000 * SAT) for _ in range(2)]
        _, token = await acc.create_api_key(s, owner_id=env.wallet.owner_id, scopes=[
            "wallet:read", "withdrawals:write"])
    auth = {"Authorization": f"Bearer {token}"}
    async with api_client(env) as c:
        url = f"/api/v1/wallets/{env.wallet.id}/withdrawals"
        warm = await c.post(url, headers={**auth, "Idempotency-Key": "w"},
                            json={"destination": bills[0].bolt11})
        assert warm.status_code == 201, warm.text
        with count_statements(engine) as n:
            r = await c.post(url, headers={**auth, "Idempotency-Key": "n"},
                             json={"destination": bills[1].bolt11})
        assert r.status_code == 201 and r.json()["method"] == "internal", r.text
    parts = breakdown(n)
    print(f"internal payment: {parts}\n{n}")
    # issue 10: ≤ 8 in all. Was 24 (28 with BEGINs): 3 idempotency, 4 ledger, 17 the rest;
    # then 11 in 4 transactions. Now one read (the wallet, our own invoice by its BOLT11
    # text, whether the key was used) and one transaction: the withdrawal under the daily
    # limit, the invoice marked paid, the ledger (1 statement on PostgreSQL, 2 on SQLite), one
    # outbox INSERT with the balances the ledger wrote, the key row with its response.
    # Issue 12 (risk rules) added 3: the wallet's row lock with the live rule-set version,
    # the one feature query, the decision's INSERT (a payment is screened before its hold):
    # 10 on SQLite, 9 on PostgreSQL. Now the feature query reads the live version (and the
    # lock, PostgreSQL only, reads nothing), and on PostgreSQL the decision is written in the
    # withdrawal's INSERT (a data-modifying WITH): 8 on PostgreSQL; 9 on SQLite, which has
    # neither row locks nor writable WITH and whose ledger transfer takes 2 statements.
    # Now 7 on PostgreSQL: the lock and the feature query are one call of a server-side
    # function (migration 0035) that runs them as two statements.
    # Migration 0082 added the take, recorded under the person's lock before the node is
    # asked (found from outside: a burst passed the one read's checks each alone): one call
    # of ``ln_take`` on PostgreSQL, sent on the driver connection, which this count (through
    # SQLAlchemy's events) does not see: 7 counted, 8 round trips in all; a read, a DELETE
    # of the person's old takes and the upsert on SQLite, 12 there.
    assert parts["total"] - parts["ledger"] <= 10 and n.transactions <= 3, f"{parts}\n{n}"
    assert parts["rest"] <= 8, f"{parts}\n{n}"
    if engine.dialect.name == "postgresql":
        assert parts["total"] <= 8 and parts["rest"] <= 5, f"{parts}\n{n}"
    await env.check()


async def test_statements_per_lightning_deposit_credit(lnenv: LnEnv):
    env = lnenv
    engine = env.sessions.kw["bind"]
    async with env.sessions() as s, s.begin():
        bills = [await create_invoice(s, backend=env.runtime.lightning, wallet=env.wallet,
                                      amount_msat=1_000 * SAT) for _ in range(2)]
    listener = InvoiceListener(env.sessions, env.runtime.lightning, node="lnd",
                               on_store_invoice=env.runtime.on_store_invoice,
                               deposit_screen=env.runtime.deposit_screen)
    for i, bill in enumerate(bills):
        env.network.pay("customer1", bill.bolt11)
        with count_statements(engine) as n:  # the listener's credit of one settled invoice
            assert await listener.handle(bill.payment_hash, 1_000 * SAT, i + 1)
    parts = breakdown(n)
    print(f"Lightning deposit credit: {parts}\n{n}")
    # issue 10: ≤ 8. Was 12: 4 ledger, invoice lock + read, wallet read, 2 events,
    # the invoice UPDATE, the cursor read + write. Now 8: 4 ledger, invoice UPDATE…RETURNING,
    # cursor upsert, balance read + one event INSERT.
    # Now 5 (4 on PostgreSQL): no balance read, the ledger noted the balances it wrote.
    # Issue 12 (deposit screening) adds 3, as for a withdrawal: the wallet's row lock with the
    # live rule-set version, the one feature query, the decision's INSERT (the payee's wallet
    # and owner come back with the invoice's UPDATE…RETURNING, no read). On PostgreSQL the
    # lock and the feature query are one call of a server-side function (0031): 6.
    assert parts["total"] <= 8 and parts["rest"] <= 6, f"{parts}\n{n}"
    if engine.dialect.name == "postgresql":
        assert parts["total"] <= 6, f"{parts}\n{n}"
    assert (await env.balances())["available"] == 2_000 * SAT
    await env.check()


async def test_statements_per_onchain_deposit_credit(env: Env):
    """One watcher step that connects the block confirming a deposit and credits it. Counted
    apart: the *credit*, the unit of work that settles that one payment (read and lock it with
    its address, wallet and store invoice; post the hold; the balance event; its new state),
    and the *bookkeeping* around it (the address pool, the stored tip, connecting the block,
    the vanished and the open payments), which does not grow with the payments credited."""
    async with env.sessions() as s, s.begin():
        await live_rule_set(s)  # once per database: the first screening would do it
    d = await deposit(env, 50_000)
    env.chain.pay(d.address, 50_000)
    await env.runtime.watcher.step()  # seen: the hold
    env.chain.mine(1)
    engine = env.sessions.kw["bind"]
    with count_statements(engine) as n:  # the block that confirms it, and the credit
        await env.runtime.watcher.step()
    assert (await view(env, d.request.id)).status == "paid"
    credit = [u for u in n.units if any(s.startswith("UPDATE onchain_payments SET credit_state")
                                        for s in u)]
    assert len(credit) == 1, str(n)
    (unit,) = credit
    ledger = sum(s.startswith(_LEDGER) for s in unit)
    bookkeeping = n.total - len(unit)
    print(f"on-chain deposit credit (one watcher step): {breakdown(n)}; the credit: "
          f"{len(unit)} ({ledger} ledger), bookkeeping: {bookkeeping} in "
          f"{n.transactions - 1} transactions\n{n}")
    # Was 13 for the credit (4 reads, 6 ledger, a balance read, the event, the state) and 11
    # for the rest (24 in 6 transactions). Now one locked read, the post of the hold (the
    # ledger's general path: it names the hold's accounts, so 5 statements), the event with
    # the balances the ledger wrote, the payment's new state.
    # Issue 12 (deposit screening) adds 3 to the credit: the wallet's row lock with the live
    # rule-set version, the feature query, the decision's INSERT (the owner and the receiving
    # address come with the locked read; the senders were asked of the node before). 10 on
    # both: SQLite sends no lock, and PostgreSQL's is in the feature function's call (0031).
    assert len(unit) <= 10, "\n".join(unit)
    assert bookkeeping <= 11 and n.transactions <= 6, str(n)
    await env.check()
