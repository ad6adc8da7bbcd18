"""``/admin``: what needs an operator's attention now, each figure a link to its page."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import HTMLResponse
from sqlalchemy import func, select

from satvault.kyc.models import KycRequest, KycRequestStatus
from satvault.metrics.models import AlertState
from satvault.onchain.models import ReviewItem
from satvault.payouts.models import Withdrawal, WithdrawalStatus
from satvault.reconcile.models import ReconciliationRun
from satvault.reconcile.service import open_incidents
from satvault.risk.models import CaseStatus, RiskCase
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router
from satvault.web.pages.deps import PageAdmin, PageLang
from satvault.web.pages.render import render

__all__ = ["router"]

router = admin_router()


@router.get("", response_class=HTMLResponse)
async def admin_home(request: Request, view: PageAdmin, lang: PageLang,
                     session: SessionDep) -> HTMLResponse:
    async def count(q: object) -> int:
        return int((await session.execute(q)).scalar_one())  # type: ignore[call-overload]

    kyc = await count(select(func.count()).select_from(KycRequest).where(
        KycRequest.status == KycRequestStatus.PENDING))
    cases = await count(select(func.count()).select_from(RiskCase).where(
        RiskCase.status != CaseStatus.CLOSED))
    approvals = await count(select(func.count()).select_from(Withdrawal).where(
        Withdrawal.status == WithdrawalStatus.AWAITING_APPROVAL))
    reviews = await count(select(func.count()).select_from(ReviewItem).where(
        ReviewItem.resolved_at.is_(None)))
    incidents = await open_incidents(session)
    last_run = (await session.execute(select(ReconciliationRun).order_by(
        ReconciliationRun.id.desc()).limit(1))).scalar_one_or_none()
    alerts = list((await session.execute(select(AlertState).where(
        AlertState.firing.is_(True)).order_by(AlertState.name))).scalars())
    return render(request, "admin/home.html", lang=lang, view=view, kyc=kyc, cases=cases,
                  approvals=approvals, reviews=reviews, incidents=incidents,
                  last_run=last_run, alerts=alerts)
