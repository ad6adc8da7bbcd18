"""Operator endpoints (admin scope): the ledger's consistency check and raw accounts, the
three-way reconciliation, the doctor's report, and the chain watcher's wake-up call."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from satvault.accounts.service import Principal
from satvault.composition import reconcile_now
from satvault.doctor import run_doctor
from satvault.ledger.check import check_ledger
from satvault.ledger.store import get_account
from satvault.reconcile.service import open_incidents
from satvault.web.deps import SessionDep, require_scope
from satvault.web.openapi import problem_responses
from satvault.web.state import runtime_of, sessions_of, settings_of

__all__ = ["chain_router", "doctor_router", "reconciliation_router", "router"]

router = APIRouter(prefix="/api/v1/admin/ledger", tags=["admin"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]


@router.get("/check")
async def ledger_check(session: SessionDep, _admin: Admin) -> dict[str, Any]:
    return (await check_ledger(session)).as_dict()


@router.get("/accounts/{account_id}")
async def ledger_account(
    account_id: Annotated[int, Path(ge=1, le=2**63 - 1, description="A ledger account id.")],
    session: SessionDep, _admin: Admin,
) -> dict[str, Any]:
    a = await get_account(session, account_id)
    return {"id": a.id, "asset": a.asset, "kind": a.kind.value,
            "debits_must_not_exceed_credits": a.debits_must_not_exceed_credits,
            "credits_must_not_exceed_debits": a.credits_must_not_exceed_debits,
            **dict(zip(("debits_posted", "credits_posted", "debits_pending", "credits_pending"),
                       a.balances.as_tuple(), strict=True))}


doctor_router = APIRouter(prefix="/api/v1/admin", tags=["admin"])


@doctor_router.get("/doctor")
async def doctor(request: Request, _admin: Admin) -> dict[str, Any]:
    """The report of ``satvault doctor``: every check with its status (ok, warn, error), what
    was found and what to do; ``ok`` is false when any check is an error. Uses this process's
    node connections when it has them. Opens no transaction across the network calls."""
    runtime = request.app.state.runtime
    report = await run_doctor(
        request.app.state.settings, request.app.state.sessions,
        chain=runtime.backend if runtime is not None else None,
        lightning=runtime.lightning if runtime is not None else True)
    return report.as_dict()


# Mounted where it always was, after the deposit endpoints, and documented as it always was
# (tags and the 503 its old home, the deposits router, declared).
chain_router = APIRouter(prefix="/api/v1", responses=problem_responses(503))


@chain_router.post("/admin/chain/notify", status_code=202, tags=["deposits", "admin"])
async def chain_notify(request: Request, _admin: Admin) -> dict[str, bool]:
    """Wake the chain watcher now. Point bitcoind's ``-blocknotify`` / ``-walletnotify`` (or a
    ZMQ bridge) here; the watcher reconciles fully on every wake-up, so a lost or duplicated
    notification costs nothing but latency."""
    runtime = request.app.state.runtime
    if runtime is not None:
        runtime.watcher.wake.set()
    return {"woken": runtime is not None}


reconciliation_router = APIRouter(prefix="/api/v1/admin/reconciliation", tags=["admin"])


@reconciliation_router.get("")
async def reconciliation(request: Request, _admin: Admin, deep: bool = True) -> dict[str, Any]:
    """Run the three-way reconciliation now (the ledger with itself, with the payment records,
    with the chain and Lightning nodes) and return every difference, named row by row, with
    the open incidents. ``deep=false`` skips walking the audit chain. Nothing is corrected."""
    sessions = sessions_of(request)
    report = await reconcile_now(settings_of(request), sessions, runtime=runtime_of(request),
                                 deep=deep)
    async with sessions() as s:
        incidents = await open_incidents(s)
    return {**report.as_dict(), "open_incidents": incidents}
