"""``/dashboard/m/{merchant_id}/webhooks``: the webhooks of the merchant's stores, a new one
(URL checked by the SSRF guard with no transaction open, as the API does; its signing secret
shown once), switching one off and on, deleting one, and each webhook's delivery log with
its attempts and redelivery (:func:`satvault.events.delivery.redeliver`, as the API's
``POST /webhook-deliveries/{id}/redeliver``)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service as accounts
from satvault.accounts.access import owned_store
from satvault.auth.credentials import sealer_for
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.events import service
from satvault.events.catalog import WEBHOOK_EVENT_TYPES
from satvault.events.delivery import redeliver
from satvault.events.models import DELIVERY_STATUSES, Webhook
from satvault.events.schemas import WebhookIn
from satvault.events.ssrf import check
from satvault.kernel.errors import InvalidInput, NotFound, SatvaultError
from satvault.web.deps import SessionDep
from satvault.web.fields import EventIdBefore
from satvault.web.pages.deps import CsrfProtected, PageCreateLimit, PageLang, PageUser, mark_page
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_values,
    owner,
    parse,
    refusal,
    transaction,
)
from satvault.web.pages.render import render
from satvault.web.state import settings_of

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])
EVENT_CHOICES = ("invoice.*", "withdrawal.*", *sorted(WEBHOOK_EVENT_TYPES))
LOG_PAGE = 50


async def _webhook(session: AsyncSession, who: Owner, webhook_id: str) -> Webhook:
    """The webhook if it belongs to one of this merchant's stores; else not found."""
    webhook = await session.get(Webhook, webhook_id)
    try:
        if webhook is None:
            raise NotFound(webhook_id)
        await owned_store(session, who.principal, webhook.store_id)
    except NotFound:
        raise NotFound(f"webhook {webhook_id!r} not found") from None
    return webhook


async def _page(request: Request, lang: Language, view: SessionView, session: Any,
                who: Owner, *, form: dict[str, Any] | None = None, error: str | None = None,
                created: service.NewSecret | None = None, notice: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    stores = await accounts.list_stores(session, merchant_id=who.id)
    hooks = [(s, await service.list_webhooks(session, store_id=s.id)) for s in stores]
    return render(request, "merchant/webhooks.html", lang=lang, view=view,
                  merchant=who.merchant, stores=stores, hooks=hooks, choices=EVENT_CHOICES,
                  form=form or {"events": ["invoice.*"]}, error=error, created=created,
                  notice=notice, status_code=status_code)


@router.get("/webhooks", response_class=HTMLResponse)
async def webhooks_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                        session: SessionDep, done: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    notice = {"deleted": "The webhook was deleted.", "enabled": "The webhook is on.",
              "disabled": "The webhook is off."}.get(done)
    return await _page(request, lang, view, session, who, notice=notice)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


@router.post("/webhooks", dependencies=[CsrfProtected, PageCreateLimit])
async def create_webhook(merchant_id: str, request: Request, view: PageUser,
                         lang: PageLang) -> Response:
    values = await form_values(request)
    events = [e for e in _listed(values.get("events")) if e]
    store_id = str(values.get("store_id", ""))
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            await owned_store(s, who.principal, store_id)
        secret = str(values.get("secret", "")).strip() or None
        body = parse(WebhookIn, {"url": str(values.get("url", "")).strip(), "events": events,
                                 "secret": secret})
        checked = await check(body.url, environment=settings_of(request).environment)
        async with transaction(request) as s:
            await owned_store(s, who.principal, store_id)
            created = await service.create_webhook(
                s, store_id=store_id, url=checked, events=body.events, secret=body.secret,
                actor=who.actor, sealer=sealer_for(settings_of(request)))
            return await _page(request, lang, view, s, who, created=created,
                               status_code=201)
    except (FormRefused, SatvaultError) as exc:
        if isinstance(exc, NotFound):
            exc = FormRefused("choose one of your stores", status=404)
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _page(request, lang, view, s, who, error=message,
                               form={**values, "events": events}, status_code=status)


@router.post("/webhooks/{webhook_id}/switch", dependencies=[CsrfProtected])
async def switch_webhook(merchant_id: str, webhook_id: str, request: Request,
                         view: PageUser) -> Response:
    values = await form_values(request)
    if values.get("enabled") not in ("on", "off"):
        raise InvalidInput("enabled is on or off")  # only a hand-made form gets here
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        webhook = await _webhook(s, who, webhook_id)
        await service.update_webhook(s, webhook=webhook, enabled=values["enabled"] == "on",
                                     actor=who.actor)
    done = "enabled" if values["enabled"] == "on" else "disabled"
    return RedirectResponse(f"/dashboard/m/{merchant_id}/webhooks?done={done}",
                            status_code=303)


@router.post("/webhooks/{webhook_id}/delete", dependencies=[CsrfProtected])
async def delete_webhook(merchant_id: str, webhook_id: str, request: Request,
                         view: PageUser) -> Response:
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        webhook = await _webhook(s, who, webhook_id)
        await service.delete_webhook(s, webhook=webhook, actor=who.actor)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/webhooks?done=deleted",
                            status_code=303)


@router.get("/webhooks/{webhook_id}", response_class=HTMLResponse)
async def webhook_page(merchant_id: str, webhook_id: str, request: Request, view: PageUser,
                       lang: PageLang, session: SessionDep,
                       status: Annotated[str, Query(max_length=12)] = "",
                       before: EventIdBefore = None, done: str = "") -> HTMLResponse:
    """The delivery log, newest event first, each delivery with its attempts; its query is
    bounded as the API's ``/deliveries`` is."""
    who = await owner(session, view, merchant_id)
    webhook = await _webhook(session, who, webhook_id)
    store = await accounts.get_store(session, webhook.store_id)
    logs = await service.list_deliveries(session, webhook_id=webhook.id, limit=LOG_PAGE,
                                         before_event_id=before,
                                         status=status if status else None)
    return render(request, "merchant/webhook.html", lang=lang, view=view,
                  merchant=who.merchant, store=store, webhook=webhook, logs=logs,
                  statuses=[s.value for s in DELIVERY_STATUSES], status=status,
                  next_before=logs[-1].delivery.event_id if len(logs) == LOG_PAGE else None,
                  notice="The delivery was queued again." if done == "redelivered" else None)


@router.post("/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver",
             dependencies=[CsrfProtected, PageCreateLimit])
async def redeliver_delivery(merchant_id: str, webhook_id: str, delivery_id: str,
                             request: Request, view: PageUser) -> Response:
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        webhook = await _webhook(s, who, webhook_id)
        delivery, of = await service.get_delivery(s, delivery_id)
        if of.id != webhook.id:
            raise NotFound(f"webhook delivery {delivery_id!r} not found")
        await redeliver(s, delivery.id)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/webhooks/{webhook_id}"
                            "?done=redelivered", status_code=303)
