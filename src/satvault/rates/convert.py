"""Pure money maths between fiat minor units and millisatoshi at a ``Rate``.

Every division names its rounding, and each one favours the merchant:

- ``fiat_to_msat`` rounds UP: an invoice for 10.00 USD asks for the smallest msat amount worth
  at least 10.00 USD, so the merchant never receives less than the fiat asked.
- ``msat_to_fiat`` rounds DOWN: what a payment is worth is never overstated (display only).
- ``apply_spread`` rounds the charged rate DOWN: a lower rate means more sats for the payer.

Together they guarantee ``msat_to_fiat(fiat_to_msat(x, r), r) >= x`` for every amount and rate.

The spread: a store's ``spread_bp`` (basis points, 1 bp = 0.01 %) values the payer's bitcoin
below the market. The charged ``minor_per_btc`` is the market rate less the spread,
``market * (10000 - spread_bp) / 10000``, so each BTC buys less fiat and a fiat invoice costs
*more* sats (about ``spread_bp`` bp more). The store keeps that margin as cover for the price
moving between the invoice and its settlement.
"""

from __future__ import annotations

import dataclasses

from satvault.ledger.assets import BTC, MsatAmount
from satvault.rates.base import Rate

__all__ = [
    "BP_PER_UNIT",
    "MSAT_PER_BTC",
    "MSAT_PER_SAT",
    "apply_spread",
    "fiat_to_msat",
    "msat_to_fiat",
    "sats_to_msat",
]

MSAT_PER_BTC: int = 10**BTC.scale  # 10^11
MSAT_PER_SAT = 1_000
BP_PER_UNIT = 10_000


def apply_spread(rate: Rate, spread_bp: int) -> Rate:
    """The rate a payer is charged: ``minor_per_btc`` lowered by ``spread_bp`` basis points,
    rounded DOWN (toward more sats), keeping the rate's source and fetched_at.

    60,000.00 USD/BTC (6_000_000 cents) with a 100 bp (1 %) spread → 5_940_000 cents/BTC.
    """
    if isinstance(spread_bp, bool) or not isinstance(spread_bp, int):
        raise TypeError("spread_bp must be an int")
    if not 0 <= spread_bp < BP_PER_UNIT:
        raise ValueError(f"spread_bp must be in [0, {BP_PER_UNIT}), not {spread_bp}")
    if rate.spread_bp:
        raise ValueError("apply_spread takes a market rate; this one already has a spread")
    if spread_bp == 0:
        return rate
    charged = rate.minor_per_btc * (BP_PER_UNIT - spread_bp) // BP_PER_UNIT  # ROUND DOWN
    if charged <= 0:
        raise ValueError(f"a {spread_bp} bp spread leaves no rate from {rate.minor_per_btc}")
    return dataclasses.replace(rate, minor_per_btc=charged, spread_bp=spread_bp)


def fiat_to_msat(amount_minor: int, rate: Rate) -> MsatAmount:
    """What a fiat amount (in minor units) costs in msat: ROUND UP, so the merchant never
    receives less than asked. 10.00 USD at 60,000.00 USD/BTC → 16_666_667 msat."""
    if amount_minor < 0:
        raise ValueError(f"amount must not be negative, not {amount_minor}")
    quotient, remainder = divmod(amount_minor * MSAT_PER_BTC, rate.minor_per_btc)
    return MsatAmount(quotient + (1 if remainder else 0))  # ROUND UP (ceiling)


def msat_to_fiat(msat: int, rate: Rate) -> int:
    """What msat are worth in fiat minor units: ROUND DOWN, for showing what was received."""
    if msat < 0:
        raise ValueError(f"msat must not be negative, not {msat}")
    return msat * rate.minor_per_btc // MSAT_PER_BTC  # ROUND DOWN (floor; both non-negative)


def sats_to_msat(sats: int) -> MsatAmount:
    """Exact: 1 sat = 1000 msat, no rounding."""
    return MsatAmount(sats * MSAT_PER_SAT)
