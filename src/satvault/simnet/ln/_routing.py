"""Paths and HTLC liquidity, as plain functions over the channel list.

A path is a direct channel, else one intermediate node that charges
``base + amount·ppm/10⁶`` (rounded down) for forwarding; the cheapest path whose every hop
has the liquidity wins. Holding a route moves each hop's amount from the sender side's
balance into ``pending``; settling hands it to the other side, failing gives it back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from satvault.simnet.ln._model import Channel, FailureReason, Hop

__all__ = ["find_route", "forwarding_fee", "hold", "release"]


def forwarding_fee(base_msat: int, ppm: int, amount_msat: int) -> int:
    return base_msat + amount_msat * ppm // 1_000_000


def find_route(channels: Sequence[Channel], fees: Mapping[str, tuple[int, int]], src: str,
               dst: str, amount: int, fee_limit: int | None
               ) -> tuple[tuple[Hop, ...], int] | FailureReason:
    """(hops, fee) or why not: INSUFFICIENT_BALANCE when the sender's channels together
    cannot carry ``amount``, NO_ROUTE when no path has the liquidity within ``fee_limit``."""
    mine = [c for c in channels if src in (c.a, c.b)]
    if sum(c.balance[src] for c in mine) < amount:
        return FailureReason.INSUFFICIENT_BALANCE
    candidates: list[tuple[tuple[Hop, ...], int]] = []
    for c in mine:
        if c.peer(src) == dst:
            candidates.append(((Hop(c.chan_id, src, dst, amount, 0),), 0))
    for c1 in mine:
        mid = c1.peer(src)
        if mid == dst:
            continue
        fee = forwarding_fee(*fees[mid], amount)
        for c2 in channels:
            if mid in (c2.a, c2.b) and c2.peer(mid) == dst:
                candidates.append(((Hop(c1.chan_id, src, mid, amount + fee, 0),
                                    Hop(c2.chan_id, mid, dst, amount, fee)), fee))
    by_id = {c.chan_id: c for c in channels}
    for hops, fee in sorted(candidates, key=lambda hf: (len(hf[0]), hf[1])):
        if fee_limit is not None and fee > fee_limit:
            continue
        if all(by_id[h.chan_id].balance[h.from_node] >= h.amount_msat for h in hops):
            return hops, fee
    return FailureReason.NO_ROUTE


def hold(channels: Sequence[Channel], route: Sequence[Hop]) -> None:
    by_id = {c.chan_id: c for c in channels}
    for h in route:
        c = by_id[h.chan_id]
        c.balance[h.from_node] -= h.amount_msat
        c.pending[h.from_node] += h.amount_msat


def release(channels: Sequence[Channel], route: Sequence[Hop], *, settle: bool) -> None:
    by_id = {c.chan_id: c for c in channels}
    for h in route:
        c = by_id[h.chan_id]
        c.pending[h.from_node] -= h.amount_msat
        c.balance[h.to_node if settle else h.from_node] += h.amount_msat
