"""Working the review queue (issue 12 §2): the cases that review and reject decisions open.

A case goes ``pending`` → ``investigating`` → ``closed``; it is assigned to an admin, and its
history is an insert-only list of events (notes, attachments by reference, status changes,
assignments, the decision, SAR steps). Closing it records a resolution (``confirmed_risk`` or
``false_positive``) and a money decision, and the money decision is the only way the money a
review decision held moves:

=================  ===========================================================================
subject            money decision
=================  ===========================================================================
withdrawal held    ``release``: it goes on as an approved one would (the ``held`` handler the
(review)           caller passes: :class:`satvault.withdrawals.review.HeldWithdrawals`);
                   ``return``: its hold voided, the withdrawal cancelled, the money the
                   customer's again
refused payment    ``none``: nothing was held (the payment was refused before any hold)
(reject)
deposit            not in this build (frozen deposits are decided elsewhere, see
                   :func:`_decide_money`)
=================  ===========================================================================

Every action locks the case row (``SELECT … FOR UPDATE`` on PostgreSQL; SQLite serialises
writers), so two admins deciding at once act one after the other: the second finds the case
closed. A decision repeated with the same resolution and money (a retried request) answers
with the stored outcome and moves nothing; a different one is refused. ``expected_version``
(optional) refuses an action on a case that changed since the caller read it. Every action is
audited. Functions take a session and never commit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User, Wallet
from satvault.db import utcnow
from satvault.kernel.errors import InvalidInput, NotFound, StaleVersion
from satvault.risk.audit import audit
from satvault.risk.errors import CaseRefused, DeciderIsSubject
from satvault.risk.frozen import keep_frozen_deposit, release_frozen_deposit
from satvault.risk.models import (
    CaseEventKind,
    CaseStatus,
    Money,
    Resolution,
    RiskCase,
    RiskCaseEvent,
    RiskDecision,
    RiskSar,
)
from satvault.risk.rules import Outcome

__all__ = [
    "CaseDecided",
    "HeldWithdrawals",
    "add_note",
    "assign",
    "attach",
    "case_dict",
    "close_case",
    "get_case",
    "investigate",
    "list_cases",
    "lock_case",
    "record_event",
    "refuse_subject",
]

_HEX = frozenset("0123456789abcdef")
DEPOSIT_MONEY = ("a frozen deposit is released to the wallet ('release') or kept frozen "
                 "('keep'); returning a deposit to its sender is not built")


class HeldWithdrawals(Protocol):
    """What moves a withdrawal held for review (it lives above this layer)."""

    async def release(self, session: AsyncSession, *, withdrawal_id: str,
                      actor: str) -> dict[str, Any]: ...

    async def give_back(self, session: AsyncSession, *, withdrawal_id: str, actor: str,
                        reason: str) -> dict[str, Any]: ...


@dataclass(frozen=True, slots=True)
class CaseDecided:
    case: dict[str, Any]
    acted: bool  # False: a repeat of the decision already taken, nothing moved
    effect: dict[str, Any] = field(default_factory=dict)

    @property
    def wake_payer(self) -> bool:
        """A Lightning payment is now queued for the node."""
        return self.effect.get("method") == "lightning" and self.effect.get("status") == \
            "pending"


def case_dict(c: RiskCase, d: RiskDecision | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": c.id, "status": c.status.value, "wallet_id": c.wallet_id,
        "decision_id": c.decision_id, "reason": c.reason, "assignee": c.assignee,
        "resolution": c.resolution.value if c.resolution else None,
        "money": c.money.value if c.money else None, "closed_by": c.closed_by,
        "closed_at": c.closed_at.isoformat() if c.closed_at else None,
        "created_at": c.created_at.isoformat(), "updated_at": c.updated_at.isoformat(),
        "version": c.version}
    if d is not None:
        out["decision"] = {"outcome": d.outcome.value, "score": d.score,
                           "sanctioned": d.sanctioned, "amount_msat": int(d.amount_msat),
                           "subject_type": d.subject_type, "subject_id": d.subject_id,
                           "at": d.at.isoformat()}
    return out


def _event_dict(e: RiskCaseEvent) -> dict[str, Any]:
    return {"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "kind": e.kind.value,
            "text": e.text, "uri": e.uri, "sha256": e.sha256, "data": json.loads(e.data)}


async def list_cases(session: AsyncSession, *, status: CaseStatus | None = None,
                     assignee: str | None = None, wallet_id: str | None = None,
                     limit: int = 100) -> list[dict[str, Any]]:
    """Cases, newest first, with their decision's outcome, subject and amount."""
    q = select(RiskCase, RiskDecision).join(RiskDecision,
                                            RiskDecision.id == RiskCase.decision_id)
    if status is not None:
        q = q.where(RiskCase.status == status)
    if assignee is not None:
        q = q.where(RiskCase.assignee == assignee)
    if wallet_id is not None:
        q = q.where(RiskCase.wallet_id == wallet_id)
    rows = (await session.execute(q.order_by(RiskCase.created_at.desc(), RiskCase.id)
                                  .limit(max(1, min(limit, 500))))).all()
    return [case_dict(c, d) for c, d in rows]


async def get_case(session: AsyncSession, case_id: str) -> dict[str, Any]:
    """The case, its decision, its events in order and its SAR (if drafted)."""
    c = await session.get(RiskCase, case_id)
    if c is None:
        raise NotFound(f"risk case {case_id!r} not found")
    d = await session.get(RiskDecision, c.decision_id)
    events = (await session.execute(select(RiskCaseEvent).where(
        RiskCaseEvent.case_id == case_id).order_by(RiskCaseEvent.id))).scalars()
    sar = (await session.execute(select(RiskSar.id, RiskSar.status, RiskSar.filed_reference)
                                 .where(RiskSar.case_id == case_id))).one_or_none()
    out = case_dict(c, d)
    out["events"] = [_event_dict(e) for e in events]
    out["sar"] = None if sar is None else {"id": sar[0], "status": sar[1].value,
                                           "filed_reference": sar[2]}
    return out


async def lock_case(session: AsyncSession, case_id: str, *, expected_version: int | None = None,
                  open_only: bool = True) -> RiskCase:
    c = (await session.execute(select(RiskCase).where(RiskCase.id == case_id)
                               .with_for_update().execution_options(populate_existing=True))
         ).scalar_one_or_none()
    if c is None:
        raise NotFound(f"risk case {case_id!r} not found")
    if open_only and c.status == CaseStatus.CLOSED:
        raise CaseRefused(f"case {case_id} is closed ({_closed_as(c)}): a closed case "
                          "does not change")
    if expected_version is not None and expected_version != c.version:
        raise StaleVersion(f"case {case_id} changed meanwhile (version {c.version}, not "
                               f"{expected_version}): read it again")
    return c


def _closed_as(c: RiskCase) -> str:
    return f"{c.resolution.value if c.resolution else '?'}, money " \
           f"{c.money.value if c.money else '?'}"


async def record_event(session: AsyncSession, c: RiskCase, *, actor: str,
                       kind: CaseEventKind, text: str = "", uri: str | None = None,
                       sha256: str | None = None, data: dict[str, Any] | None = None) -> None:
    """One history row of ``c`` (insert-only) and its audit row."""
    session.add(RiskCaseEvent(case_id=c.id, at=utcnow(), actor=actor[:80], kind=kind,
                              text=text, uri=uri, sha256=sha256,
                              data=json.dumps(data or {}, sort_keys=True, default=str)))
    await session.flush()
    await audit(session, actor=actor, action=f"risk.case.{kind.value}",
                subject=f"risk_case:{c.id}",
                after={"text": text[:500], "uri": uri, "sha256": sha256, **(data or {})})


def _touch(c: RiskCase) -> None:
    c.updated_at, c.version = utcnow(), c.version + 1


async def assign(session: AsyncSession, *, case_id: str, assignee: str, actor: str,
                 expected_version: int | None = None) -> dict[str, Any]:
    """Give the case to an admin (a user id); assigning it to whom it has is no change."""
    user = await session.get(User, assignee)
    if user is None or not user.is_admin:
        raise InvalidInput(f"{assignee!r} is not an admin user: cases are assigned to admins")
    c = await lock_case(session, case_id, expected_version=expected_version)
    if c.assignee != assignee:
        before = c.assignee
        c.assignee = assignee
        _touch(c)
        await record_event(session, c, actor=actor, kind=CaseEventKind.ASSIGNMENT,
                           data={"from": before, "to": assignee})
    return case_dict(c)


async def investigate(session: AsyncSession, *, case_id: str, actor: str,
                      expected_version: int | None = None) -> dict[str, Any]:
    """``pending`` → ``investigating``; an unassigned case is assigned to the acting admin."""
    c = await lock_case(session, case_id, expected_version=expected_version)
    if c.status != CaseStatus.PENDING:
        raise CaseRefused(f"case {case_id} is {c.status.value}: only a pending case starts "
                          "being investigated")
    c.status = CaseStatus.INVESTIGATING
    if c.assignee is None and actor.startswith("user:"):
        c.assignee = actor.removeprefix("user:")
        await record_event(session, c, actor=actor, kind=CaseEventKind.ASSIGNMENT,
                           data={"from": None, "to": c.assignee})
    _touch(c)
    await record_event(session, c, actor=actor, kind=CaseEventKind.STATUS,
                       data={"from": "pending", "to": "investigating"})
    return case_dict(c)


async def add_note(session: AsyncSession, *, case_id: str, text: str, actor: str
                   ) -> dict[str, Any]:
    text = text.strip()
    if not text:
        raise InvalidInput("a note needs some text")
    if len(text) > 10_000:
        raise InvalidInput("a note is at most 10,000 characters")
    c = await lock_case(session, case_id)
    _touch(c)
    await record_event(session, c, actor=actor, kind=CaseEventKind.NOTE, text=text)
    return case_dict(c)


async def attach(session: AsyncSession, *, case_id: str, uri: str, sha256: str,
                 description: str, actor: str) -> dict[str, Any]:
    """An attachment by reference: where the file is kept and its SHA-256 (no file here)."""
    uri, digest = uri.strip(), sha256.strip().lower()
    if not uri or len(uri) > 2000 or ":" not in uri:
        raise InvalidInput("an attachment's uri is an absolute reference (scheme:…), at most "
                           "2000 characters")
    if len(digest) != 64 or not set(digest) <= _HEX:
        raise InvalidInput("sha256 is the file's SHA-256 digest: 64 hexadecimal digits")
    if len(description) > 2000:
        raise InvalidInput("a description is at most 2,000 characters")
    c = await lock_case(session, case_id)
    _touch(c)
    await record_event(session, c, actor=actor, kind=CaseEventKind.ATTACHMENT,
                       text=description.strip(), uri=uri, sha256=digest)
    return case_dict(c)


async def close_case(session: AsyncSession, *, case_id: str, resolution: Resolution | str,
                     actor: str, held: HeldWithdrawals | None, money: Money | str | None = None,
                     note: str = "", expected_version: int | None = None) -> CaseDecided:
    """Decide the case: its resolution and what happens to the money (see the module
    docstring). ``money`` defaults to ``return`` for a confirmed risk and ``release`` for a
    false positive when money is held, ``none`` when nothing is."""
    try:
        resolution = Resolution(resolution)
        money = None if money is None else Money(money)
    except ValueError as exc:
        raise InvalidInput(f"{exc}: resolution is confirmed_risk or false_positive, money "
                           "release, return, keep or none") from None
    c = await lock_case(session, case_id, open_only=False)
    d = await session.get(RiskDecision, c.decision_id)
    assert d is not None  # a foreign key
    if c.status == CaseStatus.CLOSED:
        wanted = money or _default_money(d, resolution)
        if c.resolution == resolution and c.money == wanted:
            return CaseDecided(case_dict(c, d), acted=False)  # a retry: already done
        raise CaseRefused(f"case {case_id} is closed already ({_closed_as(c)}): a closed "
                          "case does not change")
    if expected_version is not None and expected_version != c.version:
        raise StaleVersion(f"case {case_id} changed meanwhile (version {c.version}, not "
                               f"{expected_version}): read it again")
    if c.status != CaseStatus.INVESTIGATING:
        raise CaseRefused(f"case {case_id} is {c.status.value}: a case is closed once it is "
                          "being investigated")
    await refuse_subject(session, d.wallet_id, actor, "decides it")
    money, effect = await _decide_money(session, d, resolution=resolution, money=money,
                                        actor=actor, held=held,
                                        reason=f"risk case {c.id}: {resolution.value}")
    now = utcnow()
    c.status, c.resolution, c.money, c.closed_by, c.closed_at = \
        CaseStatus.CLOSED, resolution, money, actor[:80], now
    _touch(c)
    if note.strip():
        await record_event(session, c, actor=actor, kind=CaseEventKind.NOTE, text=note.strip())
    await record_event(session, c, actor=actor, kind=CaseEventKind.DECISION,
                       data={"resolution": resolution.value, "money": money.value,
                             "effect": effect})
    await record_event(session, c, actor=actor, kind=CaseEventKind.STATUS,
                       data={"from": "investigating", "to": "closed"})
    return CaseDecided(case_dict(c, d), acted=True, effect=effect)


async def refuse_subject(session: AsyncSession, wallet_id: str | None, actor: str,
                         what: str) -> None:
    """Raise :class:`DeciderIsSubject` when ``actor`` is whose money the case is about:
    another admin ``what`` (decides it; drafts, edits or files its SAR)."""
    if actor == await _owner_of(session, wallet_id):
        raise DeciderIsSubject(f"this case is about your own money: another admin {what}")


async def _owner_of(session: AsyncSession, wallet_id: str | None) -> str | None:
    """The actor (``user:<id>``) whose money a wallet holds: its user, or its merchant's
    owner; None if nobody's."""
    wallet = await session.get(Wallet, wallet_id) if wallet_id else None
    if wallet is None:
        return None
    user: str | None = None
    if wallet.owner_type == "user":
        user = wallet.owner_id
    elif wallet.owner_type == "merchant":
        user = (await session.execute(select(Merchant.owner_user_id).where(
            Merchant.id == wallet.owner_id))).scalar_one_or_none()
    return None if user is None else f"user:{user}"


def _default_money(d: RiskDecision, resolution: Resolution) -> Money:
    if d.subject_type == "deposit":  # frozen whatever the outcome: kept or released
        return Money.KEEP if resolution == Resolution.CONFIRMED_RISK else Money.RELEASE
    if d.outcome == Outcome.REJECT or d.subject_id is None:
        return Money.NONE
    return Money.RETURN if resolution == Resolution.CONFIRMED_RISK else Money.RELEASE


async def _decide_money(session: AsyncSession, d: RiskDecision, *, resolution: Resolution,
                        money: Money | None, actor: str, held: HeldWithdrawals | None,
                        reason: str) -> tuple[Money, dict[str, Any]]:
    """The one dispatch of a case's money decision, by the decision's subject type."""
    if d.subject_type == "deposit":  # held in the wallet's frozen sub-balance
        wanted = money or _default_money(d, resolution)
        if wanted == Money.RELEASE:
            await release_frozen_deposit(session, decision_id=d.id, actor=actor)
            return wanted, {"deposit": d.subject_id, "status": "released"}
        if wanted == Money.KEEP:
            await keep_frozen_deposit(session, decision_id=d.id, actor=actor, reason=reason)
            return wanted, {"deposit": d.subject_id, "status": "blocked"}
        raise CaseRefused(DEPOSIT_MONEY)
    if money == Money.KEEP:
        raise CaseRefused("'keep' is a frozen deposit's decision; a held withdrawal is "
                          "released or returned")
    if d.subject_type != "withdrawal":
        raise CaseRefused(f"decision {d.id} is about a {d.subject_type!r}: no money "
                          "decision is known for it")
    wanted = money or _default_money(d, resolution)
    if d.outcome == Outcome.REJECT or d.subject_id is None:
        if wanted != Money.NONE:
            raise CaseRefused(f"decision {d.id} refused the payment: no money is held, so the "
                              "case closes with money 'none'")
        return Money.NONE, {}
    if wanted == Money.NONE:
        raise CaseRefused(f"withdrawal {d.subject_id} is held for this case: decide "
                          "'release' or 'return'")
    if held is None:
        raise CaseRefused("this caller cannot move held withdrawals")
    if wanted == Money.RELEASE:
        return wanted, await held.release(session, withdrawal_id=d.subject_id, actor=actor)
    return wanted, await held.give_back(session, withdrawal_id=d.subject_id, actor=actor,
                                        reason=reason)

