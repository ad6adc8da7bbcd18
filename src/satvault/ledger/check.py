"""``satvault ledger check``: prove the books balance, from the rows alone.

Checks, each naming the rows that fail it:

1. per asset, Σ debits = Σ credits over all accounts, posted and pending separately;
2. every account's four stored balances equal the sums of its transfers
   (posted = single + post transfers; pending = pending transfers whose hold is still open);
3. no account carrying a no-overdraft flag is beyond its limit, and no balance is negative;
4. every hold is live, posted, voided or expired, with exactly one resolving transfer of the
   matching kind (and none while live); a hold overdue by more than ``grace`` is reported;
5. every transfer's asset is its accounts' asset.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from satvault.db import utcnow
from satvault.ledger.models import LedgerAccount, LedgerTransfer

__all__ = ["CheckReport", "Problem", "check_ledger"]

A = LedgerAccount.__table__
T = LedgerTransfer.__table__
_RESOLVED_BY = {"posted": "post", "voided": "void", "expired": "expire"}


@dataclass(frozen=True, slots=True)
class Problem:
    check: str
    message: str
    rows: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "message": self.message, "rows": list(self.rows)}


@dataclass(slots=True)
class CheckReport:
    problems: list[Problem] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": [p.as_dict() for p in self.problems],
                "stats": self.stats}


async def _sums(session: AsyncSession, side: Any, where: Any) -> dict[int, int]:
    rows = await session.execute(
        select(side, func.sum(T.c.amount)).where(where).group_by(side)
    )
    return {r[0]: int(r[1]) for r in rows}


async def check_ledger(
    session: AsyncSession, *, now: datetime | None = None, grace: timedelta = timedelta(minutes=10)
) -> CheckReport:
    now = now or utcnow()
    report = CheckReport()
    problems = report.problems
    accounts = (await session.execute(select(A))).all()

    totals: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0])
    for a in accounts:
        t = totals[a.asset]
        t[0] += a.debits_posted
        t[1] += a.credits_posted
        t[2] += a.debits_pending
        t[3] += a.credits_pending
    for asset, (dp, cp, dq, cq) in sorted(totals.items()):
        if dp != cp:
            problems.append(Problem("double_entry", f"{asset}: posted debits {dp} != credits {cp}"))
        if dq != cq:
            problems.append(Problem("double_entry",
                                    f"{asset}: pending debits {dq} != credits {cq}"))

    posted = T.c.kind.in_(("single", "post"))
    held = (T.c.kind == "pending") & (T.c.state == "pending")
    sums = {
        "debits_posted": await _sums(session, T.c.debit_account_id, posted),
        "credits_posted": await _sums(session, T.c.credit_account_id, posted),
        "debits_pending": await _sums(session, T.c.debit_account_id, held),
        "credits_pending": await _sums(session, T.c.credit_account_id, held),
    }
    for a in accounts:
        for col, by_account in sums.items():
            stored, derived = getattr(a, col), by_account.get(a.id, 0)
            if stored != derived:
                problems.append(Problem(
                    "stored_balance",
                    f"account {a.id} ({a.name}) {col} is {stored}, its transfers sum to {derived}",
                    (f"ledger_accounts.id={a.id}",)))
            if stored < 0:
                problems.append(Problem("negative_balance", f"account {a.id} {col} is {stored}",
                                        (f"ledger_accounts.id={a.id}",)))
        if a.debits_must_not_exceed_credits and (
            a.debits_posted + a.debits_pending > a.credits_posted
        ):
            problems.append(Problem("overdraft", f"account {a.id} ({a.name}) is overdrawn",
                                    (f"ledger_accounts.id={a.id}",)))
        if a.credits_must_not_exceed_debits and (
            a.credits_posted + a.credits_pending > a.debits_posted
        ):
            problems.append(Problem("overdraft", f"account {a.id} ({a.name}) exceeds its debits",
                                    (f"ledger_accounts.id={a.id}",)))

    await _check_holds(session, report, now, grace)

    asset_of = {a.id: a.asset for a in accounts}
    rows = await session.execute(select(T.c.id, T.c.asset, T.c.debit_account_id,
                                        T.c.credit_account_id))
    n_transfers = 0
    for r in rows:
        n_transfers += 1
        if not (asset_of.get(r.debit_account_id) == asset_of.get(r.credit_account_id) == r.asset):
            problems.append(Problem("asset", f"transfer {r.id!r} moves {r.asset} between accounts "
                                    "of another asset", (f"ledger_transfers.id={r.id}",)))
    report.stats.update(accounts=len(accounts), transfers=n_transfers,
                        assets={k: {"posted": v[0], "pending": v[2]} for k, v in totals.items()})
    return report


async def _check_holds(session: AsyncSession, report: CheckReport, now: datetime,
                       grace: timedelta) -> None:
    R = aliased(T)
    rows = await session.execute(
        select(T.c.id, T.c.state, T.c.amount, T.c.expires_at, R.c.id.label("rid"),
               R.c.kind.label("rkind"), R.c.amount.label("ramount"))
        .select_from(T.outerjoin(R, R.c.pending_id == T.c.id))
        .where(T.c.kind == "pending")
    )
    live = 0
    for r in rows:
        ref = (f"ledger_transfers.id={r.id}",)
        if r.state == "pending":
            live += 1
            if r.rid is not None:
                report.problems.append(Problem(
                    "hold", f"hold {r.id!r} is open but resolved by {r.rid!r}", ref))
            elif r.expires_at is not None and r.expires_at + grace < now:
                report.problems.append(Problem(
                    "hold", f"hold {r.id!r} expired at {r.expires_at.isoformat()} "
                    "and was never released", ref))
        elif r.state in _RESOLVED_BY:
            if r.rkind != _RESOLVED_BY[r.state]:
                report.problems.append(Problem(
                    "hold", f"hold {r.id!r} is {r.state} but resolved by {r.rkind!r}", ref))
            elif r.rkind == "post" and r.ramount > r.amount:
                report.problems.append(Problem("hold", f"hold {r.id!r} posted beyond its amount",
                                               ref))
            elif r.rkind != "post" and r.ramount != r.amount:
                report.problems.append(Problem("hold", f"hold {r.id!r} released a different "
                                               "amount than it held", ref))
        else:
            report.problems.append(Problem("hold", f"hold {r.id!r} has state {r.state!r}", ref))
    stray = await session.execute(
        select(T.c.id).where(
            ((T.c.kind != "pending") & T.c.state.is_not(None))
            | (T.c.kind.in_(("post", "void", "expire")) & T.c.pending_id.is_(None))
        )
    )
    for (tid,) in stray:
        report.problems.append(Problem("hold", f"transfer {tid!r} has an impossible hold link",
                                       (f"ledger_transfers.id={tid}",)))
    report.stats["live_holds"] = live
