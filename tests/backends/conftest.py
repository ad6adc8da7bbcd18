"""Fixtures for the chain-backend tests: one simnet chain per test, reached through either
adapter — ``bitcoind`` over real HTTP to a ``SimnetServer``, ``esplora`` through
``httpx.ASGITransport`` to the fake Esplora (``fake_esplora``) over the same kind of chain."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from dataclasses import dataclass
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
        try:
            yield Node("bitcoind", chain, backend, server.lock)
        finally:
            await backend.close()
            server.stop()
    else:
        app = create_app(chain)
        backend = EsploraBackend("http://esplora.test/api", retries=1, backoff=0.01,
                                 transport=httpx.ASGITransport(app=app))
        try:
            yield Node("esplora", chain, backend, app.state.lock)
        finally:
            await backend.close()
