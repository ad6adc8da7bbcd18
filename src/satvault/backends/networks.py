"""Which Bitcoin network a chain node is on, in ``SATVAULT_NETWORK``'s words (``mainnet``,
``testnet``, ``signet``, ``regtest``), and the check that keeps the chain workers off a node
of another one.

Bitcoin Core names its chain in ``getblockchaininfo`` (``main``, ``test``, ``testnet4``,
``signet``, ``regtest``). An Esplora server does not say, but it serves the genesis block
(``/block-height/0``), whose hash is fixed per network: every signet shares one, a custom
signet differing only in its challenge. testnet3 and testnet4 are both ``testnet`` here, as
in the Lightning adapters: they share address formats and key versions, and the settings do
not tell them apart. A chain of neither table (Elements' ``liquidv1``, Liquid's genesis) is
named as found, so it matches no configured network.

:class:`NetworkGuard` asks the node on first contact, again after the node was unreachable
(it may come back as another node), and again once ``recheck_seconds`` passed on the process
clock since its last answer (a node swapped on the same URL without a call failing in
between: one more ``getblockchaininfo`` per interval); until the node is on the configured
network it raises :class:`~satvault.backends.errors.WrongChainNetwork`. The composition root
puts it in front of the workers that credit deposits and build payouts.
"""

from __future__ import annotations

import asyncio

from satvault.backends.base import ChainBackend, ChainSyncSource
from satvault.backends.errors import WrongChainNetwork
from satvault.kernel.clock import unix_time
from satvault.logs import get_logger

__all__ = ["CORE_CHAINS", "GENESIS_HASHES", "NetworkGuard", "network_of_chain",
           "network_of_genesis"]

log = get_logger(__name__)
# How long a node's answer stands before it is asked again (``chain_network_recheck_seconds``).
RECHECK_SECONDS = 300.0

# Every name a node gives its network, in our words: Bitcoin Core's ``chain`` (main, test,
# testnet4 …), LND's ``network`` (mainnet, testnet3, simnet: btcd's, a regtest) and Core
# Lightning's (bitcoin …).
CORE_CHAINS = {"main": "mainnet", "mainnet": "mainnet", "bitcoin": "mainnet",
               "test": "testnet", "testnet": "testnet", "testnet3": "testnet",
               "testnet4": "testnet", "signet": "signet", "regtest": "regtest",
               "simnet": "regtest"}
# Each network's genesis block hash (Bitcoin Core's chainparams.cpp).
GENESIS_HASHES = {
    "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f": "mainnet",
    "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943": "testnet",  # testnet3
    "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043": "testnet",  # testnet4
    "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6": "signet",
    "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206": "regtest",
}


def network_of_chain(name: str) -> str:
    """A node's name for its network (Bitcoin Core's, LND's, Core Lightning's) in our words;
    an unknown one as it is, so it matches no configured network."""
    return CORE_CHAINS.get(name, name)


def network_of_genesis(block_hash: str) -> str:
    block_hash = block_hash.strip().lower()
    return GENESIS_HASHES.get(block_hash, f"unknown (genesis {block_hash})")


class NetworkGuard:
    """Whether ``backend``'s node is on ``network``: :meth:`check` returns once it is known to
    be, raises :class:`WrongChainNetwork` while it is on another one, and lets the backend's
    own error through while the node cannot be reached (asked again next time). A node known
    to be on it is asked again once ``recheck_seconds`` passed since it last said so. A
    backend that cannot tell (a plug-in without ``sync_info``, or one that reports no
    network) is trusted, with a warning in the log (once)."""

    def __init__(self, backend: ChainBackend, network: str, *,
                 recheck_seconds: float = RECHECK_SECONDS) -> None:
        self.backend = backend
        self.network = network
        self.recheck_seconds = recheck_seconds
        self.confirmed = False
        self._confirmed_at = 0.0
        self._lock = asyncio.Lock()
        self._reported: str | None = None
        self._unknown_told = False

    def _known(self) -> bool:
        """Confirmed, and not so long ago that the node must be asked again."""
        elapsed = unix_time() - self._confirmed_at  # a clock set back asks again too
        return self.confirmed and 0 <= elapsed < self.recheck_seconds

    async def check(self) -> None:
        if self._known():
            return
        async with self._lock:  # the chain workers start together: one of them asks
            if self._known():
                return
            found = await self._ask()
            if found is not None and found != self.network:
                self.confirmed = False
                if self._reported != found:
                    self._reported = found
                    log.error("chain_network_mismatch", node=found, configured=self.network,
                              note="the chain watcher, payout job and custody worker stay "
                                   "stopped until the node is on the configured network")
                raise WrongChainNetwork(found, self.network)
            if found is None and not self._unknown_told:
                self._unknown_told = True
                log.warning("chain_network_unknown", backend=self.backend.name,
                            configured=self.network, note="the node's network is not checked")
            elif self._reported is not None:
                log.info("chain_network_ok", network=found)
            self._reported = None
            self.confirmed = True
            self._confirmed_at = unix_time()

    def forget(self) -> None:
        """The node was unreachable: ask it again on the next contact."""
        self.confirmed = False

    async def _ask(self) -> str | None:
        if not isinstance(self.backend, ChainSyncSource):
            return None
        return (await self.backend.sync_info()).network
