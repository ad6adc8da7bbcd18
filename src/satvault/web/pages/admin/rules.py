"""``/admin/rules``: the risk rule sets and the withdrawal policy, changed by two admins.

Both are versioned JSON. The page shows the live version and the pending ones (a risk draft,
a proposed policy) with a line diff against the live one; an admin edits in a textarea and
proposes a new version (validated by the service: the errors come back beside the text,
nothing stored); another admin approves it — it becomes live — or rejects it. The four-eyes
rule is the services' (:func:`satvault.risk.service.approve_rule_set`,
:func:`satvault.withdrawals.policy.service.approve_policy`, and their ``reject_*``): the
proposer's own approval is refused there, and by a CHECK in the tables.

The approver groups are changed the same way: an admin proposes adding (or removing) a
member, and the change applies only when another admin approves it
(:func:`satvault.withdrawals.policy.service.approve_group_change`). A wallet's allow-list is
shown and changed here through the services the withdrawal-policy API and ``satvault policy``
use.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import require_holder
from satvault.accounts.models import User, Wallet
from satvault.kernel.errors import InvalidInput, NotFound, SatvaultError
from satvault.risk import service as risk
from satvault.risk.models import RiskRuleSet, RuleSetStatus
from satvault.web.pages.admin._views import json_diff, pretty_json
from satvault.web.pages.deps import (
    AdminSteppedUp,
    CsrfProtected,
    PageAdmin,
    PageLang,
    admin_principal,
    mark_page,
)
from satvault.web.pages.render import render
from satvault.web.problems import problem_for
from satvault.web.state import sessions_of, settings_of
from satvault.withdrawals.policy import service as policy
from satvault.withdrawals.policy.models import (
    ApproverGroupChange,
    ApproverGroupMember,
    ChangeStatus,
    PolicyStatus,
)

__all__ = ["router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
Version = Annotated[int, Path(ge=1, le=2**31 - 1)]
ChangeId = Annotated[str, Path(min_length=1, max_length=40)]
MAX_DOC = 200_000


def _risk_actor(view: Any) -> str:  # as the risk API names an admin
    p = admin_principal(view)
    return f"{p.owner_type}:{p.owner_id}"


def _policy_actor(view: Any) -> str:  # as the withdrawal-policy API names an admin
    return admin_principal(view).owner_id


def _status_of(exc: Exception) -> int:
    problem = problem_for(exc)
    return problem.status_code if problem is not None else 422


_DONE = frozenset({"risk_proposed", "risk_live", "risk_rejected", "policy_proposed",
                   "policy_live", "policy_rejected", "approver_proposed",
                   "approver_removal_proposed", "approver_change_approved",
                   "approver_change_rejected"})


def _done(done: str, version: int = 0) -> RedirectResponse:
    """Back to the page, which says what happened from a fixed set of messages (a link cannot
    make the page say anything else)."""
    return RedirectResponse(f"/admin/rules?done={done}&v={version}", status_code=303)


async def _context(session: AsyncSession, *, wallet_id: str | None) -> dict[str, Any]:
    live_version, _ = await risk.live_rule_set(session)  # the shipped default, the first time
    sets = list((await session.execute(select(RiskRuleSet).order_by(
        RiskRuleSet.version.desc()).limit(50))).scalars())
    live = next(rs for rs in sets if rs.version == live_version) \
        if any(rs.version == live_version for rs in sets) else await session.get(
            RiskRuleSet, live_version)
    assert live is not None
    drafts = [(rs, json_diff(live.rules, rs.rules)) for rs in sets
              if rs.status == RuleSetStatus.DRAFT]
    versions = await policy.policy_versions(session)
    live_policy = next((p for p in versions if p.status == PolicyStatus.LIVE), None)
    proposed = [(p, json_diff(live_policy.rules if live_policy else None, p.rules))
                for p in versions if p.status == PolicyStatus.PROPOSED]
    members = (await session.execute(
        select(ApproverGroupMember.group_name, User.email, User.id)
        .join(User, User.id == ApproverGroupMember.user_id)
        .order_by(ApproverGroupMember.group_name, User.email))).all()
    changes = (await session.execute(
        select(ApproverGroupChange, User.email)
        .join(User, User.id == ApproverGroupChange.user_id)
        .where(ApproverGroupChange.status == ChangeStatus.PENDING)
        .order_by(ApproverGroupChange.created_at, ApproverGroupChange.id))).all()
    allowlist = None
    if wallet_id:
        if await session.get(Wallet, wallet_id) is None:
            raise NotFound(f"wallet {wallet_id!r} not found")
        allowlist = await policy.list_allowlist(session, wallet_id=wallet_id)
    return {"live": live, "live_json": pretty_json(live.rules), "drafts": drafts,
            "history": [rs for rs in sets if rs.status == RuleSetStatus.RETIRED][:10],
            "live_policy": live_policy,
            "live_policy_json": pretty_json(live_policy.rules) if live_policy else None,
            "proposed": proposed, "members": members, "group_changes": changes,
            "wallet_id": wallet_id,
            "allowlist": allowlist}


async def _page(request: Request, view: Any, lang: Any, *, status_code: int = 200,
                wallet_id: str | None = None, **form: Any) -> HTMLResponse:
    async with sessions_of(request)() as s, s.begin():
        ctx = await _context(s, wallet_id=wallet_id)
    defaults: dict[str, Any] = {
        "error": None, "error_for": None, "done": None, "done_v": 0, "risk_text": None,
        "risk_note": "", "policy_text": None, "group": "", "member": "", "destination": "",
        "label": ""}
    defaults.update(form)
    if defaults["risk_text"] is None:
        defaults["risk_text"] = ctx["live_json"]
    if defaults["policy_text"] is None:
        defaults["policy_text"] = ctx["live_policy_json"] or '{\n  "rules": []\n}'
    return render(request, "admin/rules.html", lang=lang, view=view, status_code=status_code,
                  me_risk=_risk_actor(view), me=view.user_id, **ctx, **defaults)


@router.get("/admin/rules", response_class=HTMLResponse)
async def rules_page(request: Request, view: PageAdmin, lang: PageLang,
                     done: str | None = None, v: Annotated[int, Query(ge=0, le=2**31)] = 0,
                     edit: Annotated[int | None, Query(ge=1, le=2**31)] = None,
                     wallet: Annotated[str | None, Query(max_length=40)] = None
                     ) -> HTMLResponse:
    admin_principal(view)
    risk_text = None
    if edit is not None:  # start a new draft from an earlier version
        async with sessions_of(request)() as s:
            rs = await s.get(RiskRuleSet, edit)
        if rs is None:
            raise NotFound(f"rule set version {edit} not found")
        risk_text = pretty_json(rs.rules)
    return await _page(request, view, lang, done=done if done in _DONE else None, done_v=v,
                       risk_text=risk_text, wallet_id=(wallet or "").strip()[:40] or None)


# --------------------------------------------------------------------------- risk rules

@router.post("/admin/rules/risk", dependencies=[CsrfProtected])
async def propose_risk(request: Request, view: PageAdmin, lang: PageLang,
                       rules: Annotated[str, Form(max_length=MAX_DOC)],
                       note: Annotated[str, Form(max_length=500)] = "") -> Response:
    actor = _risk_actor(view)
    try:
        async with sessions_of(request)() as s, s.begin():
            rs = await risk.propose_rule_set(s, rules=rules, actor=actor, note=note)
            version = rs.version
    except SatvaultError as exc:
        return await _page(request, view, lang, status_code=_status_of(exc), error=str(exc),
                           error_for="risk", risk_text=rules, risk_note=note)
    return _done("risk_proposed", version)


async def _decided(request: Request, view: Any, lang: Any,
                   act: Callable[[AsyncSession], Awaitable[object]], *, error_for: str,
                   done: RedirectResponse) -> Response:
    """A second admin's approval or rejection: ``act`` in a unit of work, then ``done``, or
    the page again with the refusal next to the item (``error_for``)."""
    try:
        async with sessions_of(request)() as s, s.begin():
            await act(s)
    except SatvaultError as exc:
        return await _page(request, view, lang, status_code=_status_of(exc), error=str(exc),
                           error_for=error_for)
    return done


async def _risk_decision(request: Request, view: Any, lang: Any, version: int, *,
                         approve: bool) -> Response:
    actor = _risk_actor(view)
    decide = risk.approve_rule_set if approve else risk.reject_rule_set
    return await _decided(request, view, lang,
                          lambda s: decide(s, version=version, actor=actor),
                          error_for=f"risk-{version}",
                          done=_done("risk_live" if approve else "risk_rejected", version))


@router.post("/admin/rules/risk/{version}/approve", dependencies=[CsrfProtected])
async def approve_risk(request: Request, view: PageAdmin, lang: PageLang,
                       version: Version) -> Response:
    return await _risk_decision(request, view, lang, version, approve=True)


@router.post("/admin/rules/risk/{version}/reject", dependencies=[CsrfProtected])
async def reject_risk(request: Request, view: PageAdmin, lang: PageLang,
                      version: Version) -> Response:
    return await _risk_decision(request, view, lang, version, approve=False)


# ----------------------------------------------------------------------- withdrawal policy

@router.post("/admin/rules/policy", dependencies=[CsrfProtected])
async def propose_policy(request: Request, view: PageAdmin, lang: PageLang,
                         rules: Annotated[str, Form(max_length=MAX_DOC)]) -> Response:
    admin = _policy_actor(view)
    try:
        try:
            raw = json.loads(rules)
        except ValueError as exc:
            raise InvalidInput(f"the policy is not JSON: {exc}") from None
        async with sessions_of(request)() as s, s.begin():
            row = await policy.propose_policy(s, admin=admin, raw=raw)
            version = row.version
    except SatvaultError as exc:
        return await _page(request, view, lang, status_code=_status_of(exc), error=str(exc),
                           error_for="policy", policy_text=rules)
    return _done("policy_proposed", version)


async def _policy_decision(request: Request, view: Any, lang: Any, version: int, *,
                           approve: bool) -> Response:
    admin = _policy_actor(view)
    decide = policy.approve_policy if approve else policy.reject_policy
    return await _decided(request, view, lang,
                          lambda s: decide(s, admin=admin, version=version),
                          error_for=f"policy-{version}",
                          done=_done("policy_live" if approve else "policy_rejected", version))


@router.post("/admin/rules/policy/{version}/approve", dependencies=[CsrfProtected])
async def approve_policy(request: Request, view: PageAdmin, lang: PageLang,
                         version: Version) -> Response:
    return await _policy_decision(request, view, lang, version, approve=True)


@router.post("/admin/rules/policy/{version}/reject", dependencies=[CsrfProtected])
async def reject_policy(request: Request, view: PageAdmin, lang: PageLang,
                        version: Version) -> Response:
    return await _policy_decision(request, view, lang, version, approve=False)


@router.post("/admin/rules/groups", dependencies=[CsrfProtected])
async def propose_approver(request: Request, view: PageAdmin, lang: PageLang,
                           group: Annotated[str, Form(max_length=60)],
                           member: Annotated[str, Form(max_length=254)],
                           action: Annotated[str, Form(max_length=8)] = "add") -> Response:
    """Propose making a user (e-mail or id) an approver of a group, or (``action=remove``)
    no longer one (``satvault policy add-approver`` / ``remove-approver``): it applies when
    another admin approves it."""
    admin = _policy_actor(view)
    try:
        async with sessions_of(request)() as s, s.begin():
            who = member.strip()
            user_id = (await s.execute(select(User.id).where(
                (User.id == who) | (User.email == who.lower())))).scalar_one_or_none()
            if user_id is None:
                raise NotFound(f"no user {who!r}")
            await policy.propose_group_change(s, admin=admin, group=group, user_id=user_id,
                                              action=action)
    except SatvaultError as exc:
        return await _page(request, view, lang, status_code=_status_of(exc), error=str(exc),
                           error_for="groups",
                           group=group if action == "add" else "",
                           member=member if action == "add" else "")
    return _done("approver_removal_proposed" if action == "remove" else "approver_proposed")


async def _group_decision(request: Request, view: Any, lang: Any, change_id: str, *,
                          approve: bool) -> Response:
    admin = _policy_actor(view)
    decide = policy.approve_group_change if approve else policy.reject_group_change
    return await _decided(request, view, lang,
                          lambda s: decide(s, admin=admin, change_id=change_id),
                          error_for=f"group-change-{change_id}",
                          done=_done("approver_change_approved" if approve
                                     else "approver_change_rejected"))


@router.post("/admin/rules/groups/changes/{change_id}/approve", dependencies=[CsrfProtected])
async def approve_approver_change(request: Request, view: PageAdmin, lang: PageLang,
                                  change_id: ChangeId) -> Response:
    return await _group_decision(request, view, lang, change_id, approve=True)


@router.post("/admin/rules/groups/changes/{change_id}/reject", dependencies=[CsrfProtected])
async def reject_approver_change(request: Request, view: PageAdmin, lang: PageLang,
                                 change_id: ChangeId) -> Response:
    return await _group_decision(request, view, lang, change_id, approve=False)


@router.post("/admin/rules/allowlist", dependencies=[CsrfProtected])
async def add_allowlisted(request: Request, view: AdminSteppedUp, lang: PageLang,
                          wallet_id: Annotated[str, Form(max_length=40)],
                          destination: Annotated[str, Form(max_length=2000)],
                          label: Annotated[str, Form(max_length=120)] = "") -> Response:
    """Add a destination to a wallet's allow-list (usable after the cool-down). A payout
    destination's change, so it needs a step-up as the API's ``withdrawals:write`` does
    (found from outside: the console changed allow-lists with a plain admin session), and
    only on a wallet the admin holds: an operator allow-listing their own node on a
    customer's wallet passed a policy of two approvers alone (found from outside; removing
    an entry, which only narrows where money may go, stays open to every admin)."""
    actor = _policy_actor(view)
    try:
        async with sessions_of(request)() as s, s.begin():
            wallet = await s.get(Wallet, wallet_id)
            if wallet is None:
                raise NotFound(f"wallet {wallet_id!r} not found")
            require_holder(admin_principal(view), wallet)
            await policy.add_allowlist_entry(s, wallet=wallet, destination=destination,
                                             label=label, actor=actor,
                                             settings=settings_of(request))
    except SatvaultError as exc:
        return await _page(request, view, lang, status_code=_status_of(exc), error=str(exc),
                           error_for="allowlist",
                           wallet_id=None if isinstance(exc, NotFound) else wallet_id,
                           destination=destination, label=label)
    return RedirectResponse(f"/admin/rules?wallet={quote(wallet_id, safe='')}#allowlist",
                            status_code=303)


@router.post("/admin/rules/allowlist/{entry_id}/remove", dependencies=[CsrfProtected])
async def remove_allowlisted(request: Request, view: AdminSteppedUp, lang: PageLang,
                             entry_id: Annotated[str, Path(max_length=40)],
                             wallet_id: Annotated[str, Form(max_length=40)]) -> Response:
    actor = _policy_actor(view)
    async with sessions_of(request)() as s, s.begin():
        await policy.remove_allowlist_entry(s, wallet_id=wallet_id, entry_id=entry_id,
                                            actor=actor)
    return RedirectResponse(f"/admin/rules?wallet={quote(wallet_id, safe='')}#allowlist",
                            status_code=303)
