"""The signer's own caps on value leaving the platform.

The payment list and the fee limits of a signing request come from the caller; these caps do
not. They are set when the signer starts (``satvault signer serve --max-tx-sat
--max-daily-sat``, or ``signer_max_tx_sat`` / ``signer_max_daily_sat`` for the in-process
signer), so a compromised web process can at most drain one day's allowance.

**Value leaving** a transaction = its ``payment`` outputs + its fee. Change and sweeps into
the platform's own wallets stay in; the fee is counted because it does leave (to a miner,
who need not be a stranger: the caller chooses ``max_fee_sat``). So a sweep's fee counts
too, and a sweep with an absurd fee is capped like a payment.

* ``max_tx_sat``: no single transaction sends more than this out.
* ``max_daily_sat``: over any rolling 24 hours, the value leaving in the signed
  transactions adds up to at most this.

**Versions of one spend count once.** Transactions spending exactly the same set of
outpoints conflict with each other, so at most one of them can ever confirm: they form one
group, which counts at the largest value leaving among its signatures inside the window.
Re-signing the same transaction after a crash (segwit txids are stable) therefore costs
nothing, and an RBF fee bump of a batch (same inputs, same payments, a higher fee) costs only
the fee difference. Transactions with different input sets are summed even when they
overlap, which over-counts rather than under-counts (a replacement that adds an input counts
in full).

The window is kept in memory and rebuilt at start-up from the audit log's signature lines
(:mod:`satvault.signer.audit`), so a restart does not reset it. A signer without an audit
log (tests) starts with an empty window.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from satvault.signing.errors import AuditLogError, LimitExceeded

__all__ = ["WINDOW", "Spend", "SpendWindow", "spend_from_record"]

WINDOW = timedelta(hours=24)


@dataclass(frozen=True, slots=True)
class Spend:
    time: datetime
    txid: str
    outpoints: frozenset[str]
    leaving_sat: int


def _sat(value: Any) -> int:
    """An amount the signer wrote: a whole number of sat, not negative (found from outside:
    ``Infinity`` stopped the start with OverflowError; a negative one, or a fraction
    silently truncated, would have lowered the day's spending)."""
    if type(value) is not int or value < 0:
        raise ValueError(f"{value!r} is not a whole number of sat")
    return value


def spend_from_record(record: Mapping[str, Any]) -> Spend:
    """A signature line of the audit log as a :class:`Spend`. Lines written before the
    ``leaving_sat`` field existed are counted from their payment outputs and fee."""
    try:
        time = datetime.fromisoformat(record["time"])
        outpoints = frozenset(str(i["outpoint"]) for i in record["inputs"])
        leaving = record.get("leaving_sat")
        if leaving is None:
            leaving = _sat(record["fee_sat"]) + sum(
                _sat(o["amount_sat"]) for o in record["outputs"] if o.get("kind") == "payment")
        return Spend(time, str(record.get("txid")), outpoints, _sat(leaving))
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditLogError(f"the audit line of {record.get('txid')!r} cannot be read as a "
                            f"signature ({exc!r}); repair or move the audit log") from exc


class SpendWindow:
    """Signed spends of the last 24 hours, and the two caps. Not thread-safe: the signer
    calls it under its signing lock."""

    def __init__(self, max_tx_sat: int, max_daily_sat: int) -> None:
        for name, value in (("max_tx_sat", max_tx_sat), ("max_daily_sat", max_daily_sat)):
            if type(value) is not int or value <= 0:
                raise ValueError(f"{name} must be a positive whole number of sat, not {value!r}")
        self.max_tx_sat = max_tx_sat
        self.max_daily_sat = max_daily_sat
        self._spends: list[Spend] = []

    def load(self, spends: Iterable[Spend], now: datetime) -> None:
        self._spends.extend(spends)
        self._prune(now)

    def _prune(self, now: datetime) -> None:
        start = now - WINDOW
        self._spends = [s for s in self._spends if s.time > start]

    def _groups(self) -> dict[frozenset[str], int]:
        groups: dict[frozenset[str], int] = {}
        for s in self._spends:
            groups[s.outpoints] = max(groups.get(s.outpoints, 0), s.leaving_sat)
        return groups

    def used(self, now: datetime) -> int:
        """Value that left the platform in the last 24 hours, each group of versions at its
        largest."""
        self._prune(now)
        return sum(self._groups().values())

    def check(self, outpoints: frozenset[str], leaving_sat: int, now: datetime, *,
              what: str) -> int:
        """Raise :class:`LimitExceeded` unless a transaction spending ``outpoints`` and
        sending ``leaving_sat`` out fits both caps; return what it adds to the window.
        ``what`` describes the value for the message ("payments 1 sat + fee 2 sat")."""
        used = self.used(now)
        left = max(0, self.max_daily_sat - used)
        if leaving_sat > self.max_tx_sat:
            raise LimitExceeded(
                f"this transaction would send {leaving_sat} sat out of the platform ({what}), "
                f"above the signer's per-transaction cap of {self.max_tx_sat} sat; "
                f"{left} sat of its rolling 24-hour cap of {self.max_daily_sat} sat are left")
        earlier = self._groups().get(outpoints, 0)
        adds = max(0, leaving_sat - earlier)
        if adds > left:
            again = (f", of which {earlier} sat were counted for an earlier version spending "
                     "the same inputs" if earlier else "")
            raise LimitExceeded(
                f"this transaction would send {leaving_sat} sat out of the platform ({what}"
                f"{again}), but only {left} sat of the signer's rolling 24-hour cap of "
                f"{self.max_daily_sat} sat are left ({used} sat already left the platform in "
                "the last 24 hours)")
        return adds

    def add(self, spend: Spend) -> None:
        self._spends.append(spend)
