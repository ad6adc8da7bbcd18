"""What satvault needs from a Bitcoin chain backend, as one Protocol and plain value types.

Amounts are integer satoshis. Scripts are bytes. Heights are ints, hashes and txids are
lower-case hex in the usual (reversed) display order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = ["Block", "ChainBackend", "ChainSync", "ChainSyncSource", "ChainTip", "OutPoint", "Tx",
           "TxIndex", "TxIndexSource", "TxOut", "TxStatus"]


@dataclass(frozen=True, slots=True)
class ChainTip:
    height: int
    hash: str


@dataclass(frozen=True, slots=True)
class ChainSync:
    """How far the node has come: its tip against the best header it knows of.

    ``headers`` is None where the backend cannot tell (an Esplora server serves only the
    chain it has indexed). Times are the tip block's own timestamp and its median time past
    (the median of the last 11 blocks' timestamps), both Unix seconds. ``network``: the chain
    the node is on, in ``SATVAULT_NETWORK``'s words (:mod:`satvault.backends.networks`), None
    where the backend cannot tell."""

    height: int
    headers: int | None
    initial_block_download: bool
    verification_progress: float | None
    tip_time: int
    median_time: int | None
    network: str | None = None


@dataclass(frozen=True, slots=True)
class TxIndex:
    """Whether the node finds any confirmed transaction by its txid alone, which is how
    payouts, sweeps and refills are seen to confirm. Bitcoin Core does only with
    ``-txindex`` (``enabled``), and only for the blocks its index has reached (``synced``
    once it is at the tip; ``height``: the index's best block). An Esplora server indexes
    every transaction by design: enabled, synced, no height of its own."""

    enabled: bool
    synced: bool = True
    height: int | None = None


@dataclass(frozen=True, slots=True)
class OutPoint:
    txid: str
    vout: int


@dataclass(frozen=True, slots=True)
class TxOut:
    value_sat: int
    script_pubkey: bytes


@dataclass(frozen=True, slots=True)
class Tx:
    txid: str
    inputs: tuple[OutPoint, ...]
    outputs: tuple[TxOut, ...]
    is_coinbase: bool = False


@dataclass(frozen=True, slots=True)
class Block:
    hash: str
    height: int
    prev_hash: str
    time: int
    txs: tuple[Tx, ...] = field(default=())


@dataclass(frozen=True, slots=True)
class TxStatus:
    txid: str
    confirmations: int  # 0 = in the mempool
    block_hash: str | None
    block_height: int | None
    tx: Tx


@runtime_checkable
class ChainBackend(Protocol):
    name: str

    async def tip(self) -> ChainTip: ...

    async def block_hash(self, height: int) -> str: ...

    async def block(self, block_hash: str) -> Block: ...

    async def mempool_txids(self) -> set[str]: ...

    async def transaction(self, txid: str) -> TxStatus | None:
        """The transaction if it is in the mempool or in a block of the best chain; None
        otherwise (never a stale block's copy: a reorg took it out)."""
        ...

    async def raw_transaction(self, txid: str) -> bytes | None:
        """The transaction's serialized bytes, if the node finds it (the mempool, or a block
        through its transaction index); None otherwise. What PSBTs carry as an input's
        ``non_witness_utxo``: the adapter checks that the bytes hash to ``txid``."""
        ...

    async def broadcast(self, raw_hex: str) -> str: ...

    async def output(self, txid: str, vout: int, *, include_mempool: bool = True
                     ) -> TxOut | None: ...

    async def feerate_sat_vb(self, target_blocks: int) -> int | None: ...

    async def close(self) -> None: ...


@runtime_checkable
class ChainSyncSource(Protocol):
    """A chain backend that can say whether its node is synced (``satvault doctor``)."""

    async def sync_info(self) -> ChainSync: ...


@runtime_checkable
class TxIndexSource(Protocol):
    """A chain backend that can say whether its node indexes every transaction
    (``satvault doctor``, the payout job's start-up warning)."""

    async def tx_index(self) -> TxIndex | None:
        """The node's transaction index; None when the node cannot say (Bitcoin Core before
        0.21 has no ``getindexinfo``)."""
        ...
