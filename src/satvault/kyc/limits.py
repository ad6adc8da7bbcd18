"""The pure core of KYC limits: which limits a tier has on a rail, and whether a withdrawal
fits what the owner already spent. No session, clock or settings object inside: the table is
``Settings.kyc_tier_limits_msat`` passed as a value.

Windows are rolling (the last 24 hours, the last 30 days, counted back from the request) and
per rail: on-chain, Lightning and internal payments each have their own three limits. What is
counted is what the 24-hour platform limit counts: the ``withdrawals`` rows that are not
failed or cancelled (refunds are withdrawals of the merchant's wallet), each in a window that
holds its request or, for one held and then released, its release, of every wallet of the
person behind the paying one: a user's own wallet and the wallets of the merchants the user
owns count together (migration 0061; a merchant nobody owns counts alone). The tier is the
paying wallet's owner's: a merchant reviewed as a business has its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from satvault.kyc.errors import LimitExceeded

__all__ = ["RailLimits", "Usage", "limits_for", "refusal", "top_tier"]

Table = Mapping[int, Mapping[str, Sequence[int]]]


@dataclass(frozen=True, slots=True)
class RailLimits:
    per_tx_msat: int
    day_msat: int
    month_msat: int


@dataclass(frozen=True, slots=True)
class Usage:
    """What the paying wallet's person has withdrawn on one rail in each window (all their
    wallets together), and the paying wallet's owner's tier."""

    tier: int
    day_msat: int
    month_msat: int


def top_tier(table: Table) -> int:
    return max(table)


def limits_for(table: Table, tier: int, rail: str) -> RailLimits:
    per_tx, day, month = table[min(max(tier, 0), top_tier(table))][rail]
    return RailLimits(per_tx, day, month)


def refusal(table: Table, usage: Usage, *, rail: str, amount_msat: int
            ) -> LimitExceeded | None:
    """The first limit ``amount_msat`` would break (per transaction, then 24 h, then 30 d),
    or None."""
    lim = limits_for(table, usage.tier, rail)
    nxt = usage.tier + 1 if usage.tier < top_tier(table) else None
    checks = (("transaction", lim.per_tx_msat, 0), ("24h", lim.day_msat, usage.day_msat),
              ("30d", lim.month_msat, usage.month_msat))
    for window, limit, spent in checks:
        if spent + amount_msat > limit:
            left = max(0, limit - spent)
            return LimitExceeded(tier=usage.tier, rail=rail, window=window, limit_msat=limit,
                                 left_msat=left, next_tier=nxt)
    return None
