"""The signer pays each payment reference once.

A payment output carries the ``ref`` its request named (a withdrawal id). Once a
transaction paying a ref is signed, any later transaction paying the same ref must spend at
least one input of every earlier signed transaction that paid it: conflicting transactions
cannot both confirm, so the ref is paid at most once whatever the web side believes. That
is what a fee bump (the same inputs), a replacement that keeps one of the inputs, and the
same transaction signed again after a crash do; what it refuses is the same withdrawal paid
from other coins, which is what a database restored from a backup taken before the payout
would ask for (the restored rows say ``pending``, and the coins the payout spent are gone,
so other coins are chosen).

The web side pays a withdrawal from other coins legitimately only after its earlier version
was refused by the node and never accepted by one (``PayoutJob``: the batch is given up and
its withdrawals batched again). It says so first with :meth:`PaidRefs.abandon` (the wire
method ``abandon``), and the abandoned signature no longer counts. A restored database does
not know the transactions signed after its backup, so it cannot give them up by mistake;
an operator who has made sure one can never confirm gives it up by hand
(``satvault signer abandon``).

The memory is rebuilt at start-up from the audit log's ``sign_payout`` and ``abandoned``
lines, like the 24-hour window (:mod:`satvault.signer._limits`); it holds every signature
that paid a ref, a txid and its outpoints each, for as long as the log is kept.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from satvault.signing.errors import AuditLogError, PaidBefore

__all__ = ["PaidRefs", "Signature", "signature_from_record"]


@dataclass(frozen=True, slots=True)
class Signature:
    """A signed transaction as far as paying refs goes."""

    txid: str
    outpoints: frozenset[str]
    refs: frozenset[str]


def signature_from_record(record: Mapping[str, Any]) -> Signature:
    """A ``sign_payout`` line of the audit log as a :class:`Signature`."""
    try:
        refs = frozenset(str(o["ref"]) for o in record["outputs"]
                         if o.get("kind") == "payment" and o.get("ref"))
        return Signature(_txid(record["txid"]),
                         frozenset(str(i["outpoint"]) for i in record["inputs"]), refs)
    except (KeyError, TypeError, ValueError) as exc:
        raise AuditLogError(f"the audit line of {record.get('txid')!r} cannot be read as a "
                            f"signature ({exc!r}); repair or move the audit log") from exc


def _txid(value: object) -> str:
    if not (isinstance(value, str) and len(value) == 64
            and all(c in "0123456789abcdef" for c in value)):
        raise ValueError(f"{value!r} is not a txid (64 lower-case hex digits)")
    return value


class PaidRefs:
    """Which signatures paid which refs, and which of them were abandoned. Not thread-safe:
    the signer calls it under its signing lock."""

    def __init__(self) -> None:
        self._by_ref: dict[str, list[Signature]] = {}
        self._signed: set[str] = set()
        self._abandoned: set[str] = set()

    def load(self, records: Iterable[Mapping[str, Any]]) -> None:
        """Replay the audit log's lines, in order."""
        for record in records:
            event = record.get("event")
            if event == "sign_payout":
                self.add(signature_from_record(record))
            elif event == "abandoned":
                try:
                    self._abandoned.add(_txid(record.get("txid")))
                except ValueError as exc:
                    raise AuditLogError(f"an abandon line of the audit log cannot be read "
                                        f"({exc}); repair or move the audit log") from exc

    def check(self, signature: Signature) -> None:
        """Raise :class:`PaidBefore` if ``signature`` pays a ref that a live earlier
        signature paid without sharing an input with it."""
        for ref in sorted(signature.refs):
            for earlier in self._by_ref.get(ref, ()):
                if earlier.txid in self._abandoned \
                        or not earlier.outpoints.isdisjoint(signature.outpoints):
                    continue
                raise PaidBefore(
                    f"payment {ref} was paid by {earlier.txid}, signed earlier, which spends "
                    "none of this transaction's inputs: both could confirm and pay it twice. "
                    f"If {earlier.txid} can never confirm, give it up with `satvault signer "
                    "abandon` first")

    def add(self, signature: Signature) -> None:
        self._signed.add(signature.txid)
        self._abandoned.discard(signature.txid)  # signed again: live again
        for ref in signature.refs:
            versions = self._by_ref.setdefault(ref, [])
            if signature not in versions:
                versions.append(signature)

    def signed(self, txid: str) -> bool:
        return _txid(txid) in self._signed

    def payers(self, refs: Iterable[str]) -> list[Signature]:
        """The live signatures that pay any of ``refs``, by txid."""
        found = {s.txid: s for ref in set(refs) for s in self._by_ref.get(ref, ())
                 if s.txid not in self._abandoned}
        return [found[t] for t in sorted(found)]

    def abandon(self, txid: str) -> None:
        self._abandoned.add(_txid(txid))

    def abandoned(self, txid: str) -> bool:
        return txid in self._abandoned
