"""Store endpoints: a merchant creates its stores, lists them, reads and changes their settings
(name, default invoice currency, confirmations policy, the rate spread on fiat invoices).

A merchant key creates stores for its own merchant; an admin key names the merchant. A store
key sees and (with ``stores:write``) changes only its own store and cannot create others.
Other callers get the same 404 as for a store that does not exist. Every change is audited
with its old and new value; invoices already created keep the rate they locked.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from pydantic.json_schema import SkipJsonSchema
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts import service
from satvault.accounts.access import owned_store
from satvault.accounts.models import Store, Wallet
from satvault.accounts.service import Principal
from satvault.invoices.service import rate_for
from satvault.kernel.errors import Forbidden, InvalidInput, NotFound
from satvault.rates.errors import RateError, UnsupportedCurrency
from satvault.web.deps import IdempotencyKey, SessionDep, require_any_scope, require_scope
from satvault.web.fields import STRICT_BODY, SingleLine, SpeedPolicy, StrictInt
from satvault.web.idempotency import run_idempotent
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import CreateLimit
from satvault.web.state import runtime_of, settings_of

__all__ = ["router"]

router = APIRouter(prefix="/api/v1", tags=["stores"])
Writer = Annotated[Principal, Depends(require_scope("stores:write"))]
Reader = Annotated[Principal, Depends(require_any_scope("stores:read", "stores:write"))]


# BTC, SATS or an ISO 4217 code; whether satvault can price it is the service's to say.
CURRENCY_PATTERN = r"^[A-Za-z]{3,4}$"


class StoreIn(BaseModel):
    model_config = STRICT_BODY
    name: SingleLine = Field(min_length=1, max_length=120)
    merchant_id: str | None = Field(
        default=None, max_length=40,
        description="Only for admin keys; a merchant key creates stores of its own merchant.")
    default_currency: str = Field(default="BTC", max_length=8, pattern=CURRENCY_PATTERN,
                                  description="BTC, SATS or a fiat code; the currency of "
                                              "invoices created without one.")
    speed_policy: SpeedPolicy = Field(
        default=1, description="Confirmations before an on-chain payment settles an invoice.")
    spread_bp: StrictInt = Field(default=0, ge=0, le=2000,
                           description="Added to the market rate on fiat invoices, in basis "
                                       "points (the payer pays that much more).")


class StorePatch(BaseModel):
    """Fields left out keep their value; none can be set to null (the schema says so); one
    it does not have is refused."""

    model_config = STRICT_BODY

    name: Annotated[SingleLine, Field(min_length=1, max_length=120)] | SkipJsonSchema[None] = None
    default_currency: Annotated[str, Field(max_length=8, pattern=CURRENCY_PATTERN)
                                ] | SkipJsonSchema[None] = None
    speed_policy: SpeedPolicy | SkipJsonSchema[None] = None
    spread_bp: Annotated[StrictInt, Field(ge=0, le=2000)] | SkipJsonSchema[None] = None


class StoreOut(BaseModel):
    id: str
    merchant_id: str
    name: str
    default_currency: str
    speed_policy: int
    spread_bp: int
    wallet_id: str | None = Field(description="The merchant wallet its invoices credit.")
    created_at: datetime


class StoreList(BaseModel):
    items: list[StoreOut]


async def _out(session: AsyncSession, store: Store) -> StoreOut:
    wallet_id = (await session.execute(select(Wallet.id).where(
        Wallet.owner_type == "merchant", Wallet.owner_id == store.merchant_id,
        Wallet.asset == "BTC"))).scalar_one_or_none()
    return StoreOut(id=store.id, merchant_id=store.merchant_id, name=store.name,
                    default_currency=store.default_currency, speed_policy=store.speed_policy,
                    spread_bp=store.spread_bp, wallet_id=wallet_id,
                    created_at=store.created_at)


def _actor(principal: Principal) -> str:
    return f"key:{principal.key_id}"


async def priceable_currency(request: Request, currency: object) -> None:
    """A store's default currency must be one the rate sources quote (found from outside: GBP,
    which no source quoted, was taken, and every invoice without a currency was refused from
    then on). Asked of the sources before the unit of work; only sources that all say they do
    not quote it refuse it, not one that is down."""
    code = currency.strip().upper() if isinstance(currency, str) else ""
    if not code or code in ("BTC", "SATS"):
        return
    try:  # as an invoice in it would be priced
        await rate_for(settings_of(request), code,
                       rates=getattr(runtime_of(request), "rates", None))
    except UnsupportedCurrency as exc:
        raise InvalidInput(f"default_currency {code!r}: {exc}") from None
    except RateError:
        return  # unavailable now: the code itself may be fine, and is checked again later


def _merchant_for_new_store(principal: Principal, asked: str | None) -> str:
    if principal.is_admin:
        if not asked:
            raise InvalidInput("an admin key must name the merchant_id of the new store")
        return asked
    if principal.owner_type == "store":
        raise Forbidden("a store key cannot create stores; use the merchant's key")
    if principal.owner_type != "merchant" or asked not in (None, principal.owner_id):
        raise NotFound(f"merchant {asked!r} not found")
    return principal.owner_id


# 404: an admin key naming a merchant that does not exist.
@router.post("/stores", status_code=201, response_model=StoreOut, dependencies=[CreateLimit],
             responses=problem_responses(404))
async def create_store(body: StoreIn, request: Request, principal: Writer,
                       idempotency_key: IdempotencyKey
                       ) -> JSONResponse:
    merchant_id = _merchant_for_new_store(principal, body.merchant_id)
    await priceable_currency(request, body.default_currency)

    async def work(session: AsyncSession) -> tuple[int, Any]:
        store = await service.create_store(
            session, merchant_id=merchant_id, name=body.name,
            default_currency=body.default_currency, speed_policy=body.speed_policy,
            spread_bp=body.spread_bp, actor=_actor(principal))
        return 201, (await _out(session, store)).model_dump(mode="json")

    owner = f"{principal.owner_type}:{principal.owner_id}"
    return await run_idempotent(request, owner=owner, key=idempotency_key, work=work)


@router.get("/stores", response_model=StoreList)
async def list_stores(session: SessionDep, principal: Reader,
                      merchant_id: str | None = None) -> StoreList:
    """The stores this key may see: its own store, its merchant's stores, or (admin) all,
    optionally of one merchant."""
    if principal.is_admin:
        rows = await service.list_stores(session, merchant_id=merchant_id)
    elif principal.owner_type == "store":
        rows = await service.list_stores(session, store_id=principal.owner_id)
    elif principal.owner_type == "merchant" and merchant_id in (None, principal.owner_id):
        rows = await service.list_stores(session, merchant_id=principal.owner_id)
    else:
        rows = []
    return StoreList(items=[await _out(session, r) for r in rows
                            if merchant_id in (None, r.merchant_id)])


@router.get("/stores/{store_id}", response_model=StoreOut)
async def get_store(store_id: str, session: SessionDep, principal: Reader) -> StoreOut:
    return await _out(session, await owned_store(session, principal, store_id))


@router.patch("/stores/{store_id}", response_model=StoreOut)
async def patch_store(store_id: str, body: StorePatch, request: Request, session: SessionDep,
                      principal: Writer) -> StoreOut:
    """Change some settings; fields left out keep their value. The change is audited."""
    await priceable_currency(request, body.default_currency)  # before its first statement
    store = await owned_store(session, principal, store_id, for_update=True)
    changes = body.model_dump(exclude_unset=True)
    if any(v is None for v in changes.values()):
        raise InvalidInput("a store setting cannot be set to null")
    await service.update_store(session, store, changes=changes, actor=_actor(principal))
    return await _out(session, store)
