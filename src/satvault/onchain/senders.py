"""Who paid a deposit: the addresses of the outputs its transaction spends.

The risk rules screen a deposit against these (the sanctions and label lists). They are read
from the chain backend, so the watcher asks before the unit of work that credits the deposit
opens. A node knows only what it indexes: bitcoind without ``-txindex`` finds a parent only
while it is in the mempool, so operators who want senders screened run it with the index;
Esplora and the simulator find every parent. An input whose parent cannot be found is left
out (unknown), and a script with no address form (bare multisig, OP_RETURN) has nothing to
look up.
"""

from __future__ import annotations

from satvault.backends.base import ChainBackend, Tx
from satvault.onchain.addresses import script_to_address
from satvault.onchain.errors import InvalidAddress

__all__ = ["sending_addresses"]


async def sending_addresses(backend: ChainBackend, txid: str, *, network: str,
                            max_inputs: int = 20) -> tuple[str, ...]:
    """The distinct addresses ``txid``'s first ``max_inputs`` inputs spend from, in input
    order. A failed call propagates (the caller's step is retried later)."""
    status = await backend.transaction(txid)
    if status is None:
        return ()
    found: list[str] = []
    parents: dict[str, Tx | None] = {}
    for op in status.tx.inputs[:max_inputs]:
        if op.txid not in parents:
            prev = await backend.transaction(op.txid)
            parents[op.txid] = prev.tx if prev is not None else None
        tx = parents[op.txid]
        if tx is None or op.vout >= len(tx.outputs):
            continue
        try:
            addr = script_to_address(tx.outputs[op.vout].script_pubkey, network)
        except InvalidAddress:
            continue
        if addr not in found:
            found.append(addr)
    return tuple(found)
