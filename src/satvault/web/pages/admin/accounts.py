"""``/admin/accounts``: find an account (by e-mail, user id, merchant name or id, wallet id,
deposit address or invoice id) and read it whole — its wallets' balances, its KYC tier and
every KYC record (the history is never overwritten), its risk decisions and cases, the audit
rows about it — and freeze or unfreeze a wallet, with a reason and a confirmation, through
the KYC service the admin API uses."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Form, Path, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from sqlalchemy import or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User, Wallet
from satvault.accounts.views import wallet_balances
from satvault.audit.service import list_events
from satvault.invoices.models import StoreInvoice
from satvault.kernel.errors import NotFound, SatvaultError
from satvault.kyc import requests as kyc_requests
from satvault.kyc import service as kyc
from satvault.ledger.store import get_account
from satvault.lightning.models import LnInvoice
from satvault.onchain.models import OnchainAddress
from satvault.risk import cases
from satvault.risk.models import RiskDecision
from satvault.web.deps import SessionDep
from satvault.web.pages.admin.common import admin_router, refusal
from satvault.web.pages.deps import CsrfProtected, PageAdmin, PageLang, admin_principal
from satvault.web.pages.render import render
from satvault.web.state import sessions_of

__all__ = ["find_accounts", "router"]

router = admin_router()
OwnerType = Annotated[str, Path(pattern="^(user|merchant)$")]
Reason = Annotated[str, Form(max_length=500)]


async def _owner_of_wallet(session: AsyncSession, wallet_id: str) -> tuple[str, str] | None:
    row = (await session.execute(select(Wallet.owner_type, Wallet.owner_id).where(
        Wallet.id == wallet_id))).first()
    return None if row is None else (row[0], row[1])


async def find_accounts(session: AsyncSession, q: str, *, limit: int = 50
                        ) -> list[dict[str, str]]:
    """Users and merchants matching ``q``: e-mail or merchant name (part of it, any case),
    or exactly a user, merchant or wallet id, a deposit address, a store or Lightning invoice
    id. Each hit says how it matched."""
    q = q.strip()
    if not q:
        return []
    hits: dict[tuple[str, str], dict[str, str]] = {}

    def add(kind: str, oid: str, label: str, how: str) -> None:
        hits.setdefault((kind, oid), {"owner_type": kind, "owner_id": oid, "label": label,
                                      "how": how})

    like = f"%{q.lower()}%"
    for u in (await session.execute(select(User).where(or_(
            User.id == q, User.email.ilike(like))).order_by(User.email).limit(limit))).scalars():
        add("user", u.id, u.email, "user id" if u.id == q else "e-mail")
    for m in (await session.execute(select(Merchant).where(or_(
            Merchant.id == q, Merchant.name.ilike(like))).order_by(Merchant.name)
            .limit(limit))).scalars():
        add("merchant", m.id, m.name, "merchant id" if m.id == q else "merchant name")
    owners: list[tuple[tuple[str, str] | None, str]] = [
        (await _owner_of_wallet(session, q), "wallet id")]
    addr = (await session.execute(select(OnchainAddress.owner_type, OnchainAddress.owner_id)
                                  .where(OnchainAddress.address == q))).first()
    if addr is not None and addr[0] and addr[1]:
        owners.append(((addr[0], addr[1]), "deposit address"))
    for model, how in ((StoreInvoice, "store invoice"), (LnInvoice, "Lightning invoice")):
        wid = (await session.execute(select(model.wallet_id).where(
            model.id == q))).scalar_one_or_none()
        if wid is not None:
            owners.append((await _owner_of_wallet(session, wid), how))
    for owner, how in owners:
        if owner is None:
            continue
        kind, oid = owner
        label = oid
        if kind == "user":
            label = (await session.execute(select(User.email).where(User.id == oid))
                     ).scalar_one_or_none() or oid
        elif kind == "merchant":
            label = (await session.execute(select(Merchant.name).where(Merchant.id == oid))
                     ).scalar_one_or_none() or oid
        add(kind, oid, label, how)
    return list(hits.values())[:limit]


@router.get("/accounts", response_class=HTMLResponse)
async def search(request: Request, view: PageAdmin, lang: PageLang, session: SessionDep,
                 q: Annotated[str, Query(max_length=200)] = "") -> HTMLResponse:
    found = await find_accounts(session, q) if q.strip() else None
    return render(request, "admin/accounts.html", lang=lang, view=view, q=q, found=found)


async def _wallet_view(session: AsyncSession, w: Wallet) -> dict[str, Any]:
    """A wallet's balances as the wallet API computes them (available, held, frozen)."""
    account = await get_account(session, w.ledger_account_id)
    frozen = 0
    if w.frozen_ledger_account_id is not None:
        b = (await get_account(session, w.frozen_ledger_account_id)).balances
        frozen = int(b.credits_posted - b.debits_posted)
    return {**wallet_balances(w, account.balances), "frozen_msat": frozen,
            "frozen_at": w.frozen_at, "frozen_reason": w.frozen_reason}


async def _account(session: AsyncSession, owner_type: str, owner_id: str) -> dict[str, Any]:
    user = merchant = None
    merchants: list[Merchant] = []
    if owner_type == "user":
        user = await session.get(User, owner_id)
        if user is None:
            raise NotFound(f"no user {owner_id}")
        merchants = list((await session.execute(select(Merchant).where(
            Merchant.owner_user_id == owner_id).order_by(Merchant.name))).scalars())
    else:
        merchant = await session.get(Merchant, owner_id)
        if merchant is None:
            raise NotFound(f"no merchant {owner_id}")
        if merchant.owner_user_id:
            user = await session.get(User, merchant.owner_user_id)
    wallets = list((await session.execute(select(Wallet).where(
        Wallet.owner_type == owner_type, Wallet.owner_id == owner_id).order_by(Wallet.asset)
    )).scalars())
    wallet_ids = [w.id for w in wallets]
    decisions = list((await session.execute(select(RiskDecision).where(
        RiskDecision.wallet_id.in_(wallet_ids)).order_by(RiskDecision.at.desc()).limit(50)
    )).scalars()) if wallet_ids else []
    case_rows: list[dict[str, Any]] = []
    for wid in wallet_ids:
        case_rows += await cases.list_cases(session, wallet_id=wid, limit=50)
    subjects = [owner_id, f"{owner_type}:{owner_id}", *wallet_ids]
    trail: list[dict[str, Any]] = []
    for obj in subjects:
        trail += await list_events(session, object=obj, limit=100, newest_first=True)
    trail += await list_events(session, actor=owner_id, limit=100, newest_first=True)
    by_id = {int(r["id"]): r for r in trail}
    trail = [by_id[i] for i in sorted(by_id, reverse=True)][:100]
    return {
        "owner_type": owner_type, "owner_id": owner_id, "user": user, "merchant": merchant,
        "merchants": merchants,
        "wallets": [await _wallet_view(session, w) for w in wallets],
        "tier": await kyc.tier_of(session, owner_type, owner_id),
        "records": [kyc.record_dict(r) for r in await kyc.history(session, owner_type,
                                                                   owner_id)],
        "requests": [kyc_requests.request_dict(r) for r in
                     await kyc_requests.requests_of(session, owner_type, owner_id)],
        "decisions": decisions, "cases": case_rows, "trail": trail,
    }


async def _detail(request: Request, view: PageAdmin, lang: PageLang, session: AsyncSession,
                  owner_type: str, owner_id: str, *, status_code: int = 200,
                  error: str | None = None, form: dict[str, str] | None = None,
                  done: str | None = None) -> HTMLResponse:
    account = await _account(session, owner_type, owner_id)
    return render(request, "admin/account.html", lang=lang, view=view, a=account,
                  error=error, form=form or {}, done=done, status_code=status_code)


@router.get("/accounts/{owner_type}/{owner_id}", response_class=HTMLResponse)
async def account(request: Request, owner_type: OwnerType,
                  owner_id: Annotated[str, Path(max_length=40)], view: PageAdmin,
                  lang: PageLang, session: SessionDep,
                  done: Annotated[str | None, Query(max_length=40)] = None) -> HTMLResponse:
    return await _detail(request, view, lang, session, owner_type, owner_id, done=done)


async def _freeze_action(request: Request, view: PageAdmin, lang: PageLang, wallet_id: str,
                         reason: str, confirm: str, *, freeze: bool) -> Response:
    principal = admin_principal(view)
    sessions = sessions_of(request)
    async with sessions() as s:
        owner = await _owner_of_wallet(s, wallet_id)
    if owner is None:
        raise NotFound(f"no wallet {wallet_id}")
    error: tuple[int, str] | None = None
    if confirm != "yes":
        error = (422, "Tick the box to confirm.")
    else:
        try:
            async with sessions() as s, s.begin():
                if freeze:
                    await kyc.freeze(s, wallet_id=wallet_id, reason=reason,
                                     actor=principal.owner_id)
                else:
                    await kyc.unfreeze(s, wallet_id=wallet_id, reason=reason,
                                       actor=principal.owner_id)
        except SatvaultError as exc:
            error = refusal(exc)
    if error is not None:
        async with sessions() as s:
            return await _detail(request, view, lang, s, owner[0], owner[1],
                                 status_code=error[0], error=error[1],
                                 form={"wallet": wallet_id, "reason": reason,
                                       "action": "freeze" if freeze else "unfreeze"})
    done = "frozen" if freeze else "unfrozen"
    return RedirectResponse(f"/admin/accounts/{owner[0]}/{owner[1]}?done={done}",
                            status_code=303)


@router.post("/wallets/{wallet_id}/freeze", dependencies=[CsrfProtected])
async def freeze(request: Request, wallet_id: Annotated[str, Path(max_length=40)],
                 view: PageAdmin, lang: PageLang, reason: Reason = "",
                 confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    return await _freeze_action(request, view, lang, wallet_id, reason, confirm, freeze=True)


@router.post("/wallets/{wallet_id}/unfreeze", dependencies=[CsrfProtected])
async def unfreeze(request: Request, wallet_id: Annotated[str, Path(max_length=40)],
                   view: PageAdmin, lang: PageLang, reason: Reason = "",
                   confirm: Annotated[str, Form(max_length=8)] = "") -> Response:
    return await _freeze_action(request, view, lang, wallet_id, reason, confirm,
                                freeze=False)
