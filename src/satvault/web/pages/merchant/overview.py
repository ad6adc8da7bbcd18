"""``/dashboard/m/{merchant_id}``: the merchant wallet's balances (live: the page follows the
wallet's event stream and fetches the balances fragment again when it moves), and charts of
the last 30 days: volume per rail, invoices created and settled."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, StreamingResponse

from satvault.auth.sessions import resolve_session
from satvault.invoices.stats import daily_conversion
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import SatvaultError
from satvault.reports.dashboard import RAILS, daily_volume
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import PageLang, PageUser, cookie_name, mark_page
from satvault.web.pages.merchant.charts import Series, bar_chart
from satvault.web.pages.merchant.texts import N_, translate
from satvault.web.pages.merchant.wallet_access import merchant_wallet
from satvault.web.pages.render import render
from satvault.web.routes.streams import (
    PositionHeader,
    PositionQuery,
    resume_point,
    wallet_stream,
)
from satvault.web.routes.wallets import balances_of
from satvault.web.state import sessions_of, settings_of

__all__ = ["CHART_DAYS", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
CHART_DAYS = 30


@router.get("/dashboard/m/{merchant_id}", response_class=HTMLResponse)
async def overview(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                   session: SessionDep) -> HTMLResponse:
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    balances = await balances_of(session, wallet, settings_of(request))
    end = utcnow().date()
    start = end - timedelta(days=CHART_DAYS - 1)
    volume = await daily_volume(session, wallet_id=wallet.id, start=start, end=end)
    conversion = await daily_conversion(session, merchant_id=merchant_id, start=start,
                                        end=end)
    labels = [d.day.strftime("%m-%d") for d in volume]

    def t(text: str) -> str:
        return translate(lang, text)

    names = {"onchain": t(N_("On-chain")), "lightning": t(N_("Lightning")),
             "internal": t(N_("Internal"))}
    volume_svg = bar_chart(
        title=t(N_("Volume per day by rail, last 30 days (sats)")),
        desc=t(N_("Money in and out of the wallet per day, stacked by rail: on-chain, "
                  "Lightning, internal. The table below has the same numbers.")),
        labels=labels, unit_divisor=1000,
        series=[Series(names[r], f"c{i + 1}", [d.in_msat[r] + d.out_msat[r] for d in volume])
                for i, r in enumerate(RAILS)])
    conversion_svg = bar_chart(
        title=t(N_("Invoices created and settled per day, last 30 days")),
        desc=t(N_("Side by side per day: invoices created, invoices settled. The table "
                  "below has the same numbers.")),
        labels=[d.day.strftime("%m-%d") for d in conversion], stacked=False,
        series=[Series(t(N_("Created")), "c1", [d.created for d in conversion]),
                Series(t(N_("Settled")), "c2", [d.settled for d in conversion])])
    return render(request, "merchant/overview.html", lang=lang, view=view, merchant=merchant,
                  wallet=wallet, balances=balances, volume=volume, rails=RAILS,
                  rail_names=names, conversion=conversion, volume_svg=volume_svg,
                  conversion_svg=conversion_svg)


@router.get("/dashboard/m/{merchant_id}/balances", response_class=HTMLResponse)
async def balances_fragment(merchant_id: str, request: Request, view: PageUser,
                            lang: PageLang, session: SessionDep) -> HTMLResponse:
    """The balances alone, what the page fetches when its event stream says they moved."""
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    balances = await balances_of(session, wallet, settings_of(request))
    return render(request, "merchant/_balances.html", lang=lang, view=view,
                  merchant=merchant, balances=balances)


@router.get("/dashboard/m/{merchant_id}/events", response_class=StreamingResponse)
async def events(
    merchant_id: str, request: Request, view: PageUser,
    last_event_id_param: PositionQuery = None,
    last_event_id: PositionHeader = "",
) -> StreamingResponse:
    """The wallet's event stream (the API's, ``/api/v1/events/stream?wallet_id=``), for the
    signed-in owner instead of an API key."""
    sessions = sessions_of(request)
    async with sessions() as session, session.begin():
        principal, _merchant, wallet = await merchant_wallet(session, view, merchant_id)
    after = resume_point(last_event_id, last_event_id_param)

    async def allowed() -> bool:
        """The session still alive and still the merchant's (signed out, expired or revoked:
        the stream ends)."""
        token = request.cookies.get(cookie_name(settings_of(request)))
        try:
            async with sessions() as session, session.begin():
                again = await resolve_session(session, token) if token else None
                if again is None:
                    return False
                await merchant_wallet(session, again, merchant_id)
        except SatvaultError:
            return False
        return True

    return await wallet_stream(request, principal, wallet.id, after, allowed=allowed)
