"""Fixtures for the chain-backend tests: one simnet chain per test, reached through either
adapter — ``bitcoind`` over real HTTP to a ``SimnetServer``, ``esplora`` through
``httpx.ASGITransport`` to the fake Esplora (``fake_esplora``) over the same kind of chain."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import httpx
import pytest

from satvault.backends.base import ChainBackend
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.esplora import EsploraBackend
from satvault.simnet import Chain, SimnetServer
from tests.backends.fake_esplora import create_app
from tests.simnet.txbuild import Wallet, key, p2wpkh, sign, unsigned


@dataclass
class Node:
    """A chain and one adapter onto it. Chain changes go through the methods here, which
    hold the lock the serving side reads under."""

    kind: str
    chain: Chain
    backend: ChainBackend
    lock: threading.RLock
    # Makes the node claim another network, named as Bitcoin Core names it (main, test,
    # testnet4, signet, regtest): bitcoind's ``chain``, or Esplora's genesis block.
    claim_chain: Callable[[str], None] = field(default=lambda name: None)

    def pay(self, address: str, sat: int) -> str:
        with self.lock:
            return self.chain.pay(address, sat)

    def mine(self, n: int = 1) -> list[str]:
        with self.lock:
            return self.chain.mine(n)

    def reorg(self, depth: int, drop_txids: tuple[str, ...] = ()) -> list[str]:
        with self.lock:
            return self.chain.reorg(depth, drop_txids=drop_txids)

    def double_spend(self, txid: str) -> str:
        with self.lock:
            return self.chain.double_spend(txid)

    def set_feerate(self, sat_vb: int | Decimal) -> None:
        with self.lock:
            self.chain.set_feerate(sat_vb)

    def fund(self, wallet: Wallet, sat: int) -> tuple[str, int]:
        """Pay ``sat`` to ``wallet`` from the faucet (unconfirmed); return the outpoint."""
        txid = self.pay(wallet.address, sat)
        with self.lock:
            hit = self.chain.find_tx(txid)
        assert hit is not None
        spk = wallet.spk.data
        vout = next(n for n, o in enumerate(hit[0].tx.vout) if o.script_pubkey.data == spk)
        return txid, vout


def known_bug(request: pytest.FixtureRequest, reason: str,
              raises: type[BaseException] = AssertionError) -> None:
    """Mark the running test as failing, with ``raises``, for a known adapter bug. Strict:
    once the bug is fixed the test passes, the xfail turns into a failure, and this call must
    go."""
    request.applymarker(pytest.mark.xfail(strict=True, reason=reason, raises=raises))


# Each network's genesis block hash, which is what an Esplora server's /block-height/0 names.
GENESIS = {
    "main": "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f",
    "test": "000000000933ea01ad0ee984209779baaec3ced90fa3f408719526f8d77f4943",
    "testnet4": "00000000da84f2bafbbc53dee25a72ae507ff4914b867c565be350b0da8bf043",
    "signet": "00000008819873e925422c1ff0f99f7cc9bbb232af63a077a480a3633bee1ef6",
    "regtest": "0f9188f13cb7b2c71f2a335e3a4fc328bf5beb436012afca590b1a11466e2206",
    # Liquid's, served by Blockstream's Esplora too: a chain satvault does not know
    "liquidv1": "1466275836220db2944ca059a3a10ef6fd2ea684b0688d2c379296888a206003",
}

ALICE = p2wpkh(key(1))
BOB = p2wpkh(key(2))


def spend(outpoint: tuple[str, int], value: int, outputs: list[tuple[Wallet, int]],
          wallet: Wallet = ALICE) -> tuple[str, str]:
    """A signed P2WPKH spend of ``outpoint`` (worth ``value``); (txid, raw hex)."""
    tx: Any = sign(unsigned(outpoint, [(w.spk, sat) for w, sat in outputs]), wallet, value)
    return tx.txid().hex(), tx.serialize().hex()


@pytest.fixture(params=["bitcoind", "esplora"])
async def node(request: pytest.FixtureRequest) -> AsyncIterator[Node]:
    chain = Chain()
    backend: ChainBackend
    if request.param == "bitcoind":
        server = SimnetServer(chain).start()
        backend = BitcoindBackend(server.url, retries=1, backoff=0.01)

        def claim_rpc(name: str) -> None:
            with httpx.Client(auth=(server.user, server.password)) as http:
                http.post(server.url, json={"method": "simnet_setchain", "params": [name]}
                          ).raise_for_status()

        try:
            yield Node("bitcoind", chain, backend, server.lock, claim_rpc)
        finally:
            await backend.close()
            server.stop()
    else:
        app = create_app(chain)
        backend = EsploraBackend("http://esplora.test/api", retries=1, backoff=0.01,
                                 transport=httpx.ASGITransport(app=app))

        def claim_genesis(name: str) -> None:
            app.state.genesis = GENESIS[name]

        try:
            yield Node("esplora", chain, backend, app.state.lock, claim_genesis)
        finally:
            await backend.close()
