"""The large-transaction report (CTR-style): per customer per business day, money in and money
out each aggregated across every rail and every wallet of the customer, reported when either
total exceeds a fiat threshold (default 10,000 USD). The customer is the person the withdrawal
limits and the risk rules count: a user with the merchants they own, or a merchant nobody owns
(found from outside: grouped by wallet owner, a user's 8,400 USD and their shop's 7,200 USD in
one day were not listed). Money between two wallets of one person counts as out of one and
into the other, as it does for two people: the report errs towards listing.

Amounts are converted at one rate for the report (:class:`~satvault.rates.base.Rate`, its
source and time printed with the report): satvault keeps no history of rates yet, so a report
for past days uses the rate at the time it is made; the msat totals are exact either way.
Pure: it takes the movements and the rate.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date

from satvault.rates.base import Rate
from satvault.reports.movements import Movement

__all__ = ["CtrRow", "exceeds", "large_transactions", "msat_to_minor"]

MSAT_PER_BTC = 100_000_000_000


def msat_to_minor(msat: int, rate: Rate) -> int:
    """msat → the rate currency's minor units, rounded down (a report never overstates)."""
    return msat * rate.minor_per_btc // MSAT_PER_BTC


def exceeds(msat: int, rate: Rate, threshold_minor: int) -> bool:
    """Whether ``msat`` is worth more than ``threshold_minor`` at ``rate``, exactly: not its
    rounded-down figure (found from outside: 10,000.0002 USD rounded down to 10,000.00 and
    was not over a 10,000 USD threshold; a report errs towards listing)."""
    return msat * rate.minor_per_btc > threshold_minor * MSAT_PER_BTC


@dataclass
class CtrRow:
    day: date
    owner_type: str
    owner_id: str
    in_msat: int = 0
    out_msat: int = 0
    in_minor: int = 0
    out_minor: int = 0
    by_rail: dict[str, dict[str, int]] = field(default_factory=dict)  # rail -> in/out msat
    wallets: set[str] = field(default_factory=set)
    owners: set[str] = field(default_factory=set)  # "user:…", "merchant:…" of the wallets
    movements: int = 0

    @property
    def reasons(self) -> list[str]:
        return [d for d in ("in", "out") if getattr(self, f"{d}_over")]

    in_over: bool = False
    out_over: bool = False


def large_transactions(moves: list[Movement], rate: Rate, threshold_minor: int
                       ) -> list[CtrRow]:
    """The customer-days whose money in, or money out, exceeds ``threshold_minor``."""
    rows: dict[tuple[date, str, str], CtrRow] = {}
    for m in moves:
        key = (m.day, m.person_type, m.person_id)
        row = rows.get(key) or rows.setdefault(key, CtrRow(*key))
        if m.direction == "in":
            row.in_msat += m.amount_msat
        else:
            row.out_msat += m.amount_msat
        rail = row.by_rail.setdefault(m.rail, defaultdict(int))
        rail[m.direction] += m.amount_msat
        row.wallets.add(m.wallet_id)
        row.owners.add(m.owner)
        row.movements += 1
    out = []
    for row in rows.values():
        row.in_minor, row.out_minor = msat_to_minor(row.in_msat, rate), \
            msat_to_minor(row.out_msat, rate)
        row.in_over, row.out_over = exceeds(row.in_msat, rate, threshold_minor), \
            exceeds(row.out_msat, rate, threshold_minor)
        row.by_rail = {k: dict(v) for k, v in sorted(row.by_rail.items())}
        if row.in_over or row.out_over:
            out.append(row)
    return sorted(out, key=lambda r: (r.day, r.owner_type, r.owner_id))
