"""``satvault policy …`` and ``satvault withdrawals …``: the withdrawal policy from the
command line.

The command line runs with the database's own credentials, so it says who acts with
``--as USER_ID`` (recorded in the audit log): a policy change — a version, or an approver
added to or removed from a group — still needs two different admin users, an approval a member
of the rule's group who did not initiate the withdrawal. A
Lightning withdrawal released here is sent at the payer's next tick.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.cli._common import admin_actor
from satvault.cli._common import emit as _emit
from satvault.cli._common import in_transaction as _run
from satvault.config import get_settings
from satvault.kernel import strictjson
from satvault.withdrawals.cancel import cancel_pending
from satvault.withdrawals.policy import approvals, service

__all__ = ["policy_app", "withdrawals_app"]

policy_app = typer.Typer(help="The withdrawal policy (maker-checker).", no_args_is_help=True)
withdrawals_app = typer.Typer(help="Withdrawals awaiting approval; cancelling a pending one.",
                              no_args_is_help=True)
T = TypeVar("T")
Actor = Annotated[str, typer.Option("--as", help="The user id acting (usr_…).")]





def _version(p: Any) -> dict[str, Any]:
    return {"version": p.version, "status": p.status, "rules": json.loads(p.rules)["rules"],
            "proposed_by": p.proposed_by, "proposed_at": p.proposed_at,
            "approved_by": p.approved_by, "approved_at": p.approved_at}


@policy_app.command("show")
def show() -> None:
    """Every version of the policy, newest first; the ``live`` one applies."""
    async def work(s: AsyncSession) -> list[dict[str, Any]]:
        return [_version(p) for p in await service.policy_versions(s)]
    _emit({"ok": True, "versions": _run(work)})


@policy_app.command("propose")
def propose(file: Annotated[Path, typer.Argument(help='JSON: {"rules": [...]}.')],
            actor: Actor) -> None:
    """Propose a new version from FILE; another admin makes it live with ``approve``."""
    try:
        raw = strictjson.loads(file.read_text())
    except (OSError, ValueError) as exc:
        _emit({"ok": False, "error": f"cannot read {file}: {exc}"})
        raise typer.Exit(1) from None

    async def work(s: AsyncSession) -> dict[str, Any]:
        return _version(await service.propose_policy(s, admin=actor, raw=raw))
    _emit({"ok": True, **_run(work)})


@policy_app.command("approve")
def approve_version(version: Annotated[int, typer.Argument(
                        min=1, max=2**31 - 1, help="The proposed version.")],
                    actor: Actor) -> None:
    """Make a proposed version live (by an admin other than its proposer)."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return _version(await service.approve_policy(s, admin=actor, version=version))
    _emit({"ok": True, **_run(work)})


def _change(c: Any) -> dict[str, Any]:
    return {"id": c.id, "group": c.group_name, "user_id": c.user_id, "action": c.action,
            "status": c.status, "proposed_by": c.proposed_by, "decided_by": c.decided_by,
            "reason": c.reason, "created_at": c.created_at, "decided_at": c.decided_at}


def _propose_change(group: str, user_id: str, actor: str, action: str) -> None:
    async def work(s: AsyncSession) -> dict[str, Any]:
        return _change(await service.propose_group_change(s, admin=actor, group=group,
                                                          user_id=user_id, action=action))
    _emit({"ok": True, **_run(work)})


@policy_app.command("add-approver")
def add_approver(group: Annotated[str, typer.Argument(help="The approver group.")],
                 user_id: Annotated[str, typer.Argument(help="The user (usr_…).")],
                 actor: Actor) -> None:
    """Propose making a user an approver of GROUP (the group is created on first use);
    another admin applies it with ``approve-change``."""
    _propose_change(group, user_id, actor, "add")


@policy_app.command("remove-approver")
def remove_approver(group: Annotated[str, typer.Argument(help="The approver group.")],
                    user_id: Annotated[str, typer.Argument(help="The user (usr_…).")],
                    actor: Actor) -> None:
    """Propose removing an approver from GROUP; another admin applies it with
    ``approve-change``."""
    _propose_change(group, user_id, actor, "remove")


@policy_app.command("approver-changes")
def approver_changes(
    every: Annotated[bool, typer.Option("--all", help="Every change, newest first.")] = False,
) -> None:
    """Approver group changes waiting for a second admin, oldest first."""
    async def work(s: AsyncSession) -> list[dict[str, Any]]:
        rows = await (service.group_changes(s) if every else service.pending_group_changes(s))
        return [_change(c) for c in rows]
    _emit({"ok": True, "changes": _run(work)})


@policy_app.command("approve-change")
def approve_change(change_id: Annotated[str, typer.Argument(help="The change (agc_…).")],
                   actor: Actor) -> None:
    """Approve a pending approver group change (by an admin other than its proposer): it
    applies now."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return _change(await service.approve_group_change(s, admin=actor,
                                                          change_id=change_id))
    _emit({"ok": True, **_run(work)})


@policy_app.command("reject-change")
def reject_change(change_id: Annotated[str, typer.Argument(help="The change (agc_…).")],
                  actor: Actor,
                  reason: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Reject a pending approver group change: it never applies."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        return _change(await service.reject_group_change(s, admin=actor, change_id=change_id,
                                                         reason=reason))
    _emit({"ok": True, **_run(work)})


@withdrawals_app.command("awaiting")
def awaiting() -> None:
    """Withdrawals awaiting approval, oldest first."""
    async def work(s: AsyncSession) -> list[dict[str, Any]]:
        return [{"withdrawal_id": wd.id, "wallet_id": wd.wallet_id, "method": wd.method,
                 "amount_msat": wd.amount_msat, "destination": wd.destination,
                 "rule": req.rule, "group": req.group_name, "required": req.required,
                 "approved_by": who, "initiator": req.initiator, "expires_at": req.expires_at}
                for wd, req, who in await approvals.awaiting(s)]
    _emit({"ok": True, "withdrawals": _run(work)})


@withdrawals_app.command("approve")
def approve_withdrawal(withdrawal_id: Annotated[str, typer.Argument(help="wd_…")],
                       actor: Actor) -> None:
    """Approve a withdrawal awaiting approval; the last approval needed releases it."""
    async def work(s: AsyncSession) -> approvals.ApprovalOutcome:
        return await approvals.approve_withdrawal(s, withdrawal_id=withdrawal_id,
                                                  approver=actor, settings=get_settings())
    out = _run(work)
    _emit({"ok": True, "withdrawal_id": withdrawal_id, "status": out.status,
           "approvals": out.approvals, "required": out.required, "released": out.released})


@withdrawals_app.command("reject")
def reject_withdrawal(withdrawal_id: Annotated[str, typer.Argument(help="wd_…")],
                      actor: Actor,
                      reason: Annotated[str, typer.Option(help="Why.")] = "") -> None:
    """Reject a withdrawal awaiting approval: it is cancelled and its hold released."""
    async def work(s: AsyncSession) -> approvals.ApprovalOutcome:
        return await approvals.reject_withdrawal(s, withdrawal_id=withdrawal_id,
                                                 approver=actor, reason=reason)
    out = _run(work)
    _emit({"ok": True, "withdrawal_id": withdrawal_id, "status": out.status})


@withdrawals_app.command("cancel")
def cancel_withdrawal(withdrawal_id: Annotated[str, typer.Argument(help="wd_…")],
                      as_: Annotated[str, typer.Option("--as", help="The acting admin's "
                                                       "e-mail address or id.")],
                      reason: Annotated[str, typer.Option(help="Why (audited).")] = "") -> None:
    """Cancel a pending withdrawal: its hold is voided. One already batched or being paid
    over Lightning is refused (exit 1) with the state it is in."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        wd = await cancel_pending(s, withdrawal_id=withdrawal_id,
                                  actor=await admin_actor(s, as_), reason=reason)
        return {"ok": True, "withdrawal_id": wd.id, "status": wd.status,
                "amount_msat": wd.amount_msat, "fee_reserve_msat": wd.fee_reserve_msat}
    _emit(_run(work))
