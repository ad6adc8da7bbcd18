"""The previous transactions of the coins a move spends: each PSBT input's
``non_witness_utxo``.

The hot signer takes an input's amount only from its previous transaction, whose txid it
checks against the outpoint (the segwit fee attack: :mod:`satvault.signer._policy`), so every
payout, sweep and fee bump carries them. They come from where the platform has them:

* its own moves (``payout_txs.raw_tx``): the change of a payout, the outputs of a sweep or a
  refill, which are most of what the semi-cold wallet spends;
* the chain backend for the rest (deposits, operator funding): ``getrawtransaction`` (the node
  runs with ``-txindex``, which ``satvault doctor`` checks) or Esplora's ``/tx/:txid/hex``.

A :class:`PrevTxs` holds one move's transactions, each fetched once. Reads and fetches run
outside any unit of work: a planner that finds, under its locks, coins whose transactions it
does not hold raises :class:`MissingPrevTxs` before it writes anything, and
:func:`planned_with_prev_txs` fetches them with no transaction open and runs the planner
again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from embit.psbt import PSBT
from embit.script import Witness
from embit.transaction import Transaction
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.kernel.retrying import retrying
from satvault.payouts.errors import PrevTxUnavailable
from satvault.payouts.models import PayoutTx

__all__ = ["MissingPrevTxs", "PrevTxs", "planned_with_prev_txs"]

T = TypeVar("T")

_CONCURRENT_FETCHES = 8
_ROUNDS = 3


class MissingPrevTxs(Exception):
    """Raised by a planner, before it writes, for coins whose previous transactions are not
    fetched yet; its unit of work rolls back."""

    def __init__(self, txids: Iterable[str]) -> None:
        self.txids = frozenset(txids)
        super().__init__(f"{len(self.txids)} previous transactions to fetch")


class PrevTxs:
    """The previous transactions of one move, by txid (display hex)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession],
                 backend: ChainBackend) -> None:
        self._sessions = sessions
        self._backend = backend
        self._raw: dict[str, bytes] = {}
        self.fetched_from_node = 0

    def get(self, txid: str) -> bytes:
        return self._raw[txid]

    def require(self, txids: Iterable[str]) -> None:
        """Raise :class:`MissingPrevTxs` unless every one of ``txids`` is held."""
        missing = {t for t in txids if t not in self._raw}
        if missing:
            raise MissingPrevTxs(missing)

    async def fetch(self, txids: Iterable[str]) -> None:
        """Fetch those not held yet: our own moves' from the database, the others from the
        node. Never call it inside a unit of work. :class:`PrevTxUnavailable` when the node
        does not find one; ``BackendUnavailable`` when it cannot be reached."""
        missing = sorted({t for t in txids if t not in self._raw})
        if not missing:
            return
        async with self._sessions() as session:
            rows = (await session.execute(select(PayoutTx.txid, PayoutTx.raw_tx).where(
                PayoutTx.txid.in_(missing)))).all()
        for txid, raw_hex in rows:
            self._raw[txid] = bytes.fromhex(raw_hex)
        rest = [t for t in missing if t not in self._raw]
        gate = asyncio.Semaphore(_CONCURRENT_FETCHES)

        async def one(txid: str) -> tuple[str, bytes | None]:
            async with gate:
                return txid, await self._backend.raw_transaction(txid)

        for txid, raw in await asyncio.gather(*(one(t) for t in rest)):
            self.fetched_from_node += 1
            if raw is None:
                raise PrevTxUnavailable(
                    f"the node does not find the transaction {txid} a coin to spend was paid "
                    "in (is bitcoind running with -txindex? satvault doctor checks it); a "
                    "PSBT input needs it as its non_witness_utxo")
            self._raw[txid] = raw

    async def complete(self, psbt_b64: str) -> str:
        """``psbt_b64`` with every input's ``non_witness_utxo`` filled in where missing (a
        batch stored before PSBTs carried them); the unsigned transaction is unchanged."""
        psbt = PSBT.from_string(psbt_b64)
        bare = [n for n, scope in enumerate(psbt.inputs) if scope.non_witness_utxo is None]
        if not bare:
            return psbt_b64
        txids = {n: bytes(psbt.inputs[n].txid).hex() for n in bare}
        await self.fetch(txids.values())
        for n, txid in txids.items():
            prev = Transaction.parse(self._raw[txid])
            for vin in prev.vin:
                vin.witness = Witness([])
            psbt.inputs[n].non_witness_utxo = prev
        return str(psbt.to_base64())


async def planned_with_prev_txs(sessions: async_sessionmaker[AsyncSession],
                                backend: ChainBackend,
                                plan: Callable[[AsyncSession, PrevTxs], Awaitable[T]]) -> T:
    """Run ``plan`` in a unit of work (:func:`retrying`); when it raises
    :class:`MissingPrevTxs`, fetch those with no transaction open and run it again. The coins
    it picks can change between rounds (another planner took some): after a few rounds
    :class:`PrevTxUnavailable`, and the next pass tries again."""
    prev = PrevTxs(sessions, backend)
    for _ in range(_ROUNDS):
        try:
            return await retrying(sessions, lambda session: plan(session, prev))
        except MissingPrevTxs as missing:
            await prev.fetch(missing.txids)
    raise PrevTxUnavailable(f"the coins to spend changed {_ROUNDS} times while their "
                            "previous transactions were fetched")
