"""The chain node's judgement: reachable, on ``SATVAULT_NETWORK``, synced, and keeping the
transaction index that payouts are seen to confirm by.

One check, one finding: the worst of them, in this order — unreachable or warming up, another
network, still syncing, no transaction index (errors); a tip behind its best header, an index
still being built, a network or an index the node cannot say (warnings).
"""

from __future__ import annotations

from satvault.backends.base import ChainSync, TxIndex
from satvault.backends.errors import BackendWarmingUp
from satvault.doctor._report import Check, Status

__all__ = ["SYNC_ERROR_BLOCKS", "SYNC_WARN_BLOCKS", "judge_chain"]

# Blocks the best header may be ahead of the tip before it is a warning, then an error.
SYNC_WARN_BLOCKS = 1
SYNC_ERROR_BLOCKS = 3
WHY_TXINDEX = ("without it a confirmed payout, sweep or refill is never seen to confirm, and "
               "its withdrawals stay unbooked")


def _err(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def judge_chain(sync: ChainSync | BaseException | None, *, kind: str, url: str,
                network: str, txindex: TxIndex | BaseException | None = None) -> Check:
    """The chain node: reachable, on ``network`` (SATVAULT_NETWORK), synced, indexing every
    transaction (``txindex``: what the node said, the error met asking, or None when it
    cannot say)."""
    if sync is None:
        return Check("chain", Status.WARN, f"the {kind} backend cannot report its sync state",
                     "check the node by hand")
    if isinstance(sync, BackendWarmingUp):
        return Check("chain", Status.ERROR, f"the node at {url} is still starting: {_err(sync)}",
                     "wait until it has loaded its block index, then run the doctor again")
    if isinstance(sync, BaseException):
        return Check("chain", Status.ERROR, f"cannot reach the {kind} node at {url}: "
                     f"{_err(sync)}", "check that the node runs, the URL and its credentials "
                     "(bitcoind_url / bitcoind_cookie_file / esplora_url)")
    if sync.network is not None and sync.network != network:
        return Check("chain", Status.ERROR,
                     f"the node is on {sync.network}, satvault is configured for {network}",
                     "point bitcoind_url / esplora_url at a node of that network, or correct "
                     "SATVAULT_NETWORK: deposits would be credited and payouts built on the "
                     "wrong chain (the chain watcher, payout job and custody worker stay "
                     "stopped until they agree)")
    behind = None if sync.headers is None else sync.headers - sync.height
    if sync.initial_block_download or (behind is not None and behind >= SYNC_ERROR_BLOCKS):
        progress = "" if sync.verification_progress is None \
            else f", {sync.verification_progress:.2%} verified"
        return Check("chain", Status.ERROR,
                     f"the node is syncing: tip {sync.height}, best header {sync.headers}"
                     f"{progress}", "wait until it has caught up: until then deposits are "
                     "not seen and payouts are built on a stale chain")
    if isinstance(txindex, TxIndex) and not txindex.enabled:
        return Check("chain", Status.ERROR, f"the {kind} node at {url} runs without -txindex "
                     "(getindexinfo lists no txindex)",
                     "start bitcoind with -txindex=1 (txindex=1 in bitcoin.conf; building the "
                     f"index takes hours on mainnet): {WHY_TXINDEX}")
    if behind is not None and behind >= SYNC_WARN_BLOCKS:
        return Check("chain", Status.WARN, f"tip {sync.height} is {behind} block(s) behind the "
                     "best header", "usually a block being validated; run the doctor again")
    if isinstance(txindex, TxIndex) and not txindex.synced:
        return Check("chain", Status.WARN, f"the node's transaction index is still building "
                     f"(at block {txindex.height}, tip {sync.height})",
                     "wait until getindexinfo reports it synced: until then a payout in a "
                     "block it has not reached is not seen to confirm")
    headers = "" if sync.headers is None else f", best header {sync.headers}"
    if sync.network is None:
        return Check("chain", Status.WARN, f"{kind} at {url} answers (tip {sync.height}"
                     f"{headers}) but does not say which network it is on",
                     f"check by hand that the node is on {network}")
    if isinstance(txindex, BaseException):
        return Check("chain", Status.WARN, f"{kind} at {url} answers (tip {sync.height}"
                     f"{headers}) but not whether it keeps a transaction index: "
                     f"{_err(txindex)}", "run the doctor again; if it persists, check by hand "
                     "that the node runs with -txindex=1")
    if txindex is None:
        return Check("chain", Status.WARN, f"{kind} at {url} answers (tip {sync.height}"
                     f"{headers}) but cannot say whether it keeps a transaction index "
                     "(Bitcoin Core answers getindexinfo from 0.21)",
                     f"check by hand that it runs with -txindex=1 or the like: {WHY_TXINDEX}")
    index = "" if txindex.height is None else ", txindex on"
    return Check("chain", Status.OK, f"{kind} at {url} answers: {sync.network}, tip "
                 f"{sync.height}{headers}{index}")
