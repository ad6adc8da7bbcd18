"""``/dashboard/m/{merchant_id}/keys``: the API keys of the merchant and of its stores (never
their secrets), a new key with the merchant scopes (after a step-up: a key moves money; its
secret is shown once, on the answer to the form), and revoking one."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service as accounts
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import NotFound, SatvaultError
from satvault.web.deps import PrincipalCache, SessionDep
from satvault.web.pages.deps import (
    MERCHANT_SCOPES,
    CsrfProtected,
    KeepBody,
    PageLang,
    PageUser,
    SteppedUp,
    mark_page,
)
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_key,
    form_values,
    made_id,
    once,
    owner,
    refusal,
    transaction,
)
from satvault.web.pages.merchant.texts import N_, translate
from satvault.web.pages.render import render

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])
SCOPES = tuple(sorted(MERCHANT_SCOPES))


async def _page(request: Request, lang: Language, view: SessionView, session: Any,
                who: Owner, *, form: dict[str, Any] | None = None, error: str | None = None,
                created: tuple[Any, str] | None = None, notice: str | None = None,
                status_code: int = 200) -> HTMLResponse:
    stores = await accounts.list_stores(session, merchant_id=who.id)
    keys = await accounts.merchant_api_keys(session, who.id)
    names = {s.id: s.name for s in stores}
    return render(request, "merchant/keys.html", lang=lang, view=view, merchant=who.merchant,
                  form_key=form_key(),
                  stores=stores, keys=keys, store_names=names, scopes=SCOPES,
                  form=form or {"owner_id": who.id, "scopes": []}, error=error,
                  created=created, notice=notice, status_code=status_code)


@router.get("/keys", response_class=HTMLResponse)
async def keys_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                    session: SessionDep, done: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    notice = "The key was revoked." if done == "revoked" else None
    return await _page(request, lang, view, session, who, notice=notice)


def _listed(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value or [])


@router.post("/keys", dependencies=[KeepBody, CsrfProtected])
async def create_key(merchant_id: str, request: Request, view: SteppedUp,
                     lang: PageLang) -> Response:
    """A new key, its secret shown on this answer only; made once per form
    (:func:`~satvault.web.pages.merchant.scope.once`): the form sent again says the key was
    made, without its secret."""
    values = await form_values(request)
    scopes = [s for s in _listed(values.get("scopes")) if s]
    label = str(values.get("label", "")).strip()
    owner_id = str(values.get("owner_id", ""))
    made: dict[str, tuple[Any, str]] = {}
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            stores = {x.id for x in await accounts.list_stores(s, merchant_id=who.id)}
        if owner_id != who.id and owner_id not in stores:
            raise FormRefused("the key belongs to this merchant or one of its stores")
        if len(label) > 120:
            raise FormRefused("label: at most 120 characters")
        if not set(scopes) <= MERCHANT_SCOPES:
            raise FormRefused("choose among the scopes listed")

        async def work(s: AsyncSession) -> tuple[int, Any]:
            here = await owner(s, view, merchant_id)
            made["created"] = await accounts.create_api_key(
                s, owner_id=owner_id, scopes=scopes, label=label, actor=here.actor)
            return 201, {"id": made["created"][0].id}  # stored: no secret

        answer = await once(request, values, owner=f"merchant:{who.id}", work=work)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _page(request, lang, view, s, who, error=message,
                               form={**values, "scopes": scopes}, status_code=status)
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        if "created" not in made:  # the same form again: made by its first sending
            return await _page(request, lang, view, s, who, notice=translate(lang, N_(
                "This form was sent already: it made key %(id)s, whose secret was shown on "
                "the answer to the first sending only. If you did not keep it, revoke that "
                "key and make another.")) % {"id": made_id(answer)})
        return await _page(request, lang, view, s, who, created=made["created"],
                           status_code=201)


@router.post("/keys/{key_id}/revoke", dependencies=[CsrfProtected])
async def revoke_key(merchant_id: str, key_id: str, request: Request, view: PageUser) -> Response:
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        if key_id not in {k.id for k in await accounts.merchant_api_keys(s, who.id)}:
            raise NotFound(f"API key {key_id!r} not found")
        await accounts.revoke_api_key(s, key_id=key_id, actor=who.actor)
    cache: PrincipalCache | None = getattr(request.app.state, "principals", None)
    if cache is not None:  # refused at once by this process (others: within the cache's ttl)
        cache.forget(key_id)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/keys?done=revoked", status_code=303)
