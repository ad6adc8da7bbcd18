"""Moving the merchant wallet's money from the dashboard:

- ``/dashboard/m/{merchant_id}/deposit``: a fresh on-chain address (BIP21 + QR) or a BOLT11
  invoice for an amount, through the deposits API's services;
- ``/dashboard/m/{merchant_id}/withdraw``: pay a Bitcoin address, a BOLT11 invoice or a
  Lightning Address, through the withdrawals API's own code path
  (:func:`satvault.web.routes.withdrawals.submit_withdrawal`), idempotent by a key the form
  carries as a hidden field (a double submit pays once), and only after a recent step-up;
  the wallet's withdrawals with their status, and one withdrawal's page.

Bad input shows the form again with the message and the user's input; nothing changed.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import ValidationError

from satvault.accounts.access import visible_wallet
from satvault.accounts.models import Merchant
from satvault.amounts import InvalidAmount, parse_whole_sats
from satvault.auth.sessions import SessionView
from satvault.checkout.i18n import Language
from satvault.kernel.errors import NotFound, SatvaultError
from satvault.lightning.invoices import node_invoice, store_invoice
from satvault.lightning.models import LnInvoice
from satvault.onchain.deposits import create_deposit, view_deposit
from satvault.onchain.errors import InvalidDescriptor
from satvault.payouts.models import Withdrawal
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
from satvault.web.pages.merchant.scope import field_message, form_key
from satvault.web.pages.merchant.texts import N_, translate
from satvault.web.pages.merchant.wallet_access import merchant_wallet
from satvault.web.pages.render import render
from satvault.web.problems import problem_for
from satvault.web.routes.withdrawals import submit_withdrawal
from satvault.web.schemas.deposits import DepositIn
from satvault.web.schemas.withdrawals import WithdrawalIn
from satvault.web.state import runtime_of, sessions_of, settings_of
from satvault.withdrawals.listing import display_status, recent_withdrawals
from satvault.withdrawals.service import destination_kind, latest_payment

__all__ = ["RAIL_KINDS", "parse_sats", "router"]

router = APIRouter(include_in_schema=False, dependencies=[Depends(mark_page)])
# The withdrawal form's rails and the destination kind each accepts.
RAIL_KINDS = {"onchain": "onchain", "bolt11": "bolt11", "lnaddress": "lnurl"}


class FormError(Exception):
    def __init__(self, message: str, status: int = 422) -> None:
        super().__init__(message)
        self.status = status


def parse_sats(value: str, *, required: bool) -> int | None:
    """A form's amount in whole sats → msat; anything else is the form's error."""
    if not value.strip():
        if required:
            raise FormError(N_("Enter an amount in sats."))
        return None
    try:
        sats = parse_whole_sats(value)
    except InvalidAmount:
        raise FormError(N_("The amount is a whole, positive number of sats.")) from None
    if sats <= 0:
        raise FormError(N_("The amount is a whole, positive number of sats."))
    return sats * 1000


def _field(form: Any, name: str, limit: int = 2000) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


def _validation_message(exc: ValidationError) -> str:
    return field_message(exc.errors()[0])


# Deposits ---------------------------------------------------------------------------------

@router.get("/dashboard/m/{merchant_id}/deposit", response_class=HTMLResponse)
async def deposit_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                       session: SessionDep) -> HTMLResponse:
    _principal, merchant, _wallet = await merchant_wallet(session, view, merchant_id)
    return render(request, "merchant/deposit.html", lang=lang, view=view, merchant=merchant,
                  form={}, error=None, has_lightning=_lightning(request) is not None)


def _lightning(request: Request) -> Any:
    return getattr(runtime_of(request), "lightning", None)


@router.post("/dashboard/m/{merchant_id}/deposit", response_class=HTMLResponse,
             dependencies=[CsrfProtected, PageCreateLimit])
async def request_deposit(merchant_id: str, request: Request, view: PageUser,
                          lang: PageLang) -> Response:
    sessions, settings = sessions_of(request), settings_of(request)
    form = await request.form()
    values = {k: _field(form, k, 300) for k in ("method", "amount_sat", "description")}
    async with sessions() as session, session.begin():
        principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    try:
        body = DepositIn(method=values["method"] or "onchain",  # type: ignore[arg-type]
                         amount_msat=parse_sats(values["amount_sat"], required=False),
                         description=values["description"])
    except FormError as exc:
        return _deposit_again(request, lang, view, merchant, values, str(exc), exc.status)
    except ValidationError as exc:
        return _deposit_again(request, lang, view, merchant, values,
                              _validation_message(exc), 422)
    try:
        if body.method == "lightning":  # as the API: the node between two units of work
            lightning = _lightning(request)
            if lightning is None:
                raise InvalidDescriptor("no Lightning backend is configured")
            issued = await node_invoice(lightning, amount_msat=body.amount_msat,
                                        memo=body.description,
                                        expiry_seconds=settings.ln_invoice_expiry_seconds,
                                        max_msat=settings.ln_max_payment_msat)
            async with sessions() as session, session.begin():
                inv = await store_invoice(session, issued, wallet=wallet,
                                          memo=body.description,
                                          expiry_seconds=settings.ln_invoice_expiry_seconds)
                deposit_id = inv.id
        else:
            async with sessions() as session, session.begin():
                wallet = await visible_wallet(session, principal, wallet.id)
                made = await create_deposit(session, wallet=wallet, settings=settings,
                                            amount_msat=body.amount_msat,
                                            description=body.description)
                deposit_id = made.request.id
    except SatvaultError as exc:
        mapped = problem_for(exc)
        if mapped is None:
            raise
        return _deposit_again(request, lang, view, merchant, values,
                              _problem_detail(mapped.body), mapped.status_code)
    return RedirectResponse(f"/dashboard/m/{merchant_id}/deposit/{deposit_id}",
                            status_code=303)


def _deposit_again(request: Request, lang: Language, view: SessionView, merchant: Merchant,
                   values: dict[str, str], error: str, status: int) -> HTMLResponse:
    return render(request, "merchant/deposit.html", lang=lang, view=view, merchant=merchant,
                  form=values, error=translate(lang, error),
                  has_lightning=_lightning(request) is not None, status_code=status)


# Refusals whose API detail is written for programs, said for people.
_PLAIN = {
    "insufficient-funds": N_("Not enough available money for this amount and its fee "
                             "reserve."),
    "idempotency-key-in-use": N_("This withdrawal is being sent already; wait a moment."),
}


def _problem_detail(body: bytes | memoryview) -> str:
    try:
        problem = json.loads(bytes(body))
        slug = str(problem.get("type", "")).rsplit("/", 1)[-1]
        return _PLAIN.get(slug) or str(problem["detail"])
    except (ValueError, KeyError, TypeError, AttributeError):
        return N_("This request was refused.")


@router.get("/dashboard/m/{merchant_id}/deposit/{deposit_id}", response_class=HTMLResponse)
async def deposit_detail(merchant_id: str, deposit_id: str, request: Request,
                         view: PageUser, lang: PageLang, session: SessionDep) -> HTMLResponse:
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    try:
        if deposit_id.startswith("lni_"):
            inv = await session.get(LnInvoice, deposit_id)
            if inv is None or inv.wallet_id != wallet.id:
                raise NotFound(deposit_id)
            return render(request, "merchant/deposit_done.html", lang=lang, view=view,
                          merchant=merchant, method="lightning", deposit_id=inv.id,
                          status=str(inv.status.value), amount_msat=inv.amount_msat,
                          uri="lightning:" + inv.bolt11, text=inv.bolt11,
                          expires_at=inv.expires_at, received_msat=inv.paid_msat or 0,
                          pending_msat=0)
        dv = await view_deposit(session, deposit_id)
        if dv.request.wallet_id != wallet.id:
            raise NotFound(deposit_id)
    except NotFound:
        raise NotFound(f"deposit {deposit_id!r} not found") from None
    return render(request, "merchant/deposit_done.html", lang=lang, view=view,
                  merchant=merchant, method="onchain", deposit_id=dv.request.id,
                  status=str(dv.status), amount_msat=dv.request.amount_msat, uri=dv.bip21,
                  text=dv.address, expires_at=dv.request.expires_at,
                  received_msat=dv.confirmed_msat, pending_msat=dv.pending_msat)


# Withdrawals ------------------------------------------------------------------------------

@router.get("/dashboard/m/{merchant_id}/withdraw", response_class=HTMLResponse)
async def withdraw_page(merchant_id: str, request: Request, view: PageUser, lang: PageLang,
                        session: SessionDep) -> HTMLResponse:
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    rows = await recent_withdrawals(session, wallet_id=wallet.id)
    return render(request, "merchant/withdraw.html", lang=lang, view=view, merchant=merchant,
                  rows=rows, form={}, error=None, rail="onchain", key=form_key(),
                  has_lightning=_lightning(request) is not None)


async def _withdraw_again(request: Request, lang: Language, view: SessionView,
                          merchant_id: str, values: dict[str, str], error: str,
                          status: int) -> HTMLResponse:
    """The form again with the message, the user's input and a NEW idempotency key (the
    corrected request is another request)."""
    async with sessions_of(request)() as session, session.begin():
        _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
        rows = await recent_withdrawals(session, wallet_id=wallet.id)
    return render(request, "merchant/withdraw.html", lang=lang, view=view, merchant=merchant,
                  rows=rows, form=values, error=translate(lang, error),
                  rail=values.get("rail", "onchain"),
                  key=form_key(), has_lightning=_lightning(request) is not None,
                  status_code=status)


@router.post("/dashboard/m/{merchant_id}/withdraw", response_class=HTMLResponse,
             dependencies=[KeepBody, CsrfProtected, PageCreateLimit])
async def withdraw(merchant_id: str, request: Request, view: SteppedUp,
                   lang: PageLang) -> Response:
    form = await request.form()
    values = {"rail": _field(form, "rail", 20), "destination": _field(form, "destination"),
              "amount_sat": _field(form, "amount_sat", 40)}
    key = _field(form, "idempotency_key", 200)
    async with sessions_of(request)() as session, session.begin():
        principal, _merchant, wallet = await merchant_wallet(session, view, merchant_id)
    try:
        rail = values["rail"]
        if rail not in RAIL_KINDS:
            raise FormError(N_("Choose how to pay: on-chain, Lightning invoice or Lightning "
                            "Address."))
        destination = values["destination"].strip()
        if not destination:
            raise FormError(N_("Enter where to send the money."))
        if destination_kind(destination) != RAIL_KINDS[rail]:
            raise FormError({"onchain": N_("That is not a Bitcoin address."),
                             "bolt11": N_("That is not a Lightning invoice (BOLT11)."),
                             "lnaddress": N_("That is not a Lightning Address (name@domain).")
                             }[rail])
        amount = parse_sats(values["amount_sat"], required=rail != "bolt11")
        if not key:
            raise FormError(N_("This form expired. Reload the page and try again."))
        body = WithdrawalIn(destination=destination, amount_msat=amount)
    except FormError as exc:
        return await _withdraw_again(request, lang, view, merchant_id, values, str(exc),
                                     exc.status)
    except ValidationError as exc:
        return await _withdraw_again(request, lang, view, merchant_id, values,
                                     _validation_message(exc), 422)
    try:
        answer = await submit_withdrawal(request, principal, wallet_id=wallet.id, body=body,
                                         idempotency_key=key)
    except SatvaultError as exc:
        mapped = problem_for(exc)
        if mapped is None:
            raise
        return await _withdraw_again(request, lang, view, merchant_id, values,
                                     _problem_detail(mapped.body), mapped.status_code)
    if answer.status_code >= 400:  # a refusal stored with this key, replayed
        return await _withdraw_again(request, lang, view, merchant_id, values,
                                     _problem_detail(answer.body), answer.status_code)
    made = json.loads(bytes(answer.body))
    return RedirectResponse(f"/dashboard/m/{merchant_id}/withdrawals/{made['id']}",
                            status_code=303)


@router.get("/dashboard/m/{merchant_id}/withdrawals/{withdrawal_id}",
            response_class=HTMLResponse)
async def withdrawal_detail(merchant_id: str, withdrawal_id: str, request: Request,
                            view: PageUser, lang: PageLang, session: SessionDep
                            ) -> HTMLResponse:
    _principal, merchant, wallet = await merchant_wallet(session, view, merchant_id)
    wd = await session.get(Withdrawal, withdrawal_id)
    if wd is None or wd.wallet_id != wallet.id:
        raise NotFound(f"withdrawal {withdrawal_id!r} not found")
    payment = await latest_payment(session, wd.id)
    return render(request, "merchant/withdrawal.html", lang=lang, view=view,
                  merchant=merchant, wd=wd, payment=payment,
                  status=display_status(wd, payment))
