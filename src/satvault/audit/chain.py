"""The audit chain's pure core: how a row and a range of ledger transfers are hashed, and
what "the chain is intact" means. No session, no clock: values in, values out, so anyone
holding a copy of the two tables can re-verify with this module (or its description in
docs/security.md) alone.

A sealed row's hash is SHA-256 over the canonical JSON (keys sorted, no spaces, UTF-8) of::

    {"v": 1, "seq": 7, "id": 42, "at": "2026-12-05T10:00:00.123456Z", "actor": "...",
     "action": "...", "object": "...", "before": "<stored JSON text>",
     "after": "<stored JSON text>", "prev": "<previous row's hash, or 64 zeros>"}

``before`` and ``after`` are hashed as the exact text stored, never re-serialised, so a
verifier needs no JSON canonicalisation of its own. A ``ledger.sealed`` row's ``after`` names a
range of ledger transfers (``from_seq`` exclusive, ``to_seq`` inclusive), their ``count`` and
their ``digest``: SHA-256 over one canonical JSON line per transfer (:data:`TRANSFER_FIELDS`,
the columns a transfer never changes; ``state`` is left out, a hold's resolution is itself a
later transfer), each followed by ``\\n``, in ``seq`` order.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

__all__ = ["GENESIS", "LEDGER_SEALED", "TRANSFER_FIELDS", "Break", "ChainRow", "LedgerRange",
           "TransferDigest", "canonical", "moment", "parse_range", "row_hash"]

GENESIS = "0" * 64
LEDGER_SEALED = "ledger.sealed"
# The immutable columns of ledger_transfers, in the order they appear in each hashed line
# (the line is a JSON object with sorted keys; the order here is only for readers).
TRANSFER_FIELDS = (
    "seq", "id", "debit_account_id", "credit_account_id", "amount", "asset", "kind",
    "pending_id", "timeout_seconds", "expires_at", "linked", "code", "ref", "created_at",
    "dr_debits_posted", "dr_credits_posted", "dr_debits_pending", "dr_credits_pending",
    "cr_debits_posted", "cr_credits_posted", "cr_debits_pending", "cr_credits_pending",
)


def canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False
                      ).encode("utf-8")


def moment(at: datetime) -> str:
    """A timestamp as hashed: UTC, microseconds, a trailing Z."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True, slots=True)
class ChainRow:
    """One audit row as stored (``seq``/``prev_hash``/``hash`` are None until sealed)."""

    id: int
    at: datetime
    actor: str
    action: str
    object: str
    before: str
    after: str
    seq: int | None = None
    prev_hash: str | None = None
    hash: str | None = None


def row_hash(row: ChainRow, *, seq: int, prev: str) -> str:
    return hashlib.sha256(canonical({
        "v": 1, "seq": seq, "id": row.id, "at": moment(row.at), "actor": row.actor,
        "action": row.action, "object": row.object, "before": row.before, "after": row.after,
        "prev": prev,
    })).hexdigest()


def _plain(value: Any) -> Any:
    if isinstance(value, datetime):
        return moment(value)
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    return int(value)  # amounts and ids: integers on both databases


@dataclass(slots=True)
class TransferDigest:
    """The running digest of a range of transfers, fed one row (a mapping) at a time."""

    count: int = 0
    last_seq: int = 0
    _h: Any = field(default_factory=hashlib.sha256)

    def add(self, transfer: Any) -> None:  # any mapping of TRANSFER_FIELDS (a RowMapping)
        self._h.update(canonical({k: _plain(transfer[k]) for k in TRANSFER_FIELDS}) + b"\n")
        self.count += 1
        self.last_seq = int(transfer["seq"])

    def extend(self, transfers: Iterable[Any]) -> TransferDigest:
        for t in transfers:
            self.add(t)
        return self

    def hexdigest(self) -> str:
        return str(self._h.hexdigest())


@dataclass(frozen=True, slots=True)
class LedgerRange:
    """What a ``ledger.sealed`` row vouches for: transfers with from_seq < seq <= to_seq."""

    from_seq: int
    to_seq: int
    count: int
    digest: str

    def as_dict(self) -> dict[str, Any]:
        return {"from_seq": self.from_seq, "to_seq": self.to_seq, "count": self.count,
                "digest": self.digest}


def parse_range(after: str) -> LedgerRange | None:
    """The range a ``ledger.sealed`` row's ``after`` names, or None if it names none."""
    try:
        d = json.loads(after)
        return LedgerRange(int(d["from_seq"]), int(d["to_seq"]), int(d["count"]),
                           str(d["digest"]))
    except (ValueError, TypeError, KeyError):
        return None


@dataclass(frozen=True, slots=True)
class Break:
    """The first place the chain does not hold: which row, and what differs."""

    id: int
    seq: int | None
    problem: str
    expected: str = ""
    found: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "seq": self.seq, "problem": self.problem,
                "expected": self.expected, "found": self.found}

    def __str__(self) -> str:
        where = f"row id={self.id}" + (f" seq={self.seq}" if self.seq is not None else "")
        what = f"{where}: {self.problem}"
        if self.expected or self.found:
            what += f" (expected {self.expected or '-'}, found {self.found or '-'})"
        return what
