"""Fixtures: a fresh simulated network per test, its LND REST server (a few ms to start),
the platform's own LND adapter pointed at it, and a Core Lightning RPC socket."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from satvault.backends.lnd import LndBackend
from satvault.simnet.ln import ClnRpcServer, LndRestServer, LnNetwork

MACAROON = "0201036c6e6402f801030a10" + "ab" * 20


@pytest.fixture
def net() -> Iterator[LnNetwork]:
    network = LnNetwork()
    yield network
    network.close()


@pytest.fixture
def lnd(net: LnNetwork) -> Iterator[LndRestServer]:
    with LndRestServer(net, macaroon_hex=MACAROON) as server:
        yield server


@pytest.fixture(params=["aiohttp", "httpx"])
async def backend(lnd: LndRestServer, request: pytest.FixtureRequest
                  ) -> AsyncIterator[LndBackend]:
    """The adapter on each of its HTTP clients (aiohttp's pool, the default; httpx's own):
    the same calls, answers and errors either way."""
    client = LndBackend(lnd.url, macaroon_hex=MACAROON, timeout=5.0, http_client=request.param)
    yield client
    await client.close()


@pytest.fixture
def cln(net: LnNetwork) -> Iterator[ClnRpcServer]:
    with ClnRpcServer(net) as server:
        yield server
