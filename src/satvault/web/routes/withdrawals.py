"""Withdrawal endpoints. Creating or cancelling one requires an ``Idempotency-Key``; the work
is :mod:`satvault.withdrawals.service`'s and :mod:`satvault.withdrawals.cancel`'s."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from sqlalchemy import bindparam
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.access import require_holder, sees_wallet, visible_wallet
from satvault.accounts.models import Wallet
from satvault.accounts.service import Principal
from satvault.db import one_read
from satvault.kernel.errors import NotFound
from satvault.lightning.errors import PaymentRefused
from satvault.lightning.models import LnPayment, LnPaymentStatus
from satvault.lightning.payments import cancel_on_node, payable_at_once
from satvault.lightning.takes import Taken, claim_take, refuse, request_digest
from satvault.payouts.models import Withdrawal, WithdrawalMethod
from satvault.payouts.service import allows_by_columns, usage_columns, usage_params
from satvault.web.deps import IdempotencyKey, SessionDep, require_scope
from satvault.web.idempotency import key_used, run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import CreateLimit
from satvault.web.schemas.withdrawals import CancelIn, WithdrawalIn, WithdrawalOut
from satvault.web.state import (
    invoice_follow_up_of,
    lightning_of,
    lnurl_http_of,
    payer_wake_of,
    sessions_of,
    settings_of,
    store_invoice_hook_of,
)
from satvault.withdrawals.cancel import cancel_pending
from satvault.withdrawals.policy.service import (
    check_internal,
    initiator_of_principal,
    live_columns,
    live_from,
    refuse_internal_early,
)
from satvault.withdrawals.refused import cancels_on_refusal
from satvault.withdrawals.service import (
    PreparedDestination,
    latest_payment,
    pay_own_screened,
    prepare_destination,
    read_payer,
    withdraw,
)

__all__ = ["out", "router", "submit_withdrawal"]

# What the first read of a withdrawal request folds in, built once with bound parameters
# (``i_owner``, ``i_key``) so that read is built once too: whether the idempotency key was
# used, and the live withdrawal policy.
# Folded into the payer's one read, per database: whether the key was used, the live
# withdrawal policy, and the payer's usage against its limits (an internal payment takes the
# payee's invoice off the node before its unit of work: a payer it would refuse must not).
_PAYER_ALSO = {dialect: (key_used(bindparam("i_owner"), bindparam("i_key")), *live_columns(),
                         *usage_columns(dialect)) for dialect in ("postgresql", "sqlite")}
_INTERNAL = WithdrawalMethod.INTERNAL.value

router = APIRouter(prefix="/api/v1", tags=["withdrawals"],
                   # a node, the ledger or a rate source busy, unreachable or not set up
                   responses=problem_responses(503))
Withdrawer = Annotated[Principal, Depends(require_scope("withdrawals:write"))]
Reader = Annotated[Principal, Depends(require_scope("wallet:read"))]


def out(w: Withdrawal, ln: LnPayment | None = None) -> WithdrawalOut:
    return WithdrawalOut(id=w.id, wallet_id=w.wallet_id, method=w.method, status=w.status,
                         destination=w.destination, amount_msat=w.amount_msat,
                         fee_reserve_msat=w.fee_reserve_msat, fee_msat=w.fee_msat, txid=w.txid,
                         payment_hash=ln.payment_hash if ln else None,
                         failure_reason=ln.failure_reason
                         if ln and ln.status == LnPaymentStatus.FAILED else None,
                         invoice_id=w.invoice_id, created_at=w.created_at, updated_at=w.updated_at)


@router.post("/wallets/{wallet_id}/withdrawals", response_model=WithdrawalOut,
             status_code=201, dependencies=[CreateLimit])
async def create_withdrawal(
    wallet_id: str, body: WithdrawalIn, request: Request, principal: Withdrawer,
    idempotency_key: IdempotencyKey,
) -> JSONResponse:
    return await submit_withdrawal(request, principal, wallet_id=wallet_id, body=body,
                                   idempotency_key=idempotency_key)


async def submit_withdrawal(request: Request, principal: Principal, *, wallet_id: str,
                            body: WithdrawalIn, idempotency_key: str | None) -> JSONResponse:
    """Create a withdrawal once per (caller, idempotency key): the API's endpoint, and the
    merchant dashboard's withdrawal form (whose key is a hidden field of the form). The
    answer is the API's (201 with the withdrawal, or a replay); refusals raise."""
    sessions, settings, lightning = sessions_of(request), settings_of(request), \
        lightning_of(request)
    owner = f"{principal.owner_type}:{principal.owner_id}"
    # One read before anything else: the wallet, the destination if it is the BOLT11 of one
    # of our own invoices (by its text, before any decoding), whether the key was used.
    async with one_read(sessions) as session:
        payer = await read_payer(
            session, wallet_id=wallet_id, destination=body.destination,
            also=_PAYER_ALSO[session.get_bind().dialect.name],
            also_params={"i_owner": owner, "i_key": idempotency_key or "",
                         **usage_params(_INTERNAL)})
    known = payer.wallet if payer.wallet is not None \
        and sees_wallet(principal, payer.wallet) else None
    if known is not None:
        require_holder(principal, known)  # an admin sees it, and may not spend from it
    on_store_invoice = store_invoice_hook_of(request)
    # The payee's invoice this request took off the node and the paying wallet, once it did:
    # refused afterwards, its row is cancelled as the node has it and the refusal counted
    # against the payer (satvault.withdrawals.refused).
    taken: list[tuple[str, str]] = []
    refusal_cancels = cancels_on_refusal(sessions, lambda: taken[0] if taken else None,
                                         follow_up=invoice_follow_up_of(request))

    if known is not None and payer.own is not None and lightning is not None \
            and not payer.also[0]:
        own, node = payer.own, lightning
        amount = payable_at_once(own, payer=known, amount_msat=body.amount_msat,
                                 settings=settings)
        if amount is not None and allows_by_columns(payer.also[3:7], wallet=known,
                                                    rail=_INTERNAL, amount_msat=amount,
                                                    settings=settings):
            payer_wallet, live = known, live_from(*payer.also[1:3])
            # An internal payment: its only remote call, taking our invoice off our node, is
            # harmless twice, so one transaction holds the payment and the key's response.
            # The withdrawal policy's rules on the payment alone refuse it before the payee
            # loses the invoice (the live policy came with the one read).
            async def cancel() -> None:
                refuse_internal_early(live, wallet=payer_wallet, amount_msat=amount)
                # The take under the person's lock first: the person's other payments taking
                # invoices off the node now are counted (found from outside: a burst passed
                # the one read's checks each alone and cancelled many payees' invoices).
                found, refusals = await claim_take(
                    sessions, payment_hash=own.payment_hash, wallet_id=payer_wallet.id,
                    amount_msat=amount, settings=settings,
                    request=request_digest(owner, idempotency_key))
                if found in (Taken.NOT_OPEN, Taken.NO_WALLET):
                    raise PaymentRefused("this invoice is no longer open (paid, cancelled or "
                                         "being paid meanwhile)")
                refuse(found, refusals, payment_hash=own.payment_hash, settings=settings)
                await cancel_on_node(node, own.payment_hash)
                taken[:] = [(own.payment_hash, payer_wallet.id)]

            async def pay(session: AsyncSession, _: None) -> tuple[int, Any]:
                assert known is not None and amount is not None
                wd = await pay_own_screened(session, wallet=known, own=own,
                                            amount_msat=amount, settings=settings,
                                            on_store_invoice=on_store_invoice)
                # The withdrawal policy sees internal payments too (allow or block).
                await check_internal(session, wd, wallet=known, settings=settings, live=live)
                return 201, out(wd).model_dump(mode="json")

            async with refusal_cancels:
                # Group-committed with the payer's other payments waiting in this process
                # (satvault.kernel.grouped): they all lock this wallet's row anyway.
                return await run_idempotent(request, owner=owner, key=idempotency_key,
                                            work=pay, prepare=cancel, repeatable_prepare=True,
                                            group_key=payer_wallet.id)

    async def prepare() -> tuple[Wallet, PreparedDestination]:
        if known is None:  # inside the claim, so the refusal is stored with the key
            raise NotFound(f"wallet {wallet_id!r} not found")
        prepared = await prepare_destination(
            sessions, settings=settings, lightning=lightning, wallet=known,
            destination=body.destination, amount_msat=body.amount_msat,
            http=lnurl_http_of(request), request=request_digest(owner, idempotency_key))
        taken[:] = [t for t in (prepared.taken(),) if t is not None]
        return known, prepared

    async def work(session: AsyncSession, ready: tuple[Wallet, PreparedDestination]
                   ) -> tuple[int, Any]:
        wallet, prepared = ready

        async def wallet_for(_s: AsyncSession) -> Wallet:
            return wallet

        wd = await withdraw(session, settings=settings, lightning=lightning,
                            wallet_for=wallet_for, prepared=prepared,
                            payer_wake=payer_wake_of(request),
                            on_store_invoice=on_store_invoice,
                            initiator=await initiator_of_principal(session, principal))
        # An internal payment is settled in this transaction and has no node payment.
        payment = None if wd.method == WithdrawalMethod.INTERNAL \
            else await latest_payment(session, wd.id)
        return 201, out(wd, payment).model_dump(mode="json")

    async with refusal_cancels:
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


@router.post("/withdrawals/{withdrawal_id}/cancel", response_model=WithdrawalOut,
             responses=problem_responses(409))
async def cancel_withdrawal(withdrawal_id: str, request: Request, principal: Withdrawer,
                            idempotency_key: IdempotencyKey, body: CancelIn | None = None
                            ) -> JSONResponse:
    """Cancel a ``pending`` withdrawal: its hold is voided and the money is available again.
    Its owner's key (``withdrawals:write``) or an admin's. One the payout job batched or the
    Lightning payer took already is a 409 ``cannot-cancel`` whose ``status`` says where it
    is; nothing changes. Someone else's is a 404, like a missing one."""
    owner = f"{principal.owner_type}:{principal.owner_id}"
    reason = body.reason if body is not None else ""

    async def work(session: AsyncSession) -> tuple[int, Any]:
        wd = await session.get(Withdrawal, withdrawal_id)
        try:
            if wd is None:
                raise NotFound(withdrawal_id)
            await visible_wallet(session, principal, wd.wallet_id)
        except NotFound:
            raise NotFound(f"withdrawal {withdrawal_id!r} not found") from None
        wd = await cancel_pending(session, withdrawal_id=withdrawal_id, actor=owner,
                                  reason=reason)
        return 200, out(wd, await latest_payment(session, wd.id)).model_dump(mode="json")

    return await run_idempotent(request, owner=owner, key=idempotency_key, work=work)
