"""``/dashboard/m/{merchant_id}/stores``: the merchant's stores, a new store, and each store's
settings (every setting ``PATCH /api/v1/stores/{id}`` takes), through the API's models and
:mod:`satvault.accounts.service`."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from satvault.accounts import service
from satvault.accounts.access import owned_store
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import CsrfProtected, PageCreateLimit, PageLang, PageUser, mark_page
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_values,
    owner,
    parse,
    refusal,
    transaction,
    typed,
)
from satvault.web.pages.render import render
from satvault.web.routes.stores import StoreIn, StorePatch, priceable_currency

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])
SPEED_POLICIES = (0, 1, 2, 6)
_INTS = ("speed_policy", "spread_bp")


def _page(request: Request, lang: Language, view: SessionView, who: Owner,
          stores: list[Any], *, form: dict[str, Any] | None = None,
          error: str | None = None, status_code: int = 200) -> HTMLResponse:
    return render(request, "merchant/stores.html", lang=lang, view=view,
                  merchant=who.merchant, stores=stores, speed_policies=SPEED_POLICIES,
                  form=form or {"default_currency": "BTC", "speed_policy": "1",
                                "spread_bp": "0"},
                  error=error, status_code=status_code)


@router.get("/stores", response_class=HTMLResponse)
async def stores_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                      session: SessionDep) -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    stores = await service.list_stores(session, merchant_id=who.id)
    return _page(request, lang, view, who, stores)


@router.post("/stores", dependencies=[CsrfProtected, PageCreateLimit])
async def create_store(merchant_id: str, request: Request, view: PageUser,
                       lang: PageLang) -> Response:
    values = await form_values(request)
    try:
        await priceable_currency(request, values.get("default_currency"))
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            body = parse(StoreIn, typed(values, ints=_INTS))
            if body.merchant_id not in (None, who.id):
                raise InvalidInput("a store is created for this merchant")
            store = await service.create_store(
                s, merchant_id=who.id, name=body.name, default_currency=body.default_currency,
                speed_policy=body.speed_policy, spread_bp=body.spread_bp, actor=who.actor)
            target = f"/dashboard/m/{who.id}/stores/{store.id}"
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            stores = await service.list_stores(s, merchant_id=who.id)
        return _page(request, lang, view, who, stores, form=values, error=message,
                     status_code=status)
    return RedirectResponse(f"{target}?saved=1", status_code=303)


def _settings_page(request: Request, lang: Language, view: SessionView, who: Owner,
                   store: Any, *, form: dict[str, Any] | None = None,
                   error: str | None = None, saved: bool = False,
                   status_code: int = 200) -> HTMLResponse:
    current = {k: str(getattr(store, k)) for k in service.STORE_SETTINGS}
    return render(request, "merchant/store.html", lang=lang, view=view,
                  merchant=who.merchant, store=store, speed_policies=SPEED_POLICIES,
                  form=form or current, error=error, saved=saved, status_code=status_code)


@router.get("/stores/{store_id}", response_class=HTMLResponse)
async def store_page(merchant_id: str, store_id: str, request: Request, view: PageUser,
                     lang: PageLang, session: SessionDep, saved: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    store = await owned_store(session, who.principal, store_id)
    return _settings_page(request, lang, view, who, store, saved=bool(saved))


@router.post("/stores/{store_id}", dependencies=[CsrfProtected])
async def update_store(merchant_id: str, store_id: str, request: Request, view: PageUser,
                       lang: PageLang) -> Response:
    values = await form_values(request)
    try:
        await priceable_currency(request, values.get("default_currency"))
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            store = await owned_store(s, who.principal, store_id, for_update=True)
            body = parse(StorePatch, typed(values, ints=_INTS, drop_blank=_INTS))
            changes = body.model_dump(exclude_unset=True)
            if any(v is None for v in changes.values()):
                raise InvalidInput("a store setting cannot be left empty")
            await service.update_store(s, store, changes=changes, actor=who.actor)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            store = await owned_store(s, who.principal, store_id)
        return _settings_page(request, lang, view, who, store, form=values, error=message,
                              status_code=status)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/stores/{store_id}?saved=1",
                            status_code=303)
