"""``/dashboard/m/{merchant_id}/lightning``: the merchant wallet's Lightning Addresses (claim
one, see them with their LNURL) and its LNURL-withdraw vouchers (create one: it holds the
amount, so it is a withdrawal and asks for a step-up; its link and QR code shown on the answer
to the form only, as only the link token's hash is kept; list, cancel) — the services
of :mod:`satvault.lightning.lnurl_service`, as the API's ``/api/v1/wallets/{id}/…``.

The API has no way to release an address or to forward one elsewhere, so neither has this
page; a voucher is single-use (LUD-03 as satvault serves it)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.accounts.service import ensure_wallet
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import AlreadyExists, SatvaultError
from satvault.lightning import lnurl_service as svc
from satvault.lightning.lnurl_models import LightningAddress, LnurlWithdrawVoucher
from satvault.web.deps import SessionDep
from satvault.web.pages.deps import (
    CsrfProtected,
    KeepBody,
    PageCreateLimit,
    PageLang,
    PageUser,
    SteppedUp,
    mark_page,
)
from satvault.web.pages.merchant.invoices import qr_data_uri
from satvault.web.pages.merchant.scope import (
    FormRefused,
    Owner,
    form_key,
    form_msat,
    form_values,
    made_id,
    once,
    owner,
    parse,
    refusal,
    transaction,
)
from satvault.web.pages.merchant.texts import N_, translate
from satvault.web.pages.render import render
from satvault.web.routes.lnurl import AddressIn, VoucherIn, VoucherOut, address_out, voucher_out
from satvault.web.state import settings_of

__all__ = ["router"]

router = APIRouter(prefix="/dashboard/m/{merchant_id}", include_in_schema=False,
                   dependencies=[Depends(mark_page)])
VOUCHERS_SHOWN = 100


async def _wallet(session: Any, who: Owner) -> Wallet:
    return await ensure_wallet(session, owner_type="merchant", owner_id=who.id)


async def _page(request: Request, lang: Language, view: SessionView, session: Any,
                who: Owner, *, address_form: dict[str, Any] | None = None,
                voucher_form: dict[str, Any] | None = None, address_error: str | None = None,
                voucher_error: str | None = None, notice: str | None = None,
                created: VoucherOut | None = None, status_code: int = 200) -> HTMLResponse:
    settings = settings_of(request)
    wallet = await _wallet(session, who)
    addresses = [address_out(a, settings) for a in (await session.execute(
        select(LightningAddress).where(LightningAddress.wallet_id == wallet.id)
        .order_by(LightningAddress.created_at))).scalars()]
    vouchers = [voucher_out(v, settings) for v in (await session.execute(
        select(LnurlWithdrawVoucher).where(LnurlWithdrawVoucher.wallet_id == wallet.id)
        .order_by(LnurlWithdrawVoucher.created_at.desc(), LnurlWithdrawVoucher.id.desc())
        .limit(VOUCHERS_SHOWN))).scalars()]
    return render(request, "merchant/lightning.html", lang=lang, view=view, form_key=form_key(),
                  merchant=who.merchant, wallet=wallet, addresses=addresses,
                  address_qrs={a.username: qr_data_uri(a.lnurl.upper()) for a in addresses},
                  vouchers=vouchers, created=created,
                  created_qr=qr_data_uri(created.lnurl.upper()) if created and created.lnurl
                  else None,
                  address_form=address_form or {}, voucher_form=voucher_form or {},
                  address_error=address_error, voucher_error=voucher_error, notice=notice,
                  status_code=status_code)


@router.get("/lightning", response_class=HTMLResponse)
async def lightning_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                         session: SessionDep, done: str = "") -> HTMLResponse:
    who = await owner(session, view, merchant_id)
    notice = {"claimed": "The Lightning Address is yours.",
              "voucher": "The voucher was created; its amount is held until it is used.",
              "canceled": "The voucher was canceled and its amount released."}.get(done)
    return await _page(request, lang, view, session, who, notice=notice)


@router.post("/lightning/address", dependencies=[CsrfProtected, PageCreateLimit])
async def claim_address(merchant_id: str, request: Request, view: PageUser,
                        lang: PageLang) -> Response:
    values = await form_values(request)
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            body = parse(AddressIn, {"username": str(values.get("username", ""))})
            await svc.claim_address(s, wallet=await _wallet(s, who), username=body.username,
                                    actor=who.actor)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        if isinstance(exc, AlreadyExists):
            status = 409
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _page(request, lang, view, s, who, address_form=values,
                               address_error=message, status_code=status)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/lightning?done=claimed",
                            status_code=303)


def _expiry(values: dict[str, Any]) -> int | None:
    """The form's expiry choice, in seconds (empty: never)."""
    text = str(values.get("expires_in", "")).strip()
    if not text:
        return None
    if not (text.isascii() and text.isdigit() and len(text) <= 10):
        raise FormRefused("expires: a number of seconds")
    return int(text)


@router.post("/lightning/vouchers",
             dependencies=[KeepBody, CsrfProtected, PageCreateLimit])
async def create_voucher(merchant_id: str, request: Request, view: SteppedUp,
                         lang: PageLang) -> Response:
    """A voucher holds its amount for whoever holds the link: a withdrawal, after a step-up.
    The answer is the page showing the link, the only time it is shown (only its hash is
    stored), not a redirect that would have to carry it in a URL. Made once per form
    (:func:`~satvault.web.pages.merchant.scope.once`): the form sent again says the voucher
    was made, without its link."""
    values = await form_values(request)
    settings = settings_of(request)
    made: dict[str, VoucherOut] = {}
    try:
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
        body = parse(VoucherIn, {
            "amount_msat": form_msat(values, "amount_sat", "amount"),
            "min_msat": form_msat(values, "min_sat", "least amount"),
            "description": str(values.get("description", "")).strip(),
            "expires_in": _expiry(values)})

        async def work(s: AsyncSession) -> tuple[int, Any]:
            here = await owner(s, view, merchant_id)
            voucher, token = await svc.open_voucher(
                s, wallet=await _wallet(s, here), amount_msat=body.amount_msat,
                min_msat=body.min_msat, description=body.description, settings=settings,
                actor=here.actor, initiator=view.user_id, expires_in=body.lifetime())
            made["created"] = voucher_out(voucher, settings, token)
            return 201, {"id": voucher.id}  # stored: no link

        answer = await once(request, values, owner=f"merchant:{who.id}", work=work)
    except (FormRefused, SatvaultError) as exc:
        status, message = refusal(exc)
        async with transaction(request) as s:
            who = await owner(s, view, merchant_id)
            return await _page(request, lang, view, s, who, voucher_form=values,
                               voucher_error=message, status_code=status)
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        if "created" not in made:  # the same form again: made by its first sending
            return await _page(request, lang, view, s, who, notice=translate(lang, N_(
                "This form was sent already: it made voucher %(id)s, whose link was shown "
                "on the answer to the first sending only. If you did not keep it, cancel "
                "that voucher and make another.")) % {"id": made_id(answer)})
        return await _page(request, lang, view, s, who, created=made["created"],
                           status_code=201, notice="The voucher was created; its amount is "
                                                   "held until it is used.")


@router.post("/lightning/vouchers/{voucher_id}/cancel", dependencies=[CsrfProtected])
async def cancel_voucher(merchant_id: str, voucher_id: str, request: Request,
                         view: PageUser, lang: PageLang) -> Response:
    async with transaction(request) as s:
        who = await owner(s, view, merchant_id)
        voucher = await svc.visible_voucher(s, who.principal, voucher_id)
        canceled = await svc.cancel_voucher(s, voucher, actor=who.actor)
        if not canceled:
            return await _page(request, lang, view, s, who, status_code=409,
                               voucher_error=f"voucher {voucher_id} is {voucher.status}")
    return RedirectResponse(f"/dashboard/m/{merchant_id}/lightning?done=canceled",
                            status_code=303)
