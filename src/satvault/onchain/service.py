"""Watch-only wallets and their addresses: registration, allocation, look-ahead, recycling.

Allocation takes the next index with one atomic ``UPDATE … RETURNING`` on the wallet row, so
two concurrent requests can never get the same address. Every address handed out is followed
by a look-ahead window of ``gap_limit`` addresses that the watcher also watches (a payment to
an address we have not handed out yet is still seen). Recycling (seed 001): an address whose
request expired unpaid may be handed out again after ``recycle_after``; one that ever received
anything never is — the database refuses it too.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.db import utcnow
from satvault.kernel.ids import new_id
from satvault.onchain.descriptors import WatchOnlyWallet, parse_wallet
from satvault.onchain.errors import InvalidDescriptor
from satvault.onchain.models import OnchainAddress, OnchainWallet

__all__ = ["Allocation", "allocate_address", "expire_addresses", "get_watch_only",
           "register_wallet", "watched_scripts"]

_parsed: dict[tuple[str, str], WatchOnlyWallet] = {}


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
    await _extend_lookahead(session, wallet, chain=0, upto=gap_limit - 1)
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
                                   script_pubkey=d.script_pubkey.hex(), status="lookahead",
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


async def _recycle(session: AsyncSession, wallet: OnchainWallet, cutoff: datetime
                   ) -> OnchainAddress | None:
    candidate = (await session.execute(
        select(OnchainAddress.id)
        .where(OnchainAddress.wallet_id == wallet.id, OnchainAddress.chain == 0,
               OnchainAddress.status == "expired", OnchainAddress.ever_received.is_(False),
               OnchainAddress.expires_at < cutoff)
        .order_by(OnchainAddress.expires_at).limit(1)
        .with_for_update(skip_locked=True)
    )).scalar_one_or_none()
    if candidate is None:
        return None
    claimed = await session.execute(
        update(OnchainAddress)
        .where(OnchainAddress.id == candidate, OnchainAddress.status == "expired",
               OnchainAddress.ever_received.is_(False))
        .values(status="allocated"))
    if claimed.rowcount != 1:  # type: ignore[attr-defined]
        return None
    return await session.get(OnchainAddress, candidate)


async def allocate_address(
    session: AsyncSession, *, role: str = "deposit", owner_type: str, owner_id: str,
    purpose: str, request_id: str | None, expires_at: datetime | None = None,
    recycle_after: timedelta | None = None, change: bool = False,
) -> Allocation:
    """A fresh address (never handed out before, or recyclable) for one payment request."""
    wallet = (await session.execute(
        select(OnchainWallet).where(OnchainWallet.role == role))).scalar_one_or_none()
    if wallet is None:
        raise InvalidDescriptor(f"no {role} wallet is registered; run `satvault init` or "
                                "register its xpub")
    now = utcnow()
    row = None
    if recycle_after is not None and not change:
        row = await _recycle(session, wallet, now - recycle_after)
    recycled = row is not None
    column = OnchainWallet.next_change if change else OnchainWallet.next_receive
    chain = 1 if change else 0
    while row is None:
        nxt = (await session.execute(
            update(OnchainWallet).where(OnchainWallet.id == wallet.id)
            .values({column: column + 1}).returning(column)
        )).scalar_one()
        idx = nxt - 1
        await _extend_lookahead(session, wallet, chain=chain, upto=idx + wallet.gap_limit)
        candidate = (await session.execute(select(OnchainAddress).where(
            OnchainAddress.wallet_id == wallet.id, OnchainAddress.chain == chain,
            OnchainAddress.idx == idx))).scalar_one()
        # A look-ahead address that already received money (someone paid it before it was
        # handed out) is never given to anyone: skip to the next index.
        if candidate.status == "lookahead" and not candidate.ever_received:
            row = candidate
    row.status = "allocated"
    row.owner_type, row.owner_id, row.purpose = owner_type, owner_id, purpose
    row.request_id, row.allocated_at, row.expires_at = request_id, now, expires_at
    row.times_allocated += 1
    await session.flush()
    return Allocation(row.id, row.address, bytes.fromhex(row.script_pubkey), row.chain, row.idx,
                      recycled)


async def expire_addresses(session: AsyncSession, *, now: datetime | None = None) -> int:
    """Mark allocated addresses whose request expired unpaid as ``expired`` (recyclable)."""
    res = await session.execute(
        update(OnchainAddress)
        .where(OnchainAddress.status == "allocated", OnchainAddress.ever_received.is_(False),
               OnchainAddress.expires_at.is_not(None),
               OnchainAddress.expires_at < (now or utcnow()))
        .values(status="expired"))
    return int(res.rowcount or 0)  # type: ignore[attr-defined]


async def watched_scripts(session: AsyncSession) -> dict[bytes, int]:
    """Every script the watcher must look for → its address row id."""
    rows = await session.execute(select(OnchainAddress.script_pubkey, OnchainAddress.id))
    return {bytes.fromhex(spk): aid for spk, aid in rows}
