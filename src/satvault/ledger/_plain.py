"""The short paths for the common case: plain transfers, decided and written by the database.
One plain transfer is described here; a batch of them at ``create_plain_batch`` below.

A lone ``SINGLE`` transfer that is well formed (an id, two different accounts, a positive
amount within range, an asset, no hold fields, not linked) is what nearly every caller sends.
For it the store skips the general path (lock, read what it refers to, plan in Python, write)
and asks the database to do all of it at once:

* PostgreSQL, **one statement**: a CTE that locks both account rows in id order (``FOR NO KEY
  UPDATE``), inserts the transfer with the balance snapshots (``ON CONFLICT (id) DO NOTHING``)
  only if the assets match, every balance-limit flag of both accounts still holds after the
  move, the new balances stay in range and no failure is remembered under the id, and updates
  both balances only if that insert happened.
* SQLite, **two statements**: the same guarded ``INSERT … SELECT … ON CONFLICT DO NOTHING``,
  then the balance ``UPDATE`` when a row came back. ``BEGIN IMMEDIATE`` has already made this
  transaction the only writer, so nothing can change between the two.

When nothing is inserted (a duplicate id, a refusal, an unknown account, a stale snapshot: see
below) nothing was written, and the store runs the general path in the same transaction. It
gives the exact outcome: the original transfer or the field that differs, the refusal (and
remembers it), the missing account. So the short path only ever says "created", and only when
the general path would have said the same.

**The snapshot.** A PostgreSQL statement reads with a snapshot taken when it *starts*, before it
waits for the row locks. Rows that were changed by a transaction that committed in between are
locked in their newest version, but the lookup of remembered failures still sees the old
snapshot: a refusal of the same id recorded by that transaction would be missed. The statement
therefore also compares each locked row's version (``xmin``) with the version its snapshot
sees; if either account changed after the snapshot, it writes nothing and the general path
decides (its reads start after its locks are held). Everything that can change the outcome for
these accounts writes a new version of their rows while holding their locks: a transfer
updates both balances, and the general path touches the accounts of a transfer whose refusal
it records (see ``store._mark_refusals``). A duplicate *transfer* needs no such care: the
unique index on ``id`` sees the newest state and ``ON CONFLICT`` waits for an insert in flight.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, String, TextClause, bindparam, text
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from satvault.db import Amount, UtcDateTime
from satvault.ledger.core import (
    ID_MAX_LEN,
    AccountKind,
    Balances,
    Outcome,
    Result,
    Transfer,
    TransferKind,
    TransferSpec,
)

__all__ = ["bool_literal", "create_plain", "create_plain_batch", "int_literal", "is_plain",
           "post_alone"]


def is_plain(spec: TransferSpec, max_amount: int, *, linked_ok: bool = False) -> bool:
    """Whether ``spec`` is a well-formed lone ``SINGLE`` transfer the short path may decide
    (``linked_ok``: or one linked to the next, for a batch: see :func:`create_plain_batch`)."""
    return (
        spec.kind is TransferKind.SINGLE and (linked_ok or not spec.linked)
        and spec.pending_id is None
        and spec.timeout_seconds == 0 and 0 < len(spec.id) <= ID_MAX_LEN
        and spec.debit_account_id is not None and spec.credit_account_id is not None
        and spec.debit_account_id != spec.credit_account_id and spec.asset is not None
        and type(spec.amount) is int and 0 < spec.amount <= max_amount
    )


_COLUMNS = (
    "id, debit_account_id, credit_account_id, amount, asset, kind, pending_id, state, "
    "timeout_seconds, expires_at, linked, code, ref, created_at, "
    "dr_debits_posted, dr_credits_posted, dr_debits_pending, dr_credits_pending, "
    "cr_debits_posted, cr_credits_posted, cr_debits_pending, cr_credits_pending"
)

# What the core's rules say for the move "debit d, credit c by :amount", written so that no
# intermediate value leaves [-max, max] (SQLite's integers are 64-bit and overflow into REAL):
# both new balances in range, and every flag of either account still satisfied afterwards.
_GUARDS = """
      d.asset = :asset AND c.asset = :asset
  AND d.dp <= :max - :amount AND c.cp <= :max - :amount
  AND (NOT d.dmnec OR (d.dp <= d.cp AND d.dq <= d.cp - d.dp AND :amount <= d.cp - d.dp - d.dq))
  AND (NOT d.cmned OR d.cp - d.dp <= :amount - d.cq)
  AND (NOT c.dmnec OR c.dp - c.cp <= :amount - c.dq)
  AND (NOT c.cmned OR (c.cp <= c.dp AND c.cq <= c.dp - c.cp AND :amount <= c.dp - c.cp - c.cq))
  AND NOT EXISTS (SELECT 1 FROM ledger_failed_transfers f WHERE f.id = :id)
"""

_VALUES = """
  :id, d.id, c.id, :amount, :asset, 'single', NULL, NULL, 0, NULL, false, :code, :ref, :now,
  d.dp + :amount, d.cp, d.dq, d.cq, c.dp, c.cp + :amount, c.dq, c.cq
"""

_ACCOUNT = (
    "id, asset, kind, debits_must_not_exceed_credits AS dmnec, "
    "credits_must_not_exceed_debits AS cmned, debits_posted AS dp, credits_posted AS cp, "
    "debits_pending AS dq, credits_pending AS cq"
)

_BALANCES = (
    "UPDATE ledger_accounts SET "
    "debits_posted = debits_posted + CASE WHEN id = :dr THEN :amount ELSE 0 END, "
    "credits_posted = credits_posted + CASE WHEN id = :cr THEN :amount ELSE 0 END "
)

_RETURNED = ("seq, dr_debits_posted, dr_credits_posted, dr_debits_pending, dr_credits_pending, "
             "cr_debits_posted, cr_credits_posted, cr_debits_pending, cr_credits_pending")

_PG = f"""
WITH locked AS (
  SELECT {_ACCOUNT}, xmin AS version FROM ledger_accounts
  WHERE id IN (:dr, :cr) ORDER BY id FOR NO KEY UPDATE
), acc AS (
  SELECT l.*, l.version = (SELECT s.xmin FROM ledger_accounts s WHERE s.id = l.id) AS steady
  FROM locked l
), ins AS (
  INSERT INTO ledger_transfers ({_COLUMNS})
  SELECT {_VALUES}
  FROM acc d JOIN acc c ON c.id = :cr
  WHERE d.id = :dr AND d.steady AND c.steady AND {_GUARDS}
  ON CONFLICT (id) DO NOTHING
  RETURNING {_RETURNED}
), upd AS (
  {_BALANCES} FROM ins WHERE ledger_accounts.id IN (:dr, :cr)
)
SELECT ins.*, d.kind AS dr_kind, c.kind AS cr_kind
FROM ins, acc d, acc c WHERE d.id = :dr AND c.id = :cr
"""

_SQLITE_INSERT = f"""
INSERT INTO ledger_transfers ({_COLUMNS})
SELECT {_VALUES}
FROM (SELECT {_ACCOUNT} FROM ledger_accounts WHERE id = :dr) d
JOIN (SELECT {_ACCOUNT} FROM ledger_accounts WHERE id = :cr) c ON true
WHERE {_GUARDS}
ON CONFLICT (id) DO NOTHING
RETURNING {_RETURNED}
"""

_SQLITE_UPDATE = _BALANCES + "WHERE id IN (:dr, :cr) RETURNING id, kind"


def _typed(sql: str) -> TextClause:
    return text(sql).bindparams(
        bindparam("id", type_=String()), bindparam("asset", type_=String()),
        bindparam("code", type_=String()), bindparam("ref", type_=String()),
        bindparam("dr", type_=BigInteger()), bindparam("cr", type_=BigInteger()),
        bindparam("amount", type_=Amount()), bindparam("max", type_=Amount()),
        bindparam("now", type_=UtcDateTime()),
    )


# Built once: the same SQL text every time, so one prepared statement per connection.
_STATEMENTS = {
    "postgresql": _typed(_PG),
    "sqlite": _typed(_SQLITE_INSERT),
    "sqlite_update": text(_SQLITE_UPDATE).bindparams(
        bindparam("dr", type_=BigInteger()), bindparam("cr", type_=BigInteger()),
        bindparam("amount", type_=Amount())),
}


async def create_plain(session: AsyncSession, spec: TransferSpec, *, now: datetime,
                       max_amount: int, dialect: str) -> tuple[Outcome, set[int]] | None:
    """Create ``spec`` (which :func:`is_plain` accepted) if the database finds it allowed;
    the outcome and the ids of the wallet accounts it moved, or ``None`` when it wrote nothing
    and the general path must decide. Does not commit."""
    assert spec.debit_account_id is not None and spec.credit_account_id is not None
    assert spec.amount is not None and spec.asset is not None
    params: dict[str, Any] = {
        "id": spec.id, "asset": spec.asset, "code": spec.code, "ref": spec.ref,
        "dr": spec.debit_account_id, "cr": spec.credit_account_id, "amount": spec.amount,
        "max": max_amount, "now": now,
    }
    if dialect == "postgresql":
        row = (await session.execute(_STATEMENTS["postgresql"], params)).first()
        if row is None:
            return None
        kinds = {spec.debit_account_id: row.dr_kind, spec.credit_account_id: row.cr_kind}
    else:
        row = (await session.execute(_STATEMENTS["sqlite"], params)).first()
        if row is None:
            return None
        moved = await session.execute(_STATEMENTS["sqlite_update"], {
            "dr": spec.debit_account_id, "cr": spec.credit_account_id, "amount": spec.amount})
        kinds = {r.id: r.kind for r in moved}
    return _created(spec, row._mapping, now), _wallets(kinds)


def _created(spec: TransferSpec, row: Any, now: datetime) -> Outcome:
    assert spec.debit_account_id is not None and spec.credit_account_id is not None
    assert spec.amount is not None and spec.asset is not None
    transfer = Transfer(
        id=spec.id, debit_account_id=spec.debit_account_id,
        credit_account_id=spec.credit_account_id, amount=spec.amount, asset=spec.asset,
        kind=TransferKind.SINGLE, created_at=now, code=spec.code, ref=spec.ref,
        debit_after=Balances(int(row["dr_debits_posted"]), int(row["dr_credits_posted"]),
                             int(row["dr_debits_pending"]), int(row["dr_credits_pending"])),
        credit_after=Balances(int(row["cr_debits_posted"]), int(row["cr_credits_posted"]),
                              int(row["cr_debits_pending"]), int(row["cr_credits_pending"])),
        seq=row["seq"],
    )
    return Outcome(0, spec.id, Result.CREATED, transfer)


def _wallets(kinds: dict[int, str]) -> set[int]:
    return {aid for aid, kind in kinds.items()
            if kind in (AccountKind.CUSTOMER_WALLET, AccountKind.MERCHANT_WALLET)}


# -------------------------------------------------------------- one round trip, autocommit
#
# The same statement for the driver (asyncpg), each name a numbered, typed parameter. Sent on
# its own, outside any transaction, PostgreSQL runs it as a transaction of its own and commits
# it before answering: one round trip for the whole transfer, durable when it returns.
_DRIVER_PARAMS = {"id": "text", "asset": "text", "code": "text", "ref": "text",
                  "dr": "bigint", "cr": "bigint", "amount": "numeric", "max": "numeric",
                  "now": "timestamptz"}
_ORDER = list(_DRIVER_PARAMS)
_PG_DRIVER = re.sub(
    r"(?<![:\w]):(\w+)",
    lambda m: f"${_ORDER.index(m.group(1)) + 1}::{_DRIVER_PARAMS[m.group(1)]}", _PG)


async def post_alone(engine: AsyncEngine, spec: TransferSpec, *, now: datetime,
                     max_amount: int) -> tuple[Outcome, set[int]] | None:
    """Create ``spec`` (which :func:`is_plain` accepted) on PostgreSQL in one round trip: the
    statement above on the driver connection, in a transaction of its own, committed when this
    returns. ``None`` when it wrote nothing (a duplicate, a refusal, an unknown account, a
    stale snapshot, or a deadlock the server rolled back), and the caller's general path must
    decide in a transaction of its own. Any other error leaves the outcome unknown: retrying
    with the same id is safe (it is idempotent), assuming a failure is not."""
    import asyncpg  # the PostgreSQL driver; only this function needs it

    assert spec.debit_account_id is not None and spec.credit_account_id is not None
    async with engine.connect() as conn:
        driver = (await conn.get_raw_connection()).driver_connection
        assert driver is not None
        try:
            # asyncpg prepares the text once per connection and keeps it (its statement cache)
            row = await driver.fetchrow(
                _PG_DRIVER, spec.id, spec.asset, spec.code, spec.ref, spec.debit_account_id,
                spec.credit_account_id, spec.amount, max_amount, now)
        except asyncpg.exceptions.TransactionRollbackError:
            return None  # rolled back whole by the server: nothing was written
        except BaseException:
            # SQLAlchemy did not see this error, so it would pool the connection as it is (a
            # lost one, or one a cancellation left mid-protocol): throw it away instead.
            await conn.invalidate()
            raise
    if row is None:
        return None
    kinds = {spec.debit_account_id: row["dr_kind"], spec.credit_account_id: row["cr_kind"]}
    return _created(spec, row, now), _wallets(kinds)


# ------------------------------------------------------------- a batch of plain transfers
#
# A batch whose every transfer is plain (and whose ids are distinct) is, in the common case,
# accepted whole: no transfer is refused, none exists already. For that case PostgreSQL plans
# the batch itself, set-based, in one statement after the lock (``_BATCH_PG``):
#
# * each transfer makes two *legs* (its debit on one account, its credit on the other);
#   running sums per account in the batch's order (a window) give every account's balances
#   after every transfer, i.e. the snapshots the general path would store;
# * the *verdict*: every leg's account exists with the transfer's asset, every running balance
#   stays in range and within the account's limit flags, and no id is stored or remembered as
#   refused. Sequentially, the batch is all created exactly when every step passes these
#   checks, so the verdict is the general path's answer for the whole batch;
# * only if the verdict holds: the transfers are inserted with their snapshots and every
#   account's balance moves by its total, in the same statement. Otherwise nothing is written
#   and the general path plans the batch (refusals, duplicates, missing accounts).
#
# Linked chains need nothing more: a chain fails only when one of its transfers does (or when
# it is still open at the batch's end, which the caller rules out), so when every transfer
# passes, every chain commits, and ``linked`` is stored as given.
#
# The statement runs after a separate lock of the accounts (``_BATCH_LOCK``, in id order, as
# the general path locks), so its snapshot, taken when it starts, already sees everything that
# committed before the locks were granted: no stale read of remembered refusals. An id inserted
# concurrently by a transaction not yet committed is caught by the unique index (the store
# maps that to :class:`ConcurrentUpdate`: run the unit of work again).

_BATCH_LOCK = text(
    "SELECT count(*) FROM (SELECT a.id FROM unnest(CAST(:accounts AS BIGINT[])) AS u(id) "
    "JOIN ledger_accounts a ON a.id = u.id ORDER BY a.id FOR NO KEY UPDATE OF a) AS locked"
).bindparams(bindparam("accounts", type_=String()))

_BATCH_PG = text(f"""
WITH t AS (
  SELECT * FROM unnest(CAST(:id AS VARCHAR[]), CAST(:dr AS BIGINT[]), CAST(:cr AS BIGINT[]),
                       CAST(:amount AS NUMERIC[]), CAST(:asset AS VARCHAR[]),
                       CAST(:code AS VARCHAR[]), CAST(:ref AS VARCHAR[]),
                       CAST(:linked AS BOOLEAN[]))
    WITH ORDINALITY AS t(id, dr, cr, amount, asset, code, ref, linked, n)
), legs AS (
  SELECT n, dr AS aid, amount AS ddp, 0::numeric AS dcp, asset FROM t
  UNION ALL
  SELECT n, cr AS aid, 0::numeric AS ddp, amount AS dcp, asset FROM t
), steps AS (
  SELECT l.n, l.aid, l.asset = a.asset AS same_asset,
         a.debits_posted + sum(l.ddp) OVER w AS dp, a.credits_posted + sum(l.dcp) OVER w AS cp,
         a.debits_pending AS dq, a.credits_pending AS cq,
         a.debits_must_not_exceed_credits AS dmnec, a.credits_must_not_exceed_debits AS cmned
  FROM legs l JOIN ledger_accounts a ON a.id = l.aid
  WINDOW w AS (PARTITION BY l.aid ORDER BY l.n ROWS UNBOUNDED PRECEDING)
), verdict AS (
  SELECT count(*) = 2 * (SELECT count(*) FROM t)
     AND coalesce(bool_and(same_asset AND dp <= :max AND cp <= :max
                           AND (NOT dmnec OR dp + dq <= cp)
                           AND (NOT cmned OR cp + cq <= dp)), false)
     AND NOT EXISTS (SELECT 1 FROM ledger_transfers x JOIN t ON x.id = t.id)
     AND NOT EXISTS (SELECT 1 FROM ledger_failed_transfers f JOIN t ON f.id = t.id) AS ok
  FROM steps
), ins AS (
  INSERT INTO ledger_transfers ({_COLUMNS})
  SELECT t.id, t.dr, t.cr, t.amount, t.asset, 'single', NULL, NULL, 0, NULL, t.linked, t.code,
         t.ref, :now, d.dp, d.cp, d.dq, d.cq, c.dp, c.cp, c.dq, c.cq
  FROM t JOIN steps d ON d.n = t.n AND d.aid = t.dr JOIN steps c ON c.n = t.n AND c.aid = t.cr
  WHERE (SELECT ok FROM verdict)
  ORDER BY t.n  -- the sequence numbers follow the batch's order, as the snapshots do
  RETURNING id, seq
), upd AS (
  UPDATE ledger_accounts AS a
  SET debits_posted = a.debits_posted + s.ddp, credits_posted = a.credits_posted + s.dcp
  FROM (SELECT aid, sum(ddp) AS ddp, sum(dcp) AS dcp FROM legs GROUP BY aid) AS s
  WHERE a.id = s.aid AND (SELECT ok FROM verdict)
  RETURNING a.id, a.kind, a.debits_posted - s.ddp AS dp, a.credits_posted - s.dcp AS cp,
            a.debits_pending AS dq, a.credits_pending AS cq  -- as they were before the batch
)
SELECT (SELECT array_agg(i.seq ORDER BY t.n) FROM ins i JOIN t ON t.id = i.id) AS seqs,
       (SELECT array_agg(u.id ORDER BY u.id) FROM upd u) AS accounts,
       (SELECT array_agg(u.kind ORDER BY u.id) FROM upd u) AS kinds,
       (SELECT string_agg(concat_ws(',', u.dp, u.cp, u.dq, u.cq), ';' ORDER BY u.id)
        FROM upd u) AS balances
""").bindparams(
    bindparam("id", type_=ARRAY(String())), bindparam("asset", type_=ARRAY(String())),
    bindparam("code", type_=ARRAY(String())), bindparam("ref", type_=ARRAY(String())),
    bindparam("dr", type_=String()), bindparam("cr", type_=String()),
    bindparam("amount", type_=String()), bindparam("linked", type_=String()),
    bindparam("max", type_=Amount()),
    bindparam("now", type_=UtcDateTime()),
)


def int_literal(values: Iterable[int | None]) -> str:
    """Integers for a PostgreSQL array parameter as one array *literal*, ``{5,70,12}``, that
    the statement casts (``CAST(:x AS NUMERIC[])``): the driver's array encoder costs about a
    microsecond per element (several for binary NUMERIC), and a batch of 1,000 transfers binds
    thousands of them. The literal holds only ``str`` of ints: exact, nothing to quote."""
    return "{" + ",".join(map(str, values)) + "}"


def bool_literal(values: Iterable[bool]) -> str:
    """Booleans as one array literal, ``{t,f}``, for ``CAST(:x AS BOOLEAN[])``."""
    return "{" + ",".join("t" if v else "f" for v in values) + "}"


async def create_plain_batch(session: AsyncSession, specs: list[TransferSpec], *,
                             now: datetime, max_amount: int
                             ) -> tuple[list[Outcome], dict[int, Balances]] | None:
    """Create every transfer of ``specs`` (each accepted by :func:`is_plain` with
    ``linked_ok``, ids distinct, the last one not linked) on PostgreSQL if none is refused or
    stored already: the outcomes in order and the balances
    after the batch of the wallet accounts it moved. ``None`` when it wrote nothing and the
    general path must plan the batch. Does not commit."""
    accounts = sorted({a for s in specs for a in (s.debit_account_id, s.credit_account_id)
                       if a is not None})
    locked = (await session.execute(_BATCH_LOCK, {"accounts": int_literal(accounts)})).scalar()
    if locked != len(accounts):
        return None  # an account does not exist: the general path says which
    row = (await session.execute(_BATCH_PG, {
        "id": [s.id for s in specs],
        "dr": int_literal(s.debit_account_id for s in specs),
        "cr": int_literal(s.credit_account_id for s in specs),
        "amount": int_literal(s.amount for s in specs),
        "asset": [s.asset for s in specs], "code": [s.code for s in specs],
        "ref": [s.ref for s in specs],
        "linked": bool_literal(s.linked for s in specs),
        "max": max_amount, "now": now,
    })).one()
    if row.seqs is None:
        return None
    # Every account's balances before the batch; replaying the batch in order, as the
    # database did, gives each transfer's snapshots and, at the end, the balances after it.
    running: dict[int | None, list[int]] = {
        aid: [int(v) for v in before.split(",")]
        for aid, before in zip(row.accounts, row.balances.split(";"), strict=True)}
    outcomes = []
    for i, (s, seq) in enumerate(zip(specs, row.seqs, strict=True)):
        d, c = running[s.debit_account_id], running[s.credit_account_id]
        amount = s.amount
        assert amount is not None and s.asset is not None
        d[0] += amount
        c[1] += amount
        outcomes.append(Outcome(i, s.id, Result.CREATED, Transfer(
            s.id, s.debit_account_id, s.credit_account_id,  # type: ignore[arg-type]
            amount, s.asset, TransferKind.SINGLE, now, None, 0, None, None, s.linked, s.code,
            s.ref, Balances(*d), Balances(*c), seq)))
    kinds = dict(zip(row.accounts, row.kinds, strict=True))
    wallets = {aid: Balances(*running[aid]) for aid in _wallets(kinds)}
    return outcomes, wallets
