"""The ledger store: loads the state a batch needs, asks the pure core, writes the plan.

Concurrency. Every batch locks the rows of the accounts it touches *in ascending id order*
(``SELECT … ORDER BY id FOR NO KEY UPDATE`` on PostgreSQL; SQLite's ``BEGIN IMMEDIATE`` already
admits one writer), and only then reads the transfers it refers to, so two batches on the same
accounts are serialised and no two batches can wait on each other in a cycle. Balances are
written as increments and the database's CHECK constraints re-check the no-overdraft rule.

What the locks cannot order (two batches racing to insert the same new id on *different*
accounts) ends in a unique-constraint error; :class:`ConcurrentUpdate` says "run the whole unit
of work again", which :func:`submit` does. Service functions never commit: the caller owns the
transaction (use :func:`submit` or :func:`satvault.db.unit_of_work`).

A lone plain transfer first tries the short path of ``_plain`` (one statement on PostgreSQL,
two on SQLite), and on PostgreSQL a batch of plain transfers with distinct ids the set-based
batch of ``_plain`` (the lock, then one statement); whatever they do not create comes here, in
the same transaction.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar, cast

from sqlalchemy import (
    BigInteger,
    DateTime,
    String,
    Table,
    Text,
    any_,
    bindparam,
    func,
    insert,
    literal,
    null,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session

from satvault.db import Amount, insert_ignoring, max_amount, utcnow
from satvault.kernel.errors import ConcurrentUpdate
from satvault.kernel.retrying import retrying
from satvault.ledger._plain import (
    bool_literal,
    create_plain,
    create_plain_batch,
    int_literal,
    is_plain,
    post_alone,
)
from satvault.ledger.core import (
    ID_MAX_LEN,
    Account,
    AccountKind,
    Balances,
    FailedTransfer,
    HoldState,
    Outcome,
    Plan,
    Result,
    Transfer,
    TransferKind,
    TransferSpec,
    plan_transfers,
)
from satvault.ledger.errors import (
    AccountConflict,
    AccountNotFound,
    LedgerInvariantViolation,
    error_for,
)
from satvault.ledger.models import LedgerAccount, LedgerFailedTransfer, LedgerTransfer

__all__ = [
    "BALANCES_AFTER",
    "BALANCES_CHANGED",
    "WALLET_KINDS",
    "count_transfers",
    "create_account",
    "create_transfers",
    "expire_due_holds",
    "get_account",
    "get_account_by_name",
    "get_accounts",
    "lookup_transfer",
    "submit",
    "submit_one",
    "transfer",
]

T = TypeVar("T")
accounts_t = cast(Table, LedgerAccount.__table__)
transfers_t = cast(Table, LedgerTransfer.__table__)
failed_t = cast(Table, LedgerFailedTransfer.__table__)

_ACCOUNT_COLS = (
    accounts_t.c.id, accounts_t.c.asset, accounts_t.c.kind,
    accounts_t.c.debits_must_not_exceed_credits, accounts_t.c.credits_must_not_exceed_debits,
    accounts_t.c.debits_posted, accounts_t.c.credits_posted,
    accounts_t.c.debits_pending, accounts_t.c.credits_pending,
)


_KINDS = {k.value: k for k in AccountKind}


def _account(row: Any) -> Account:
    """An account from a row that starts with the columns of ``_ACCOUNT_COLS``, in order (the
    PostgreSQL lock reads the balances as decimal text: ``int`` takes either)."""
    aid, asset, kind, dnec, cned, dp, cp, dq, cq = row[:9]
    return Account(aid, asset, _KINDS[kind], dnec, cned,
                   Balances(int(dp), int(cp), int(dq), int(cq)))


def _transfer(row: Any) -> Transfer:
    return Transfer(
        id=row.id,
        debit_account_id=row.debit_account_id,
        credit_account_id=row.credit_account_id,
        amount=row.amount,
        asset=row.asset,
        kind=TransferKind(row.kind),
        created_at=row.created_at,
        pending_id=row.pending_id,
        timeout_seconds=row.timeout_seconds,
        expires_at=row.expires_at,
        state=HoldState(row.state) if row.state else None,
        linked=row.linked,
        code=row.code,
        ref=row.ref,
        debit_after=Balances(row.dr_debits_posted, row.dr_credits_posted,
                             row.dr_debits_pending, row.dr_credits_pending),
        credit_after=Balances(row.cr_debits_posted, row.cr_credits_posted,
                              row.cr_debits_pending, row.cr_credits_pending),
        seq=row.seq,
    )


def _transfer_row(t: Transfer) -> dict[str, Any]:
    return {
        "id": t.id, "debit_account_id": t.debit_account_id,
        "credit_account_id": t.credit_account_id, "amount": t.amount, "asset": t.asset,
        "kind": t.kind.value, "pending_id": t.pending_id,
        "state": t.state.value if t.state else None, "timeout_seconds": t.timeout_seconds,
        "expires_at": t.expires_at, "linked": t.linked, "code": t.code, "ref": t.ref,
        "created_at": t.created_at,
        "dr_debits_posted": t.debit_after.debits_posted,
        "dr_credits_posted": t.debit_after.credits_posted,
        "dr_debits_pending": t.debit_after.debits_pending,
        "dr_credits_pending": t.debit_after.credits_pending,
        "cr_debits_posted": t.credit_after.debits_posted,
        "cr_credits_posted": t.credit_after.credits_posted,
        "cr_debits_pending": t.credit_after.debits_pending,
        "cr_credits_pending": t.credit_after.credits_pending,
    }


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


# ---------------------------------------------------------------------------------- accounts

async def create_account(
    session: AsyncSession,
    *,
    name: str,
    asset: str,
    kind: AccountKind,
    owner_type: str | None = None,
    owner_id: str | None = None,
    debits_must_not_exceed_credits: bool = False,
    credits_must_not_exceed_debits: bool = False,
) -> Account:
    """Create an account, or return the existing one of that name if it matches exactly."""
    if debits_must_not_exceed_credits and credits_must_not_exceed_debits:
        raise AccountConflict("an account cannot carry both balance-limit flags")
    existing = (await session.execute(
        select(*_ACCOUNT_COLS, accounts_t.c.owner_type, accounts_t.c.owner_id)
        .where(accounts_t.c.name == name)
    )).first()
    wanted = (asset, kind.value, owner_type, owner_id,
              debits_must_not_exceed_credits, credits_must_not_exceed_debits)
    if existing is not None:
        have = (existing.asset, existing.kind, existing.owner_type, existing.owner_id,
                existing.debits_must_not_exceed_credits, existing.credits_must_not_exceed_debits)
        if have != wanted:
            raise AccountConflict(f"account {name!r} exists with different attributes")
        return _account(existing)
    try:
        async with session.begin_nested():
            new_id = (await session.execute(
                insert(accounts_t).returning(accounts_t.c.id),
                _account_row(name, asset, kind, owner_type, owner_id,
                             debits_must_not_exceed_credits, credits_must_not_exceed_debits,
                             utcnow()),
            )).scalar_one()
    except IntegrityError as exc:
        raise ConcurrentUpdate(f"account {name!r} was created concurrently") from exc
    return Account(new_id, asset, kind, debits_must_not_exceed_credits,
                   credits_must_not_exceed_debits)


def _account_row(name: str, asset: str, kind: AccountKind, owner_type: str | None,
                 owner_id: str | None, dnec: bool, cned: bool, now: datetime
                 ) -> dict[str, Any]:
    return {"name": name, "asset": asset, "kind": kind.value, "owner_type": owner_type,
            "owner_id": owner_id, "debits_must_not_exceed_credits": dnec,
            "credits_must_not_exceed_debits": cned, "debits_posted": 0, "credits_posted": 0,
            "debits_pending": 0, "credits_pending": 0, "created_at": now}


async def insert_missing_accounts(
    session: AsyncSession,
    accounts: Sequence[tuple[str, str, AccountKind, str | None, str | None, bool, bool]],
) -> None:
    """Create the accounts named (name, asset, kind, owner type, owner id and the two balance
    guards, as :func:`create_account` takes them) in one statement: ``INSERT … ON CONFLICT
    (name) DO NOTHING``, so one that exists, made by a concurrent process or unlike the spec,
    is left as it is. Compare them after, as :func:`create_account` would."""
    if not accounts:
        return
    now = utcnow()
    await session.execute(insert_ignoring(session.get_bind().dialect.name, accounts_t, "name")
                          .values([_account_row(*spec, now) for spec in accounts]))


async def get_accounts(session: AsyncSession, ids: Iterable[int]) -> dict[int, Account]:
    rows = (await session.execute(select(*_ACCOUNT_COLS).where(accounts_t.c.id.in_(set(ids)))))
    return {row.id: _account(row) for row in rows}


async def get_account(session: AsyncSession, account_id: int) -> Account:
    found = await get_accounts(session, [account_id])
    if account_id not in found:
        raise AccountNotFound(f"ledger account {account_id} does not exist")
    return found[account_id]


async def get_account_by_name(session: AsyncSession, name: str) -> Account:
    row = (await session.execute(
        select(*_ACCOUNT_COLS).where(accounts_t.c.name == name)
    )).first()
    if row is None:
        raise AccountNotFound(f"ledger account {name!r} does not exist")
    return _account(row)


# --------------------------------------------------------------------------------- transfers

async def lookup_transfer(session: AsyncSession, transfer_id: str) -> Transfer | None:
    row = (await session.execute(
        select(transfers_t).where(transfers_t.c.id == transfer_id)
    )).first()
    return None if row is None else _transfer(row)


# Hot-path statements are built once: constructing a select per call cost more client CPU than
# the round trip. PostgreSQL gets one array parameter (one SQL text, one prepared plan, whatever
# the number of ids); SQLite an expanding IN.
#
# On PostgreSQL the wanted ids are a relation joined to the accounts (``unnest``), not an
# ``id = ANY(:ids)`` condition: a row another transaction updated while this one waited for
# its lock is re-checked against the conditions (EvalPlanQual), and re-checking an index scan
# on ``ANY`` re-reads, sorts and de-duplicates the whole array for each such row. With two
# batches of 1,000 racing over shared accounts that was most of the database's work (10,900
# against 16,600 transfers/s for the set-based batch's lock, measured side by side).
_WANTED = (func.unnest(bindparam("ids", type_=ARRAY(BigInteger())))
           .table_valued("id").render_derived(name="u"))
_LOCK = {
    # The balances as text: the driver decodes NUMERIC into a Decimal (then made an int) at
    # several times the cost of a string, and a batch locks a couple of thousand rows.
    "postgresql": select(*_ACCOUNT_COLS[:5],
                         *(c.cast(Text).label(c.name) for c in _ACCOUNT_COLS[5:]))
    .select_from(_WANTED.join(accounts_t, accounts_t.c.id == _WANTED.c.id))
    .order_by(accounts_t.c.id).with_for_update(key_share=True, of=accounts_t),
    "sqlite": select(*_ACCOUNT_COLS)
    .where(accounts_t.c.id.in_(bindparam("ids", expanding=True)))
    .order_by(accounts_t.c.id),
}


def _ids_param(dialect: str, name: str) -> Any:
    if dialect == "postgresql":
        return any_(bindparam(name, type_=ARRAY(String())))
    return bindparam(name, expanding=True)


def _known_statement(dialect: str) -> Any:
    cols = [c for c in transfers_t.c if c.name != "code"]
    t_ids = _ids_param(dialect, "all_ids")
    f_ids = _ids_param(dialect, "ids")
    stored = select(literal("t").label("src"), transfers_t.c.code, *cols).where(
        transfers_t.c.id == t_ids if dialect == "postgresql" else transfers_t.c.id.in_(t_ids))
    nulls = [null().label(c.name) if c.name != "id" else failed_t.c.id for c in cols]
    failed = select(literal("f").label("src"), failed_t.c.result.label("code"), *nulls).where(
        failed_t.c.id == f_ids if dialect == "postgresql" else failed_t.c.id.in_(f_ids))
    return stored.union_all(failed)


_KNOWN = {d: _known_statement(d) for d in ("postgresql", "sqlite")}


async def _lock_accounts(session: AsyncSession, ids: set[int]) -> dict[int, Account]:
    if not ids:
        return {}
    stmt = _LOCK[_dialect(session)]
    return {row.id: _account(row) for row in await session.execute(stmt, {"ids": sorted(ids)})}


async def _load_transfers(session: AsyncSession, ids: set[str]) -> dict[str, Transfer]:
    if not ids:
        return {}
    rows = await session.execute(select(transfers_t).where(transfers_t.c.id.in_(ids)))
    return {row.id: _transfer(row) for row in rows}


async def _load_known(session: AsyncSession, ids: set[str], refs: set[str]
                      ) -> tuple[dict[str, Transfer], dict[str, FailedTransfer]]:
    """Stored transfers among ``ids | refs`` and remembered failures among ``ids``, in one
    round trip (a UNION ALL; the failure rows carry their result in ``code``)."""
    if not ids and not refs:
        return {}, {}
    existing: dict[str, Transfer] = {}
    remembered: dict[str, FailedTransfer] = {}
    params = {"all_ids": sorted(ids | refs), "ids": sorted(ids)}
    for row in await session.execute(_KNOWN[_dialect(session)], params):
        if row.src == "t":
            existing[row.id] = _transfer(row)
        else:
            remembered[row.id] = FailedTransfer(row.id, Result(row.code))
    return existing, remembered


_UPDATE_BALANCES = (
    update(accounts_t)
    .where(accounts_t.c.id == bindparam("b_id"))
    .values(
        debits_posted=accounts_t.c.debits_posted + bindparam("d_dp", type_=Amount()),
        credits_posted=accounts_t.c.credits_posted + bindparam("d_cp", type_=Amount()),
        debits_pending=accounts_t.c.debits_pending + bindparam("d_dq", type_=Amount()),
        credits_pending=accounts_t.c.credits_pending + bindparam("d_cq", type_=Amount()),
    )
)


# Integer columns (amounts, account ids) travel to PostgreSQL as one array *literal* each
# (``_plain.int_literal``): a string like ``{5,70,12}`` that the server casts.
_UPDATE_BALANCES_PG = text(
    "UPDATE ledger_accounts AS a SET debits_posted = a.debits_posted + d.dp, "
    "credits_posted = a.credits_posted + d.cp, debits_pending = a.debits_pending + d.dq, "
    "credits_pending = a.credits_pending + d.cq "
    "FROM unnest(CAST(:ids AS BIGINT[]), CAST(:dp AS NUMERIC[]), CAST(:cp AS NUMERIC[]), "
    "CAST(:dq AS NUMERIC[]), CAST(:cq AS NUMERIC[])) AS d(vid, dp, cp, dq, cq) "
    "WHERE a.id = d.vid"
).bindparams(*(bindparam(n, type_=String()) for n in ("ids", "dp", "cp", "dq", "cq")))


async def _apply_deltas(session: AsyncSession, deltas: Mapping[int, Balances]) -> None:
    """All balance changes of a batch as increments. On PostgreSQL one statement over five
    arrays (``unnest``): one execution and one cached plan, however many accounts; an
    executemany on SQLite, whose single writer gains nothing from the join."""
    rows = sorted(deltas.items())
    if _dialect(session) != "postgresql" or len(rows) < 3:
        await session.execute(_UPDATE_BALANCES, [
            {"b_id": aid, "d_dp": d.debits_posted, "d_cp": d.credits_posted,
             "d_dq": d.debits_pending, "d_cq": d.credits_pending} for aid, d in rows])
        return
    await session.execute(_UPDATE_BALANCES_PG, {
        "ids": int_literal(aid for aid, _ in rows),
        "dp": int_literal(d.debits_posted for _, d in rows),
        "cp": int_literal(d.credits_posted for _, d in rows),
        "dq": int_literal(d.debits_pending for _, d in rows),
        "cq": int_literal(d.credits_pending for _, d in rows)})


# The columns of a transfer row written by the PostgreSQL batch insert, with the SQL type of
# each array: every column is bound once (an array, or an array literal for the integer and
# boolean columns) and the rows come out of ``unnest``.
_INSERT_COLS: tuple[tuple[str, str], ...] = (
    ("id", "VARCHAR"), ("debit_account_id", "BIGINT"), ("credit_account_id", "BIGINT"),
    ("amount", "NUMERIC"), ("asset", "VARCHAR"), ("kind", "VARCHAR"),
    ("pending_id", "VARCHAR"), ("state", "VARCHAR"), ("timeout_seconds", "INTEGER"),
    ("expires_at", "TIMESTAMPTZ"), ("linked", "BOOLEAN"), ("code", "VARCHAR"), ("ref", "VARCHAR"),
    ("created_at", "TIMESTAMPTZ"),
    ("dr_debits_posted", "NUMERIC"), ("dr_credits_posted", "NUMERIC"),
    ("dr_debits_pending", "NUMERIC"), ("dr_credits_pending", "NUMERIC"),
    ("cr_debits_posted", "NUMERIC"), ("cr_credits_posted", "NUMERIC"),
    ("cr_debits_pending", "NUMERIC"), ("cr_credits_pending", "NUMERIC"),
)
_BIND_TYPES: dict[str, Any] = {
    "VARCHAR": ARRAY(String()), "TIMESTAMPTZ": ARRAY(DateTime(timezone=True)),
    "BIGINT": String(), "INTEGER": String(), "BOOLEAN": String(), "NUMERIC": String(),
}
_INSERT_PG = text(
    "INSERT INTO ledger_transfers (" + ", ".join(c for c, _ in _INSERT_COLS) + ") "
    "SELECT * FROM unnest(" + ", ".join(f"CAST(:{c} AS {t}[])" for c, t in _INSERT_COLS) + ") "
    "RETURNING id, seq"
).bindparams(*(bindparam(c, type_=_BIND_TYPES[t]) for c, t in _INSERT_COLS))


def _insert_arrays(inserts: Sequence[Transfer]) -> dict[str, Any]:
    """The batch's rows for :data:`_INSERT_PG`, column by column."""
    ts = list(inserts)
    da = [t.debit_after for t in ts]
    ca = [t.credit_after for t in ts]
    return {
        "id": [t.id for t in ts],
        "debit_account_id": int_literal(t.debit_account_id for t in ts),
        "credit_account_id": int_literal(t.credit_account_id for t in ts),
        "amount": int_literal(t.amount for t in ts),
        "asset": [t.asset for t in ts],
        "kind": [t.kind.value for t in ts],
        "pending_id": [t.pending_id for t in ts],
        "state": [t.state.value if t.state else None for t in ts],
        "timeout_seconds": int_literal(t.timeout_seconds for t in ts),
        "expires_at": [_utc(t.expires_at) for t in ts],
        "linked": bool_literal(t.linked for t in ts),
        "code": [t.code for t in ts],
        "ref": [t.ref for t in ts],
        "created_at": [_utc(t.created_at) for t in ts],
        "dr_debits_posted": int_literal(b.debits_posted for b in da),
        "dr_credits_posted": int_literal(b.credits_posted for b in da),
        "dr_debits_pending": int_literal(b.debits_pending for b in da),
        "dr_credits_pending": int_literal(b.credits_pending for b in da),
        "cr_debits_posted": int_literal(b.debits_posted for b in ca),
        "cr_credits_posted": int_literal(b.credits_posted for b in ca),
        "cr_debits_pending": int_literal(b.debits_pending for b in ca),
        "cr_credits_pending": int_literal(b.credits_pending for b in ca),
    }


def _utc(moment: datetime | None) -> datetime | None:
    if moment is not None and moment.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")  # as UtcDateTime refuses it
    return moment


async def _insert_transfers(session: AsyncSession, dialect: str,
                            inserts: Sequence[Transfer]) -> dict[str, int]:
    """Write the planned transfers; their ``seq`` by id. PostgreSQL gets one ``INSERT …
    SELECT FROM unnest(…)`` over one array per column (bound once, one cached plan for any
    batch size); SQLite an insertmanyvalues of row dicts."""
    if dialect == "postgresql":
        rows = await session.execute(_INSERT_PG, _insert_arrays(inserts))
    else:
        rows = await session.execute(
            insert(transfers_t).returning(
                transfers_t.c.id, transfers_t.c.seq, sort_by_parameter_order=True),
            [_transfer_row(t) for t in inserts],
        )
    return {r.id: r.seq for r in rows}


WALLET_KINDS = frozenset({AccountKind.CUSTOMER_WALLET, AccountKind.MERCHANT_WALLET})
# session.info key: ids of wallet accounts whose balances this transaction changed. The events
# package reads it when the transaction commits and writes one ``wallet.balance_changed`` per
# wallet (the ledger itself knows nothing of events).
BALANCES_CHANGED = "satvault.ledger.balances_changed"
# session.info key: the balances those accounts have now, as the ledger wrote them (every
# balance write goes through here, under the rows' locks), so no one has to read them back.
BALANCES_AFTER = "satvault.ledger.balances_after"


def _note_balances(session: AsyncSession, after: Mapping[int, Balances]) -> None:
    if after:
        session.info.setdefault(BALANCES_CHANGED, set()).update(after)
        session.info.setdefault(BALANCES_AFTER, {}).update(after)


def _note_wallets_changed(session: AsyncSession, deltas: Mapping[int, Balances],
                          accounts: Mapping[int, Account]) -> None:
    after = {}
    for aid, d in deltas.items():
        if accounts[aid].kind in WALLET_KINDS:
            b = accounts[aid].balances  # as read under the lock, before this batch
            after[aid] = Balances(b.debits_posted + d.debits_posted,
                                  b.credits_posted + d.credits_posted,
                                  b.debits_pending + d.debits_pending,
                                  b.credits_pending + d.credits_pending)
    _note_balances(session, after)


_TOUCH = text(
    "UPDATE ledger_accounts SET debits_posted = debits_posted WHERE id = ANY(:ids)"
).bindparams(bindparam("ids", type_=ARRAY(BigInteger())))


async def _mark_refusals(session: AsyncSession, specs: Sequence[TransferSpec], plan: Plan,
                         existing: Mapping[str, Transfer], accounts: Mapping[int, Account]
                         ) -> None:
    """Write a new version of the rows of the accounts whose refusal this batch remembers
    (those its transfers did not move already), so the one-statement path of ``_plain``,
    whose snapshot may predate this commit, sees that they changed and defers to the general
    path, which then reads the remembered failure."""
    refused = {f.id for f in plan.failures}
    touched: set[int] = set()
    for spec in specs:
        if spec.id not in refused:
            continue
        touched.update(a for a in (spec.debit_account_id, spec.credit_account_id) if a)
        pending = existing.get(spec.pending_id) if spec.pending_id else None
        if pending is not None:
            touched.update((pending.debit_account_id, pending.credit_account_id))
    ids = sorted(a for a in touched if a in accounts and a not in plan.deltas)
    if ids:
        await session.execute(_TOUCH, {"ids": ids})


@contextmanager
def _refused_writes() -> Iterator[None]:
    """A write the database refused: a transfer id another transaction took meanwhile is a
    conflict to retry (:class:`ConcurrentUpdate`); any other constraint is a broken plan."""
    try:
        yield
    except IntegrityError as exc:
        if _is_unique_violation(exc):
            raise ConcurrentUpdate("a transfer id was taken concurrently") from exc
        raise LedgerInvariantViolation(f"the database refused a planned write: {exc.orig}") from exc


def _is_unique_violation(exc: DBAPIError) -> bool:
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    return code == "23505" or "UNIQUE constraint failed" in str(exc.orig)


async def create_transfers(
    session: AsyncSession, specs: Sequence[TransferSpec], *, now: datetime | None = None
) -> list[Outcome]:
    """Decide and write a batch; one :class:`Outcome` per spec, in order. Does not commit."""
    if not specs:
        return []
    now = now or utcnow()
    dialect = _dialect(session)
    limit = max_amount(dialect)
    if len(specs) == 1 and is_plain(specs[0], limit):
        done = await create_plain(session, specs[0], now=now, max_amount=limit, dialect=dialect)
        if done is not None:
            outcome, wallets = done
            moved = outcome.transfer
            assert moved is not None
            _note_balances(session, {aid: after for aid, after in (
                (moved.debit_account_id, moved.debit_after),
                (moved.credit_account_id, moved.credit_after)) if aid in wallets})
            return [outcome]
    if (dialect == "postgresql" and len(specs) > 1 and not specs[-1].linked
            and all(is_plain(s, limit, linked_ok=True) for s in specs)
            and len({s.id for s in specs}) == len(specs)):
        with _refused_writes():
            batch = await create_plain_batch(session, list(specs), now=now, max_amount=limit)
        if batch is not None:
            outcomes, wallets_after = batch
            _note_balances(session, wallets_after)
            return outcomes
    ids = {s.id for s in specs if s.id}
    # Pending transfers are immutable in everything but state, so their accounts can be read
    # before locking; their state is re-read under the lock below.
    pending_ids = {s.pending_id for s in specs if s.pending_id and s.pending_id not in ids}
    account_ids = {a for s in specs for a in (s.debit_account_id, s.credit_account_id) if a}
    # A post or void that names both accounts of its hold needs no read to learn them (the
    # plan checks them against the hold, re-read under the lock).
    unnamed = {s.pending_id for s in specs if s.pending_id and s.pending_id not in ids
               and not (s.debit_account_id and s.credit_account_id)}
    if unnamed:
        for t in (await _load_transfers(session, unnamed)).values():
            account_ids.update((t.debit_account_id, t.credit_account_id))
    accounts = await _lock_accounts(session, account_ids)
    existing, failed = await _load_known(session, ids, pending_ids)
    plan = plan_transfers(
        specs, accounts=accounts, existing=existing, failed=failed, now=now, max_amount=limit,
    )
    with _refused_writes():
        seqs: dict[str, int] = {}
        if plan.inserts:
            seqs = await _insert_transfers(session, dialect, plan.inserts)
        if plan.deltas:
            await _apply_deltas(session, plan.deltas)
            _note_wallets_changed(session, plan.deltas, accounts)
        for pending_id, new_state in plan.hold_updates.items():
            res = await session.execute(
                update(transfers_t)
                .where(transfers_t.c.id == pending_id, transfers_t.c.state == "pending")
                .values(state=new_state.value)
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                raise ConcurrentUpdate(f"hold {pending_id!r} was resolved concurrently")
        if plan.failures:
            await session.execute(insert(failed_t), [
                {"id": f.id, "result": f.result.value, "created_at": now} for f in plan.failures
            ])
            if dialect == "postgresql":
                await _mark_refusals(session, specs, plan, existing, accounts)
    # The rows just inserted now have sequence numbers; outcomes carry the stored transfers.
    return [
        _with_seq(o, o.transfer, seqs[o.id])
        if o.transfer is not None and o.transfer.seq is None and o.id in seqs else o
        for o in plan.outcomes
    ]


def _with_seq(o: Outcome, t: Transfer, seq: int) -> Outcome:
    # dataclasses.replace, spelled out: it costs twice as much per call, 2,000 calls a batch.
    return Outcome(o.index, o.id, o.result, Transfer(
        t.id, t.debit_account_id, t.credit_account_id, t.amount, t.asset, t.kind, t.created_at,
        t.pending_id, t.timeout_seconds, t.expires_at, t.state, t.linked, t.code, t.ref,
        t.debit_after, t.credit_after, seq), o.detail)


async def transfer(
    session: AsyncSession, spec: TransferSpec, *, now: datetime | None = None
) -> Transfer:
    """One transfer; returns it (new or the idempotent original) or raises a typed error."""
    (outcome,) = await create_transfers(session, [spec], now=now)
    if not outcome.ok:
        raise error_for(outcome)
    assert outcome.transfer is not None
    return outcome.transfer


async def submit(
    sessions: async_sessionmaker[AsyncSession],
    specs: Sequence[TransferSpec],
    *,
    now: datetime | None = None,
) -> list[Outcome]:
    """Create a batch in its own transaction, retrying conflicts; the everyday entry point.

    A lone plain transfer on PostgreSQL, from a session factory whose commits carry nothing
    else (no commit hooks: not the composition root's, whose commit writes the balance events),
    is one round trip: :func:`satvault.ledger._plain.post_alone`, with the general path in a
    transaction of its own for anything it did not create."""
    if len(specs) == 1 and (engine := _alone_engine(sessions)) is not None:
        limit = max_amount("postgresql")
        if is_plain(specs[0], limit):
            done = await post_alone(engine, specs[0], now=now or utcnow(), max_amount=limit)
            if done is not None:
                return [done[0]]
    return await retrying(sessions, lambda s: create_transfers(s, specs, now=now))


def _alone_engine(sessions: async_sessionmaker[AsyncSession]) -> AsyncEngine | None:
    """The PostgreSQL (asyncpg) engine of ``sessions`` when its sessions are plain ones (a
    commit writes what the work wrote, nothing more), else ``None``."""
    if sessions.class_ is not AsyncSession or sessions.kw.get("sync_session_class",
                                                              Session) is not Session:
        return None
    bind = sessions.kw.get("bind")
    if (isinstance(bind, AsyncEngine) and bind.dialect.name == "postgresql"
            and bind.dialect.driver == "asyncpg"):  # post_alone speaks asyncpg
        return bind
    return None


def _expiry_id(pending_id: str) -> str:
    candidate = f"expire:{pending_id}"
    if len(candidate) <= ID_MAX_LEN:
        return candidate
    return "expire:#" + hashlib.sha256(pending_id.encode()).hexdigest()


async def submit_one(
    sessions: async_sessionmaker[AsyncSession], spec: TransferSpec, *, now: datetime | None = None
) -> Transfer:
    """One transfer in its own transaction; raises a typed error *after* committing, so a
    refusal for lack of funds is remembered (inside a caller's unit of work, :func:`transfer`
    raising rolls the unit back, the memory of the refusal included)."""
    (outcome,) = await submit(sessions, [spec], now=now)
    if not outcome.ok:
        raise error_for(outcome)
    assert outcome.transfer is not None
    return outcome.transfer


async def expire_due_holds(
    session: AsyncSession, *, now: datetime | None = None, limit: int = 500
) -> int:
    """Expire holds whose timeout has passed; returns how many. Does not commit."""
    now = now or utcnow()
    due = (await session.execute(
        select(transfers_t.c.id)
        .where(transfers_t.c.state == "pending", transfers_t.c.expires_at <= now)
        .order_by(transfers_t.c.expires_at)
        .limit(limit)
    )).scalars().all()
    if not due:
        return 0
    specs = [TransferSpec(id=_expiry_id(pid), kind=TransferKind.EXPIRE, pending_id=pid)
             for pid in due]
    outcomes = await create_transfers(session, specs, now=now)
    return sum(1 for o in outcomes if o.result is Result.CREATED)


async def count_transfers(session: AsyncSession) -> int:
    return int((await session.execute(select(func.count()).select_from(transfers_t))).scalar_one())
