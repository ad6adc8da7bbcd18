"""Withdrawal endpoints. Creating one requires an ``Idempotency-Key``."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.api import visible_wallet
from satvault.accounts.models import Wallet
from satvault.accounts.service import Principal
from satvault.kernel.errors import NotFound
from satvault.lightning.errors import AmountRequired, PaymentRefused
from satvault.lightning.models import LnPayment
from satvault.lightning.payments import request_ln_withdrawal, take_off_node
from satvault.payouts.models import Withdrawal
from satvault.payouts.schemas import WithdrawalIn, WithdrawalOut
from satvault.payouts.service import request_withdrawal
from satvault.web.deps import IdempotencyKey, SessionDep, require_scope
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import CreateLimit

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["withdrawals"],
                   # a node, the ledger or a rate source busy, unreachable or not set up
                   responses=problem_responses(503))
Withdrawer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]
Reader = Annotated[Principal, Depends(require_scope("wallet:read"))]


_ADDRESS = re.compile(r"[a-z0-9._+-]+@[a-z0-9.-]+(:\d{1,5})?")  # LUD-16, optional port


def destination_kind(destination: str) -> str:
    """bolt11 | lnurl | onchain — the method is inferred from the destination."""
    text = destination.strip().lower()
    if text.startswith("lightning:"):
        text = text[len("lightning:"):]
    if text.startswith(("lnbcrt", "lnbc", "lntbs", "lntb")):
        return "bolt11"
    if text.startswith(("lnurl", "lnurlp://")) or _ADDRESS.fullmatch(text) \
            or (text.startswith("https://") and "lightning=lnurl" in text):
        return "lnurl"
    return "onchain"


def out(w: Withdrawal, ln: LnPayment | None = None) -> WithdrawalOut:
    return WithdrawalOut(id=w.id, wallet_id=w.wallet_id, method=w.method, status=w.status,
                         destination=w.destination, amount_msat=w.amount_msat,
                         fee_reserve_msat=w.fee_reserve_msat, fee_msat=w.fee_msat, txid=w.txid,
                         payment_hash=ln.payment_hash if ln else None,
                         failure_reason=ln.failure_reason if ln and ln.status == "failed"
                         else None,
                         created_at=w.created_at, updated_at=w.updated_at)


async def latest_payment(session: AsyncSession, withdrawal_id: str) -> LnPayment | None:
    return (await session.execute(select(LnPayment).where(
        LnPayment.withdrawal_id == withdrawal_id).order_by(LnPayment.attempt.desc()).limit(1)
    )).scalar_one_or_none()


@dataclass(frozen=True)
class PreparedDestination:
    """A withdrawal destination after every remote call it needs (LNURL / Lightning Address
    resolved to a BOLT11), made before any transaction opens."""

    kind: str  # onchain | bolt11 | lnurl
    destination: str  # what the client sent
    bolt11: str | None  # what will be paid over Lightning
    amount_msat: int | None  # the amount to pass on (None: the destination carries it)
    taken_off_node: bool = False  # one of our own invoices, already cancelled on the node


async def prepare_destination(request: Request, *, wallet: Wallet, destination: str,
                              amount_msat: int | None) -> PreparedDestination:
    """Resolve the destination over the network, outside any transaction: no lock and no
    database connection is held while a remote LNURL server or the node answers (or does
    not). ``wallet`` pays (its ownership already checked)."""
    prepared = await _resolve(request, destination=destination, amount_msat=amount_msat)
    if prepared.bolt11 is None:
        return prepared
    runtime = request.app.state.runtime
    taken = await take_off_node(request.app.state.sessions, wallet=wallet,
                                bolt11=prepared.bolt11, amount_msat=prepared.amount_msat,
                                settings=request.app.state.settings,
                                backend=runtime.lightning)
    return replace(prepared, taken_off_node=taken)


async def _resolve(request: Request, *, destination: str, amount_msat: int | None
                   ) -> PreparedDestination:
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    kind = destination_kind(destination)
    if kind == "onchain":
        return PreparedDestination(kind, destination, None, amount_msat)
    if runtime is None or runtime.lightning is None:
        raise PaymentRefused("Lightning is not configured on this platform")
    if kind == "bolt11":
        return PreparedDestination(kind, destination, destination, amount_msat)
    if amount_msat is None:
        raise AmountRequired("amount_msat is required to pay an LNURL or address")
    from satvault.lightning.lnurl import resolve_pay_request

    injected = getattr(request.app.state, "lnurl_http", None)  # tests, proxies
    async with contextlib.AsyncExitStack() as stack:
        http: httpx.AsyncClient = injected if injected is not None else \
            await stack.enter_async_context(
                httpx.AsyncClient(timeout=10.0, follow_redirects=False))
        resolved = await resolve_pay_request(
            destination, amount_msat, http=http,
            allow_private_hosts=settings.environment == "development")
    return PreparedDestination(kind, destination, resolved.bolt11, None)


async def withdraw(session: AsyncSession, request: Request, *,
                   wallet_for: Callable[[AsyncSession], Awaitable[Wallet]],
                   prepared: PreparedDestination, store_id: str | None = None) -> Withdrawal:
    """The one path every withdrawal takes (API, refunds), inside the unit of work, once
    :func:`prepare_destination` has done the remote part. ``wallet_for`` runs the ownership
    check."""
    settings = request.app.state.settings
    runtime = request.app.state.runtime
    if prepared.kind == "onchain":
        return await request_withdrawal(session, wallet=await wallet_for(session),
                                        destination=prepared.destination,
                                        amount_msat=prepared.amount_msat,
                                        settings=settings, store_id=store_id)
    assert prepared.bolt11 is not None
    backend = runtime.lightning if runtime is not None else None
    if backend is None:
        raise PaymentRefused("Lightning is not configured on this platform")
    wd = await request_ln_withdrawal(
        session, wallet=await wallet_for(session), bolt11=prepared.bolt11,
        amount_msat=prepared.amount_msat, settings=settings, backend=backend,
        original=prepared.destination if prepared.kind == "lnurl" else None,
        store_id=store_id, taken_off_node=prepared.taken_off_node,
        on_store_invoice=runtime.on_store_invoice if runtime is not None else None)
    # An internal payment is settled already; only a payment for the node wakes the payer.
    if wd.method == "lightning" and runtime is not None and runtime.payer_wake is not None:
        runtime.payer_wake.set()
    return wd


@router.post("/wallets/{wallet_id}/withdrawals", response_model=WithdrawalOut,
             status_code=201, dependencies=[CreateLimit])
async def create_withdrawal(
    wallet_id: str, body: WithdrawalIn, request: Request, principal: Withdrawer,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    async def prepare() -> tuple[Wallet, PreparedDestination]:
        # The ownership check once, before the remote part; a wallet never changes owner.
        async with request.app.state.sessions() as session:
            wallet = await visible_wallet(session, principal, wallet_id)
        return wallet, await prepare_destination(request, wallet=wallet,
                                                 destination=body.destination,
                                                 amount_msat=body.amount_msat)

    async def work(session: AsyncSession, ready: tuple[Wallet, PreparedDestination]
                   ) -> tuple[int, Any]:
        wallet, prepared = ready

        async def wallet_for(_s: AsyncSession) -> Wallet:
            return wallet

        wd = await withdraw(session, request, wallet_for=wallet_for, prepared=prepared)
        payment = None if wd.method == "internal" else await latest_payment(session, wd.id)
        return 201, out(wd, payment).model_dump(mode="json")

    owner = f"{principal.owner_type}:{principal.owner_id}"
    return await run_idempotent(request, owner=owner, key=idempotency_key, work=work,
                                prepare=prepare)


@router.get("/withdrawals/{withdrawal_id}", response_model=WithdrawalOut)
async def get_withdrawal(withdrawal_id: str, session: SessionDep, principal: Reader
                         ) -> WithdrawalOut:
    # Someone else's withdrawal is answered exactly like a missing one: nothing about its
    # wallet, and no way to tell existing ids from made-up ones.
    try:
        wd = await session.get(Withdrawal, withdrawal_id)
        if wd is None:
            raise NotFound(withdrawal_id)
        await visible_wallet(session, principal, wd.wallet_id)
    except NotFound:
        raise NotFound(f"withdrawal {withdrawal_id!r} not found") from None
    return out(wd, await latest_payment(session, wd.id))
