"""Deposit endpoints: request an on-chain deposit address for a wallet, follow it, show its QR."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import visible_wallet
from satvault.accounts.service import Principal
from satvault.db import one_read
from satvault.kernel.errors import NotFound
from satvault.lightning.invoices import node_invoice, store_invoice
from satvault.lightning.models import LnInvoice
from satvault.onchain.deposits import DepositView, create_deposit, view_deposit
from satvault.onchain.errors import InvalidDescriptor
from satvault.onchain.models import CreditState
from satvault.onchain.qr import qr_png, qr_svg
from satvault.web.deps import SessionDep, SettingsDep, require_scope
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import CreateLimit, PublicLimit
from satvault.web.schemas.deposits import DepositIn, DepositOut, DepositPaymentOut

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["deposits"],
                   # a node, the ledger or a rate source busy, unreachable or not set up
                   responses=problem_responses(503))
WalletWriter = Annotated[Principal, Depends(require_scope("wallet:write"))]
WalletReader = Annotated[Principal, Depends(require_scope("wallet:read"))]


def _out(v: DepositView) -> DepositOut:
    r = v.request
    return DepositOut(
        id=r.id, wallet_id=r.wallet_id, method=r.method, status=v.status,
        amount_msat=r.amount_msat, description=r.description, address=v.address, bip21=v.bip21,
        qr_svg=f"/api/v1/deposits/{r.id}/qr.svg", qr_png=f"/api/v1/deposits/{r.id}/qr.png",
        required_confirmations=r.required_confirmations, received_msat=v.confirmed_msat,
        pending_msat=v.pending_msat, created_at=r.created_at, expires_at=r.expires_at,
        payments=[DepositPaymentOut(txid=p.txid, vout=p.vout, amount_msat=p.amount_msat,
                                    confirmations=p.confirmations, status=p.status,
                                    credited=p.credit_state == CreditState.CREDITED)
                  for p in v.payments],
    )


def _ln_out(inv: LnInvoice) -> DepositOut:
    paid = inv.paid_msat or 0
    return DepositOut(
        id=inv.id, wallet_id=inv.wallet_id, method="lightning", status=inv.status,
        amount_msat=inv.amount_msat, description=inv.description, address=None, bip21=None,
        bolt11=inv.bolt11, payment_hash=inv.payment_hash,
        qr_svg=f"/api/v1/deposits/{inv.id}/qr.svg", qr_png=f"/api/v1/deposits/{inv.id}/qr.png",
        required_confirmations=0, received_msat=paid, pending_msat=0, payments=[],
        created_at=inv.created_at, expires_at=inv.expires_at)


async def _ln_invoice(session: AsyncSession, deposit_id: str) -> LnInvoice:
    inv = await session.get(LnInvoice, deposit_id)
    if inv is None:
        raise NotFound(f"deposit {deposit_id!r} not found")
    return inv


@router.post("/wallets/{wallet_id}/deposits", response_model=DepositOut, status_code=201,
             dependencies=[CreateLimit])
async def request_deposit(wallet_id: str, request: Request, settings: SettingsDep,
                          principal: WalletWriter, body: DepositIn | None = None) -> DepositOut:
    """An on-chain address (``method: onchain``, also with no body) or a BOLT11 invoice
    (``method: lightning``). The node is asked for the invoice between two short units of
    work, never inside one."""
    body = body or DepositIn()
    sessions = request.app.state.sessions
    if body.method == "lightning":
        async with one_read(sessions) as session:
            wallet = await visible_wallet(session, principal, wallet_id)
        runtime = request.app.state.runtime
        if runtime is None or runtime.lightning is None:
            raise InvalidDescriptor("no Lightning backend is configured")
        issued = await node_invoice(runtime.lightning, amount_msat=body.amount_msat,
                                    memo=body.description,
                                    expiry_seconds=settings.ln_invoice_expiry_seconds,
                                    max_msat=settings.ln_max_payment_msat)
        async with sessions() as session, session.begin():
            inv = await store_invoice(session, issued, wallet=wallet, memo=body.description,
                                      expiry_seconds=settings.ln_invoice_expiry_seconds)
            return _ln_out(inv)
    async with sessions() as session, session.begin():
        wallet = await visible_wallet(session, principal, wallet_id)
        view = await create_deposit(session, wallet=wallet, settings=settings,
                                    amount_msat=body.amount_msat, description=body.description)
        return _out(view)


@router.get("/deposits/{deposit_id}", response_model=DepositOut)
async def get_deposit(deposit_id: str, session: SessionDep, principal: WalletReader
                      ) -> DepositOut:
    # Someone else's deposit is answered exactly like a missing one: nothing about its wallet,
    # and no way to tell existing ids from made-up ones.
    try:
        if deposit_id.startswith("lni_"):
            inv = await _ln_invoice(session, deposit_id)
            await visible_wallet(session, principal, inv.wallet_id)
            return _ln_out(inv)
        view = await view_deposit(session, deposit_id)
        await visible_wallet(session, principal, view.request.wallet_id)
    except NotFound:
        raise NotFound(f"deposit {deposit_id!r} not found") from None
    return _out(view)


@router.get("/deposits/{deposit_id}/qr.{fmt}", include_in_schema=False,
            dependencies=[PublicLimit])
async def deposit_qr(deposit_id: str, fmt: str, session: SessionDep) -> Response:
    """Public by unguessable id (an <img> cannot send an API key); shows only the URI."""
    if fmt not in ("svg", "png"):
        raise NotFound("unknown image format")
    if deposit_id.startswith("lni_"):
        data = "lightning:" + (await _ln_invoice(session, deposit_id)).bolt11.upper()
    else:
        data = (await view_deposit(session, deposit_id)).bip21
    if fmt == "svg":
        return Response(qr_svg(data), media_type="image/svg+xml")
    return Response(qr_png(data), media_type="image/png")

