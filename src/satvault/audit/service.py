"""The audit log's service: record a row, seal rows into the chain, verify it, anchor its head.

Writing is cheap and lock-free: :func:`record` only INSERTs a row (its id from a sequence)
with no hash, in the caller's unit of work. Nothing in a request or a money path waits for
the chain.

Sealing is where the order is fixed. :func:`seal` (run every few seconds by the ``audit``
worker, by ``satvault audit seal``, and before every verify and anchor) takes one lock (a
PostgreSQL transaction-level advisory lock; SQLite's single writer is the lock there), gives
the unsealed rows, in id order, the next ``seq``, the previous row's hash as ``prev_hash`` and
their own ``hash``. It seals only rows no transaction still in flight can precede:

* The sealing rule. On PostgreSQL the sealer first reads the sequences' last values ``L``
  (every id or transfer ``seq`` handed out so far, committed or not), then waits until every
  transaction that was open at that moment has ended (their ``virtualxid`` locks in
  ``pg_locks``; a transaction holds its own for its whole life). Every row numbered ``<= L``
  is then committed or gone for good, and only those are sealed: a row that commits late
  with a lower id is never overtaken by a sealed higher one, so ``seq`` order is id order.
  If some transaction stays open past the wait (``fence_timeout``), this round seals nothing
  and the next round tries again. On SQLite every transaction takes the write lock up front
  (``BEGIN IMMEDIATE``), so inside the sealer's own transaction nothing else is in flight.
* The ledger is chained by the same sealer, not in its hot path: each round appends a
  ``ledger.sealed`` row whose ``after`` holds the range of ``ledger_transfers.seq`` since the
  previous one, its count and a digest of those rows (``chain.TransferDigest``); that row is
  sealed like any other (on PostgreSQL by the next fence, inside the same :func:`seal` call).
  ``ledger_transfers`` has its own trigger: no DELETE, and an UPDATE may only resolve a
  pending hold's ``state``, the one column a transfer ever changes (and one the digest leaves
  out).

The database refuses UPDATE (except the sealer's one-time setting of ``seq``, ``prev_hash``
and ``hash`` from NULL) and DELETE on ``audit_events`` (migration 0017's triggers).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    Integer,
    String,
    Table,
    bindparam,
    column,
    func,
    select,
    table,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.chain import (
    GENESIS,
    LEDGER_SEALED,
    TRANSFER_FIELDS,
    Break,
    ChainRow,
    LedgerRange,
    TransferDigest,
    moment,
    parse_range,
    row_hash,
)
from satvault.audit.models import AnchorStatus, AuditAnchor, AuditEvent
from satvault.db import (
    Amount,
    IdInt,
    UtcDateTime,
    sequence_fence,
    sequence_snapshot,
    utcnow,
)
from satvault.kernel.errors import InvalidInput
from satvault.logs import get_logger

__all__ = ["ANCHOR", "AnchorCheck", "Head", "Sealed", "Verification", "actor_spellings",
           "anchor", "head", "list_events", "record", "seal", "settled_id", "verify",
           "verify_anchor"]

log = get_logger(__name__)

ANCHOR = "audit.anchor"
SEALER = "satvault"
_LOCK_KEY = 0x5A7A_A0D1  # pg_advisory_xact_lock: one sealer at a time
_ROWS_PER_ROUND = 5000
_TRANSFERS_PER_ROUND = 20000
_PAGE = 1000

# The ledger's table as the chain reads it. The audit package sits below the ledger (every
# domain writes to it), so it names the table rather than importing the ledger's model.
_amount_cols = [c for c in TRANSFER_FIELDS if c == "amount" or c[:3] in ("dr_", "cr_")]
_transfers = table(
    "ledger_transfers",
    column("seq", IdInt), column("id", String), column("debit_account_id", IdInt),
    column("credit_account_id", IdInt), column("asset", String), column("kind", String),
    column("pending_id", String), column("timeout_seconds", Integer),
    column("expires_at", UtcDateTime()), column("linked", Boolean), column("code", String),
    column("ref", String), column("created_at", UtcDateTime()),
    *[column(c, Amount()) for c in _amount_cols],
)
_events: Table = AuditEvent.__table__  # type: ignore[assignment]
_ROW_COLS = (_events.c.id, _events.c.at, _events.c.actor, _events.c.action, _events.c.object,
             _events.c.state_before, _events.c.state_after, _events.c.seq,
             _events.c.prev_hash, _events.c.hash)


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str)


def _limit(name: str, value: str, most: int) -> str:
    if not isinstance(value, str) or len(value) > most:
        raise InvalidInput(f"audit {name} must be a string of at most {most} characters")
    return value


async def record(session: AsyncSession, *, actor: str, action: str, object: str = "",
                 before: Any = None, after: Any = None, at: datetime | None = None) -> None:
    """Append one audit row in the caller's unit of work (an INSERT, no lock, no hash yet:
    :func:`seal` chains it). ``before``/``after`` are JSON-able values (None for "none")."""
    if not action:
        raise InvalidInput("an audit row needs an action")
    session.add(AuditEvent(
        at=at or utcnow(), actor=_limit("actor", actor, 80), action=_limit("action", action, 80),
        object=_limit("object", object, 120), state_before=_json(before),
        state_after=_json(after)))


# ---------------------------------------------------------------------------------- reading


@dataclass(frozen=True, slots=True)
class Head:
    """The last sealed row: what an anchor publishes."""

    seq: int
    hash: str
    at: datetime | None
    id: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash,
                "at": moment(self.at) if self.at else None, "id": self.id}


async def head(session: AsyncSession) -> Head | None:
    row = (await session.execute(
        select(_events.c.seq, _events.c.hash, _events.c.at, _events.c.id)
        .where(_events.c.seq.is_not(None)).order_by(_events.c.seq.desc()).limit(1)
    )).first()
    return None if row is None else Head(int(row.seq), str(row.hash), row.at, int(row.id))


async def settled_id(session: AsyncSession) -> int | None:
    """The highest audit id at or below which every row is committed or gone for good: a
    reader paging by id that stops there never passes a row still to appear (found from
    outside: on PostgreSQL an id is taken at INSERT and seen at COMMIT, so the admin API
    returned a higher row while a lower one's transaction was still open, and a client paging
    on past it never saw the lower one). None on SQLite, where every writer takes the lock
    up front and ids commit in order.

    On PostgreSQL, without waiting: the sequence's last value when no other transaction is
    open just after it was read (they have all ended, so this statement's successors, under
    READ COMMITTED, see every row up to it); otherwise the sealed head's id, which the sealer
    chose behind the same fence. Rows past it show up at the latest when they are sealed."""
    if _dialect(session) != "postgresql":
        return None
    last, open_now = await sequence_snapshot(session, "audit_events", "id")
    if not open_now:
        return last
    top = await head(session)
    return top.id if top else 0


def _chain_row(r: Any) -> ChainRow:
    return ChainRow(int(r.id), r.at, r.actor, r.action, r.object, r.state_before,
                    r.state_after, r.seq, r.prev_hash, r.hash)


def actor_spellings(actor: str) -> list[str]:
    """The ways the log spells one actor: a user is ``usr_…`` in some rows and
    ``user:usr_…`` in others (found from outside: filtering the log by a person missed the
    rows spelled the other way, their case decisions among them), so either finds both."""
    bare = actor.removeprefix("user:")
    return [bare, f"user:{bare}"] if bare.startswith("usr_") else [actor]


async def list_events(session: AsyncSession, *, after: int = 0, limit: int = 100,
                      actor: str | None = None, action: str | None = None,
                      object: str | None = None, since: datetime | None = None,
                      until: datetime | None = None, before: int | None = None,
                      upto: int | None = None, newest_first: bool = False
                      ) -> list[dict[str, Any]]:
    """Rows with id > ``after`` in id order (unsealed ones have no seq/hash yet); ``before``
    and ``after`` parsed, and the exact stored texts the hash covers beside them.

    Filters (all optional, combined): ``actor`` (a user either way it is spelled:
    :func:`actor_spellings`) and ``object`` exactly, ``action`` exactly or
    as a prefix when it ends in ``.`` (``wallet.`` for every wallet action), ``since`` and
    ``until`` (at >= since, at < until), ``before`` (id < before), ``upto`` (id <= upto: a
    pager gives :func:`settled_id` to never pass a row still to commit). ``newest_first`` orders
    by id descending (then page with ``before`` = the last id seen)."""
    if not 1 <= limit <= 1000:
        raise InvalidInput("limit must be between 1 and 1000")
    q = select(*_ROW_COLS).where(_events.c.id > after)
    if actor:
        q = q.where(_events.c.actor.in_(actor_spellings(actor)))
    if action:
        q = q.where(_events.c.action.startswith(action, autoescape=True)
                    if action.endswith(".") else _events.c.action == action)
    if object:
        q = q.where(_events.c.object == object)
    if since is not None:
        q = q.where(_events.c.at >= since)
    if until is not None:
        q = q.where(_events.c.at < until)
    if before is not None:
        q = q.where(_events.c.id < before)
    if upto is not None:
        q = q.where(_events.c.id <= upto)
    order = _events.c.id.desc() if newest_first else _events.c.id
    rows = (await session.execute(q.order_by(order).limit(limit))).all()
    return [{"id": r.id, "seq": r.seq, "at": moment(r.at), "actor": r.actor,
             "action": r.action, "object": r.object, "before": json.loads(r.state_before),
             "after": json.loads(r.state_after), "before_json": r.state_before,
             "after_json": r.state_after, "prev_hash": r.prev_hash, "hash": r.hash}
            for r in rows]


# ---------------------------------------------------------------------------------- sealing


@dataclass(frozen=True, slots=True)
class Sealed:
    rows: int
    transfers: int
    head: Head | None
    waiting: bool = False  # a transaction stayed open past the fence: nothing sealed

    def as_dict(self) -> dict[str, Any]:
        return {"rows": self.rows, "transfers": self.transfers, "waiting": self.waiting,
                "head": self.head.as_dict() if self.head else None}


def _dialect(session: AsyncSession) -> str:
    return session.get_bind().dialect.name


async def _fence(sessions: async_sessionmaker[AsyncSession], timeout: float
                 ) -> tuple[int, int] | None:
    """(last audit id, last transfer seq) such that every row numbered up to them is
    committed or rolled back for good; None if a transaction outlived ``timeout``."""
    fence = await sequence_fence(
        sessions, (("audit_events", "id"), ("ledger_transfers", "seq")), timeout=timeout,
        poll=0.05)
    if fence is None:
        log.warning("audit_seal_waiting", note="a transaction outlived the fence's wait")
        return None
    return fence[0], fence[1]


async def _last_ledger_range(session: AsyncSession) -> int:
    """Where the last ledger range the sealer wrote ends: only its own, sealed rows count,
    as :func:`verify` counts them (found from outside: any INSERT, which the triggers allow,
    of a row named ``ledger.sealed`` with a huge ``to_seq`` made the sealer skip every later
    transfer, and verify still said ok)."""
    after = (await session.execute(
        select(_events.c.state_after).where(_events.c.action == LEDGER_SEALED,
                                            _events.c.actor == SEALER,
                                            _events.c.seq.is_not(None))
        .order_by(_events.c.id.desc()).limit(1)
    )).scalar_one_or_none()
    rng = parse_range(after) if after is not None else None
    return rng.to_seq if rng else 0


def _transfer_rows(lo: int, hi: int | None, limit: int | None = None) -> Any:
    q = select(*(_transfers.c[c] for c in TRANSFER_FIELDS)).where(_transfers.c.seq > lo)
    if hi is not None:
        q = q.where(_transfers.c.seq <= hi)
    q = q.order_by(_transfers.c.seq)
    return q.limit(limit) if limit else q


async def _seal_ledger(session: AsyncSession, upto: int | None) -> int:
    """Append a ``ledger.sealed`` row for the transfers since the last one (up to ``upto``,
    or all of them on SQLite); returns how many it covers."""
    lo = await _last_ledger_range(session)
    if upto is None:
        upto = int((await session.execute(select(func.max(_transfers.c.seq)))).scalar() or 0)
    if upto <= lo:
        return 0
    rows = (await session.execute(_transfer_rows(lo, upto, _TRANSFERS_PER_ROUND))).mappings()
    digest = TransferDigest().extend(rows)
    if digest.count == 0:
        return 0
    hi = digest.last_seq if digest.count == _TRANSFERS_PER_ROUND else upto
    await record(session, actor=SEALER, action=LEDGER_SEALED, object="ledger_transfers",
                 after=LedgerRange(lo, hi, digest.count, digest.hexdigest()).as_dict())
    await session.flush()
    return digest.count


async def _seal_rows(session: AsyncSession, upto: int | None) -> tuple[int, Head | None]:
    top = await head(session)
    seq, prev, top_id = (top.seq, top.hash, top.id) if top else (0, GENESIS, 0)
    q = select(*_ROW_COLS).where(_events.c.seq.is_(None), _events.c.id > top_id)
    if upto is not None:
        q = q.where(_events.c.id <= upto)
    rows = (await session.execute(q.order_by(_events.c.id).limit(_ROWS_PER_ROUND))).all()
    if not rows:
        return 0, top
    params = []
    for r in rows:
        seq += 1
        sealed = row_hash(_chain_row(r), seq=seq, prev=prev)
        params.append({"b_id": r.id, "b_seq": seq, "b_prev": prev, "b_hash": sealed})
        prev = sealed
    await session.execute(
        update(_events)
        .where(_events.c.id == bindparam("b_id"), _events.c.seq.is_(None))
        .values(seq=bindparam("b_seq"), hash=bindparam("b_hash"),
                prev_hash=bindparam("b_prev")),
        params,
    )
    last = rows[-1]
    return len(rows), Head(seq, prev, last.at, int(last.id))


async def seal(sessions: async_sessionmaker[AsyncSession], *, fence_timeout: float = 5.0
               ) -> Sealed:
    """One sealing round (its own transactions; see the module docstring for the rule)."""
    async with sessions() as probe:
        dialect = _dialect(probe)
    if dialect != "postgresql":
        async with sessions() as s, s.begin():
            transfers = await _seal_ledger(s, None)
            rows, top = await _seal_rows(s, None)
        return Sealed(rows, transfers, top)
    bounds = await _fence(sessions, fence_timeout)
    if bounds is None:
        async with sessions() as s:
            return Sealed(0, 0, await head(s), waiting=True)
    async with sessions() as s, s.begin():
        await s.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
        transfers = await _seal_ledger(s, bounds[1])
    # The ledger.sealed row just committed is numbered past the first fence: fence again.
    bounds = await _fence(sessions, fence_timeout)
    if bounds is None:
        async with sessions() as s:
            return Sealed(0, transfers, await head(s), waiting=True)
    async with sessions() as s, s.begin():
        await s.execute(select(func.pg_advisory_xact_lock(_LOCK_KEY)))
        rows, top = await _seal_rows(s, bounds[0])
    return Sealed(rows, transfers, top)


async def seal_all(sessions: async_sessionmaker[AsyncSession], *, fence_timeout: float = 5.0
                   ) -> Sealed:
    """Seal rounds until nothing is left that can be sealed now (a backlog takes several)."""
    rows = transfers = 0
    while True:
        done = await seal(sessions, fence_timeout=fence_timeout)
        rows += done.rows
        transfers += done.transfers
        if done.waiting or (done.rows < _ROWS_PER_ROUND
                            and done.transfers < _TRANSFERS_PER_ROUND):
            return Sealed(rows, transfers, done.head, done.waiting)


# -------------------------------------------------------------------------------- verifying


@dataclass(frozen=True, slots=True)
class Verification:
    ok: bool
    rows: int
    transfers: int
    unsealed: int
    head: Head | None
    broken: Break | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "transfers": self.transfers,
                "unsealed": self.unsealed, "head": self.head.as_dict() if self.head else None,
                "broken": self.broken.as_dict() if self.broken else None,
                **({"error": str(self.broken)} if self.broken else {})}


async def _check_range(session: AsyncSession, r: ChainRow, lo: int) -> tuple[int, Break | None]:
    rng = parse_range(r.after)
    if rng is None:
        return 0, Break(r.id, r.seq, "a ledger.sealed row names no transfer range",
                        found=r.after)
    if rng.from_seq != lo:
        return 0, Break(r.id, r.seq, "ledger ranges are not contiguous",
                        expected=f"from_seq {lo}", found=f"from_seq {rng.from_seq}")
    rows = await session.stream(_transfer_rows(rng.from_seq, rng.to_seq))
    digest = TransferDigest()
    async for m in rows.mappings():
        digest.add(m)
    if (digest.count, digest.hexdigest()) != (rng.count, rng.digest):
        return 0, Break(
            r.id, r.seq, f"ledger transfers seq {rng.from_seq + 1}..{rng.to_seq} differ from "
            "what this row sealed (a transfer was changed, added or removed)",
            expected=f"{rng.count} transfers, digest {rng.digest}",
            found=f"{digest.count} transfers, digest {digest.hexdigest()}")
    return rng.count, None


async def verify(session: AsyncSession, *,
                 progress: Callable[[int, int], None] | None = None,
                 upto: int | None = None) -> Verification:
    """Walk the sealed chain from its first row: every seq in turn, each ``prev_hash`` the
    previous ``hash``, each hash recomputed, ids increasing, each ``ledger.sealed`` range
    contiguous and re-hashed from ``ledger_transfers``. Stops at the first break, or after
    the row ``upto`` (then the rows past it are not looked at)."""
    total = int((await session.execute(
        select(func.count()).where(_events.c.seq.is_not(None)))).scalar_one())
    unsealed = int((await session.execute(
        select(func.count()).where(_events.c.seq.is_(None)))).scalar_one())
    expected, prev, last_id, ledger_to, transfers = 1, GENESIS, 0, 0, 0
    last: ChainRow | None = None

    def result(broken: Break | None) -> Verification:
        top = Head(last.seq or 0, last.hash or "", last.at, last.id) if last else None
        return Verification(broken is None, expected - 1, transfers, unsealed, top, broken)

    while True:
        q = select(*_ROW_COLS).where(_events.c.seq >= expected)
        if upto is not None:
            q = q.where(_events.c.seq <= upto)
        page = (await session.execute(q.order_by(_events.c.seq).limit(_PAGE))).all()
        if not page:
            break
        for raw in page:
            r = _chain_row(raw)
            if r.seq != expected:
                return result(Break(r.id, r.seq, "a sealed row is missing before this one",
                                    expected=f"seq {expected}", found=f"seq {r.seq}"))
            if r.prev_hash != prev:
                return result(Break(r.id, r.seq, "prev_hash is not the previous row's hash",
                                    expected=prev, found=str(r.prev_hash)))
            if r.id <= last_id:
                return result(Break(r.id, r.seq, "ids do not increase along the chain",
                                    expected=f"id > {last_id}", found=f"id {r.id}"))
            computed = row_hash(r, seq=expected, prev=prev)
            if computed != r.hash:
                return result(Break(
                    r.id, r.seq, "the row does not match its hash: it was changed after "
                    "sealing", expected=str(r.hash), found=computed))
            if r.action == LEDGER_SEALED and r.actor == SEALER:
                count, broken = await _check_range(session, r, ledger_to)
                if broken is not None:
                    return result(broken)
                ledger_to = parse_range(r.after).to_seq  # type: ignore[union-attr]
                transfers += count
            prev, last_id, last = computed, r.id, r
            expected += 1
            if progress is not None:
                progress(expected - 1, total)
    if upto is not None:
        return result(None)
    behind = (await session.execute(
        select(func.min(_events.c.id)).where(_events.c.seq.is_(None),
                                             _events.c.id < last_id))).scalar()
    if behind is not None:
        return result(Break(int(behind), None, "an unsealed row sits behind the sealed chain "
                            "(inserted out of order)", expected=f"id > {last_id}",
                            found=f"id {behind}"))
    stray = (await session.execute(
        select(func.min(_events.c.id)).where(_events.c.seq.is_(None),
                                             _events.c.hash.is_not(None)))).scalar()
    if stray is not None:
        return result(Break(int(stray), None, "a row has a hash but no place in the chain"))
    return result(None)


# -------------------------------------------------------------------------------- anchoring


async def anchor(sessions: async_sessionmaker[AsyncSession], *, actor: str,
                 fence_timeout: float = 5.0, onchain: bool = False) -> Head:
    """Seal, then record the head (seq, hash, time) as an ``audit.anchor`` row, which the
    next round chains too; returns the head for the operator to publish elsewhere.

    ``onchain``: also ask for the head to be committed in the next sweep's ``OP_RETURN``
    (an ``audit_anchors`` row in ``requested``; an older request no sweep carried yet is
    superseded by this newer head, which vouches for everything the older one did)."""
    await seal_all(sessions, fence_timeout=fence_timeout)
    async with sessions() as s, s.begin():
        top = await head(s)
        if onchain and top is None:
            raise InvalidInput("nothing is sealed yet: there is no head to anchor on chain")
        top = top or Head(0, GENESIS, None)
        await record(s, actor=actor, action=ANCHOR, object=f"audit_events.seq={top.seq}",
                     after={**top.as_dict(), **({"onchain": True} if onchain else {})})
        if onchain:
            await s.execute(update(AuditAnchor).where(
                AuditAnchor.status == AnchorStatus.REQUESTED).values(
                status=AnchorStatus.SUPERSEDED))
            s.add(AuditAnchor(seq=top.seq, hash=top.hash, status=AnchorStatus.REQUESTED,
                              requested_by=actor[:80], requested_at=utcnow()))
    await seal(sessions, fence_timeout=fence_timeout)
    return top


@dataclass(frozen=True, slots=True)
class AnchorCheck:
    """An on-chain anchor (seq, hash) held against the chain as it is now."""

    ok: bool
    seq: int
    anchored: str  # the hash the transaction commits to
    found: str | None  # the chain's hash at that seq, recomputed (None: not reached)
    rows: int  # rows re-hashed from the first one
    broken: Break | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seq": self.seq, "anchored_hash": self.anchored,
                "chain_hash": self.found, "rows_checked": self.rows,
                "broken": self.broken.as_dict() if self.broken else None,
                **({"error": str(self.broken)} if self.broken else {})}


async def verify_anchor(session: AsyncSession, *, seq: int, hash: str) -> AnchorCheck:
    """Re-hash the chain from its first row up to ``seq`` and compare that row's hash with
    the one an anchor committed to. A row changed behind the triggers breaks the walk (and
    is named); a chain rewritten *and re-hashed* walks cleanly but ends on another hash."""
    v = await verify(session, upto=seq)
    if v.broken is not None:
        return AnchorCheck(False, seq, hash, None, v.rows, v.broken)
    top = v.head
    if top is None or top.seq < seq:
        return AnchorCheck(False, seq, hash, None, v.rows, Break(
            top.id if top else 0, seq, f"the chain has {v.rows} sealed rows; the anchor "
            f"commits to seq {seq} (sealed rows were removed)"))
    if top.hash != hash:
        return AnchorCheck(False, seq, hash, top.hash, v.rows, Break(
            top.id, seq, "the chain's hash at the anchored row is not the one committed on "
            "chain: the log up to this row was rewritten (and re-hashed) after the anchor",
            expected=hash, found=top.hash))
    return AnchorCheck(True, seq, hash, top.hash, v.rows)
