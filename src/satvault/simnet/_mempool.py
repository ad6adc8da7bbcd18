"""The mempool: unconfirmed transactions, which outputs they spend, and their families.

Entries are kept in insertion order, and a transaction only enters after all its in-mempool
parents, so iteration order is always a valid mining order (parents before children). A
replacement evicts its conflicts and their descendants before it enters, which keeps that
true.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

from satvault.simnet._primitives import Coin, Outpoint, Tx

__all__ = ["Mempool", "MempoolEntry"]


@dataclass
class MempoolEntry:
    tx: Tx
    fee: int
    time: int
    height: int
    parents: set[str] = field(default_factory=set)

    @property
    def txid(self) -> str:
        return self.tx.txid

    @property
    def vsize(self) -> int:
        return self.tx.vsize

    @property
    def signals_rbf(self) -> bool:
        return any(inp.sequence < 0xFFFFFFFE for inp in self.tx.tx.vin)


class Mempool:
    def __init__(self) -> None:
        self._entries: dict[str, MempoolEntry] = {}
        self._spenders: dict[Outpoint, str] = {}
        self._wtxids: dict[str, str] = {}
        self._children: dict[str, set[str]] = {}
        self.sequence = 0

    def copy(self) -> Mempool:
        other = Mempool()
        for entry in self._entries.values():
            other.add(MempoolEntry(entry.tx, entry.fee, entry.time, entry.height,
                                   set(entry.parents)))
        return other

    def __contains__(self, txid: object) -> bool:
        return txid in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[MempoolEntry]:
        return iter(list(self._entries.values()))

    def get(self, txid: str) -> MempoolEntry | None:
        return self._entries.get(txid)

    def txid_for_wtxid(self, wtxid: str) -> str | None:
        return self._wtxids.get(wtxid)

    def spender(self, outpoint: Outpoint) -> str | None:
        return self._spenders.get(outpoint)

    def output(self, outpoint: Outpoint, tip_height: int) -> Coin | None:
        """An output created by a mempool transaction (spent or not)."""
        entry = self._entries.get(outpoint[0])
        if entry is None or outpoint[1] >= len(entry.tx.tx.vout):
            return None
        out = entry.tx.tx.vout[outpoint[1]]
        return Coin(out.value, out.script_pubkey.data, tip_height + 1, False)

    def children(self, txid: str) -> set[str]:
        return set(self._children.get(txid, ()))

    def add(self, entry: MempoolEntry) -> None:
        txid = entry.txid
        entry.parents = {op[0] for op in entry.tx.outpoints() if op[0] in self._entries}
        self._entries[txid] = entry
        self.sequence += 1
        self._wtxids[entry.tx.wtxid] = txid
        for op in entry.tx.outpoints():
            self._spenders[op] = txid
        for parent in entry.parents:
            self._children.setdefault(parent, set()).add(txid)

    def _remove_one(self, txid: str) -> MempoolEntry:
        entry = self._entries.pop(txid)
        self.sequence += 1
        self._wtxids.pop(entry.tx.wtxid, None)
        for op in entry.tx.outpoints():
            if self._spenders.get(op) == txid:
                del self._spenders[op]
        for parent in entry.parents:
            self._children.get(parent, set()).discard(txid)
        for child in self._children.pop(txid, set()):
            if child in self._entries:
                self._entries[child].parents.discard(txid)
        return entry

    def descendants(self, txid: str) -> list[str]:
        """``txid`` and everything spending from it, in mempool (mining) order."""
        found = {txid}
        stack = [txid]
        while stack:
            for child in self._children.get(stack.pop(), ()):
                if child not in found:
                    found.add(child)
                    stack.append(child)
        return [t for t in self._entries if t in found]

    def ancestors(self, txid: str) -> set[str]:
        """In-mempool ancestors of ``txid`` (not including it)."""
        found: set[str] = set()
        stack = list(self._entries[txid].parents)
        while stack:
            t = stack.pop()
            if t not in found:
                found.add(t)
                stack.extend(self._entries[t].parents)
        return found

    def remove_with_descendants(self, txid: str) -> list[str]:
        gone = self.descendants(txid)
        for t in reversed(gone):
            self._remove_one(t)
        return gone

    def remove_for_block(self, txids: list[str]) -> None:
        """Remove transactions that were just mined (parents come first in a block)."""
        for t in txids:
            if t in self._entries:
                self._remove_one(t)

    def remove_conflicts_of(self, tx: Tx) -> list[str]:
        """Evict mempool transactions spending the same outputs as a mined ``tx``."""
        gone: list[str] = []
        for op in tx.outpoints():
            other = self._spenders.get(op)
            if other is not None and other != tx.txid:
                gone += self.remove_with_descendants(other)
        return gone

    def clear(self) -> list[MempoolEntry]:
        entries = list(self._entries.values())
        self._entries, self._spenders, self._wtxids, self._children = {}, {}, {}, {}
        self.sequence += len(entries)
        return entries
