"""Watch-only wallets and their addresses: registration, allocation, look-ahead, recycling.

Receive addresses come from a pool: the look-ahead rows, derived ahead from the xpub
(watch-only) and watched by the chain watcher like every address row (a payment to an address
we have not handed out yet is still seen). A request claims the lowest pooled index with one
statement, ``UPDATE … WHERE id = (SELECT … LIMIT 1 FOR UPDATE SKIP LOCKED) RETURNING …``:
concurrent requests on PostgreSQL skip each other's claims instead of queueing on one cursor
row, and on SQLite the single writer makes the same statement atomic. Every address handed out
stays followed by at least ``gap_limit`` derived addresses: the claim also returns the pool's
highest index, and only when the pool ran that low does the request derive more itself
(:func:`top_up_pool`, normally run by the chain watcher outside any request, keeps it
``POOL_EXTRA`` addresses deeper). Change addresses (chain 1) keep the cursor
(``next_change``); ``next_receive`` is the next receive index to derive.

Recycling (seed 001): an address whose request expired unpaid may be handed out again after
``recycle_after``; one that ever received anything never is — the database refuses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import lru_cache
from typing import Any, cast

from sqlalchemy import Table, bindparam, func, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import insert_ignoring, utcnow
from satvault.kernel.errors import ConcurrentUpdate
from satvault.kernel.ids import new_id
from satvault.onchain.descriptors import WatchOnlyWallet, parse_wallet
from satvault.onchain.errors import InvalidDescriptor
from satvault.onchain.models import AddressStatus, OnchainAddress, OnchainWallet

__all__ = ["POOL_EXTRA", "Allocation", "allocate_address", "expire_addresses",
           "get_watch_only", "register_wallet", "top_up_pool", "watched_scripts"]

_parsed: dict[tuple[str, str], WatchOnlyWallet] = {}
# Receive addresses derived beyond the gap limit, so that a claim rarely has to derive.
POOL_EXTRA = 100
# A wallet row never changes what matters here (descriptor, network, gap limit): by id.
_wallets: dict[str, OnchainWallet] = {}
# A literal, so both planners use the partial index.
_POOLED: Any = literal_column(f"'{AddressStatus.LOOKAHEAD}'")


def get_watch_only(wallet: OnchainWallet) -> WatchOnlyWallet:
    key = (wallet.descriptor, wallet.network)
    if key not in _parsed:
        _parsed[key] = parse_wallet(wallet.descriptor, wallet.network)
    return _parsed[key]


async def register_wallet(session: AsyncSession, *, role: str, descriptor: str, network: str,
                          gap_limit: int = 20) -> OnchainWallet:
    """Register (or find) the watch-only wallet for ``role``; a different descriptor for an
    existing role is refused rather than silently swapped."""
    parsed = parse_wallet(descriptor, network)
    canonical = parsed.descriptor()
    existing = (await session.execute(
        select(OnchainWallet).where(OnchainWallet.role == role))).scalar_one_or_none()
    if existing is not None:
        if existing.descriptor != canonical or existing.network != network:
            raise InvalidDescriptor(f"the {role} wallet is already registered with another "
                                    "descriptor; refusing to replace it")
        return existing
    wallet = OnchainWallet(id=new_id("owl"), role=role, descriptor=canonical, network=network,
                           gap_limit=gap_limit, next_receive=0, next_change=0,
                           created_at=utcnow())
    session.add(wallet)
    await session.flush()
    await _derive(session, wallet, 0, gap_limit)
    return wallet


def _insert_ignoring_duplicates(session: AsyncSession) -> Any:
    """``INSERT … ON CONFLICT DO NOTHING`` on either database: a concurrent deriver that got
    there first wins, and nobody fails."""
    return insert_ignoring(session.get_bind().dialect.name, OnchainAddress.__table__)


async def _derive(session: AsyncSession, wallet: OnchainWallet, start: int, stop: int) -> None:
    """Derive receive indexes ``start`` … ``stop - 1`` into the pool (those already there are
    left alone) and move ``next_receive`` past them."""
    if stop <= start:
        return
    w = get_watch_only(wallet)
    rows = []
    for idx in range(start, stop):
        d = w.derive(idx, change=0)
        rows.append({"wallet_id": wallet.id, "chain": 0, "idx": idx, "address": d.address,
                     "script_pubkey": d.script_pubkey.hex(), "status": AddressStatus.LOOKAHEAD,
                     "ever_received": False, "times_allocated": 0})
    await session.execute(_insert_ignoring_duplicates(session), rows)
    await session.execute(update(OnchainWallet).where(
        OnchainWallet.id == wallet.id, OnchainWallet.next_receive < stop
    ).values(next_receive=stop))


async def _pool_top(session: AsyncSession, wallet_id: str) -> int:
    return int((await session.execute(select(func.coalesce(func.max(OnchainAddress.idx), -1))
                                      .where(OnchainAddress.wallet_id == wallet_id,
                                             OnchainAddress.chain == 0))).scalar_one())


async def top_up_pool(session: AsyncSession, *, role: str = "deposit",
                      extra: int = POOL_EXTRA) -> int:
    """Derive receive addresses until ``gap_limit + extra`` wait in the pool; returns how many
    were added. Background work (the chain watcher runs it), outside any request's
    transaction; two statements when there is nothing to do (both on indexes)."""
    wallet = (await session.execute(
        select(OnchainWallet).where(OnchainWallet.role == role))).scalar_one_or_none()
    if wallet is None:
        return 0
    pooled, top = (await session.execute(
        select(func.count(), func.coalesce(func.max(OnchainAddress.idx), -1))
        .where(OnchainAddress.wallet_id == wallet.id, OnchainAddress.chain == 0,
               OnchainAddress.status == _POOLED))).one()
    missing = wallet.gap_limit + extra - int(pooled)
    if missing <= 0:
        return 0
    start = max(int(top), await _pool_top(session, wallet.id)) + 1
    await _derive(session, wallet, start, start + missing)
    return missing


async def _wallet(session: AsyncSession, wallet_id: str) -> OnchainWallet:
    wallet = _wallets.get(wallet_id)
    if wallet is None:
        wallet = await session.get(OnchainWallet, wallet_id)
        assert wallet is not None
        _wallets[wallet_id] = wallet
    return wallet


async def _extend_lookahead(session: AsyncSession, wallet: OnchainWallet, *, chain: int,
                            upto: int) -> None:
    # The window was complete up to the previous allocation, so only its tail can be missing.
    low = max(0, upto - wallet.gap_limit)
    have = set((await session.execute(
        select(OnchainAddress.idx).where(OnchainAddress.wallet_id == wallet.id,
                                         OnchainAddress.chain == chain,
                                         OnchainAddress.idx >= low,
                                         OnchainAddress.idx <= upto)
    )).scalars())
    w = get_watch_only(wallet)
    for idx in range(low, upto + 1):
        if idx in have:
            continue
        d = w.derive(idx, change=chain)
        session.add(OnchainAddress(wallet_id=wallet.id, chain=chain, idx=idx, address=d.address,
                                   script_pubkey=d.script_pubkey.hex(),
                                   status=AddressStatus.LOOKAHEAD,
                                   ever_received=False, times_allocated=0))
    await session.flush()


@dataclass(frozen=True, slots=True)
class Allocation:
    address_id: int
    address: str
    script_pubkey: bytes
    chain: int
    index: int
    recycled: bool


@lru_cache(maxsize=8)
def _claim_statement(names: tuple[str, ...]) -> Any:
    """The claim of :func:`_claim_pooled`, built once per set of column names (one on the hot
    path): the role and the values are bound parameters."""
    a = cast(Table, OnchainAddress.__table__).c
    later = cast(Table, OnchainAddress.__table__).alias("later")
    wallet_id = (select(OnchainWallet.id).where(OnchainWallet.role == bindparam("role"))
                 .scalar_subquery())
    pick = (select(a.id).where(a.wallet_id == wallet_id, a.chain == 0, a.status == _POOLED)
            .order_by(a.idx).limit(1).with_for_update(skip_locked=True).scalar_subquery())
    top = (select(func.max(later.c.idx)).where(later.c.wallet_id == a.wallet_id,
                                               later.c.chain == 0).scalar_subquery())
    return (update(cast(Table, OnchainAddress.__table__)).where(a.id == pick,
                                                                a.status == _POOLED)
            .values(status=AddressStatus.ALLOCATED, times_allocated=a.times_allocated + 1,
                    **{name: bindparam(f"v_{name}", type_=a[name].type) for name in names})
            .returning(a.id, a.wallet_id, a.address, a.script_pubkey, a.idx, top.label("top")))


async def _claim_pooled(session: AsyncSession, *, role: str, values: dict[str, Any]
                        ) -> Allocation | None:
    """Claim the lowest pooled receive address of ``role``'s wallet (one statement), keeping
    ``gap_limit`` derived addresses after it; None if the pool is empty."""
    statement = _claim_statement(tuple(sorted(values)))
    row = (await session.execute(statement, {"role": role, **{
        f"v_{name}": value for name, value in values.items()}})).first()
    if row is None:
        return None
    wallet = await _wallet(session, row.wallet_id)
    if row.top - row.idx < wallet.gap_limit:
        # The pool ran low (no top-up ran lately): derive just what the gap limit needs.
        await _derive(session, wallet, row.top + 1, row.idx + wallet.gap_limit + 1)
    return Allocation(row.id, row.address, bytes.fromhex(row.script_pubkey), 0, row.idx, False)


async def _recycle(session: AsyncSession, wallet: OnchainWallet, cutoff: datetime
                   ) -> OnchainAddress | None:
    candidate = (await session.execute(
        select(OnchainAddress.id)
        .where(OnchainAddress.wallet_id == wallet.id, OnchainAddress.chain == 0,
               OnchainAddress.status == AddressStatus.EXPIRED,
               OnchainAddress.ever_received.is_(False),
               OnchainAddress.expires_at < cutoff)
        .order_by(OnchainAddress.expires_at).limit(1)
        .with_for_update(skip_locked=True)
    )).scalar_one_or_none()
    if candidate is None:
        return None
    claimed = await session.execute(
        update(OnchainAddress)
        .where(OnchainAddress.id == candidate, OnchainAddress.status == AddressStatus.EXPIRED,
               OnchainAddress.ever_received.is_(False))
        .values(status=AddressStatus.ALLOCATED))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return await session.get(OnchainAddress, candidate)


async def allocate_address(
    session: AsyncSession, *, role: str = "deposit", owner_type: str, owner_id: str,
    purpose: str, request_id: str | None, expires_at: datetime | None = None,
    recycle_after: timedelta | None = None, change: bool = False,
) -> Allocation:
    """A fresh address (never handed out before, or recyclable) for one payment request.
    Without recycling, a receive address costs one statement (a pooled claim)."""
    now = utcnow()
    values = {"owner_type": owner_type, "owner_id": owner_id, "purpose": purpose,
              "request_id": request_id, "allocated_at": now, "expires_at": expires_at}
    if not change and recycle_after is None:
        claimed = await _claim_pooled(session, role=role, values=values)
        if claimed is not None:
            return claimed
    wallet = (await session.execute(
        select(OnchainWallet).where(OnchainWallet.role == role))).scalar_one_or_none()
    if wallet is None:
        raise InvalidDescriptor(f"no {role} wallet is registered; run `satvault init` or "
                                "register its xpub")
    if not change:
        if recycle_after is not None:
            row = await _recycle(session, wallet, now - recycle_after)
            if row is not None:
                _assign(row, values)
                await session.flush()
                return Allocation(row.id, row.address, bytes.fromhex(row.script_pubkey),
                                  row.chain, row.idx, True)
        for _ in range(3):
            claimed = await _claim_pooled(session, role=role, values=values)
            if claimed is not None:
                return claimed
            # The pool is empty (or every pooled row is being claimed): derive a batch.
            top = await _pool_top(session, wallet.id)
            await _derive(session, wallet, top + 1, top + 2 + wallet.gap_limit)
        raise ConcurrentUpdate("no pooled address could be claimed")
    row = None
    while row is None:
        nxt = (await session.execute(
            update(OnchainWallet).where(OnchainWallet.id == wallet.id)
            .values(next_change=OnchainWallet.next_change + 1)
            .returning(OnchainWallet.next_change)
        )).scalar_one()
        idx = nxt - 1
        await _extend_lookahead(session, wallet, chain=1, upto=idx + wallet.gap_limit)
        candidate = (await session.execute(select(OnchainAddress).where(
            OnchainAddress.wallet_id == wallet.id, OnchainAddress.chain == 1,
            OnchainAddress.idx == idx))).scalar_one()
        # A look-ahead address that already received money (someone paid it before it was
        # handed out) is never given to anyone: skip to the next index.
        if candidate.status == AddressStatus.LOOKAHEAD and not candidate.ever_received:
            row = candidate
    _assign(row, values)
    await session.flush()
    return Allocation(row.id, row.address, bytes.fromhex(row.script_pubkey), row.chain, row.idx,
                      False)


def _assign(row: OnchainAddress, values: dict[str, Any]) -> None:
    row.status = AddressStatus.ALLOCATED
    for name, value in values.items():
        setattr(row, name, value)
    row.times_allocated += 1


async def expire_addresses(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Mark allocated addresses whose request expired unpaid as ``expired`` (recyclable)."""
    res = await session.execute(
        update(OnchainAddress)
        .where(OnchainAddress.status == AddressStatus.ALLOCATED,
               OnchainAddress.ever_received.is_(False),
               OnchainAddress.expires_at.is_not(None),
               OnchainAddress.expires_at < (now or utcnow()))
        .values(status=AddressStatus.EXPIRED))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def watched_scripts(session: AsyncSession) -> dict[bytes, int]:
    """Every script the watcher must look for → its address row id."""
    rows = await session.execute(select(OnchainAddress.script_pubkey, OnchainAddress.id))
    return {bytes.fromhex(spk): aid for spk, aid in rows}
