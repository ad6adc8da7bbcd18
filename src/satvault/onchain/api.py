"""Deposit endpoints: request an on-chain deposit address for a wallet, follow it, show its QR."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response

from satvault.accounts.api import visible_wallet
from satvault.accounts.errors import NotFound
from satvault.accounts.service import Principal
from satvault.onchain.deposits import DepositView, create_deposit, view_deposit
from satvault.onchain.qr import qr_png, qr_svg
from satvault.onchain.schemas import DepositIn, DepositOut, DepositPaymentOut
from satvault.web.deps import SessionDep, SettingsDep, require_scope

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["deposits"])
Admin = Annotated[Principal, Depends(require_scope("admin"))]
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
                                    credited=p.credit_state == "credited")
                  for p in v.payments],
    )


@router.post("/wallets/{wallet_id}/deposits", response_model=DepositOut, status_code=201)
async def request_deposit(wallet_id: str, body: DepositIn, session: SessionDep,
                          settings: SettingsDep, principal: WalletWriter) -> DepositOut:
    wallet = await visible_wallet(session, principal, wallet_id)
    view = await create_deposit(session, wallet=wallet, settings=settings,
                                amount_msat=body.amount_msat, description=body.description)
    return _out(view)


@router.get("/deposits/{deposit_id}", response_model=DepositOut)
async def get_deposit(deposit_id: str, session: SessionDep, principal: WalletReader
                      ) -> DepositOut:
    view = await view_deposit(session, deposit_id)
    await visible_wallet(session, principal, view.request.wallet_id)
    return _out(view)


@router.get("/deposits/{deposit_id}/qr.{fmt}", include_in_schema=False)
async def deposit_qr(deposit_id: str, fmt: str, session: SessionDep) -> Response:
    """Public by unguessable id (an <img> cannot send an API key); shows only the URI."""
    if fmt not in ("svg", "png"):
        raise NotFound("unknown image format")
    view = await view_deposit(session, deposit_id)
    if fmt == "svg":
        return Response(qr_svg(view.bip21), media_type="image/svg+xml")
    return Response(qr_png(view.bip21), media_type="image/png")




@router.post("/admin/chain/notify", status_code=202, tags=["admin"])
async def chain_notify(request: Request, _admin: Admin) -> dict[str, bool]:
    """Wake the chain watcher now. Point bitcoind's ``-blocknotify`` / ``-walletnotify`` (or a
    ZMQ bridge) here; the watcher reconciles fully on every wake-up, so a lost or duplicated
    notification costs nothing but latency."""
    runtime = request.app.state.runtime
    if runtime is not None:
        runtime.watcher.wake.set()
    return {"woken": runtime is not None}
