"""Fixtures: a fresh simnet node per test (a chain is ~15 ms to mine, a server ~5 ms to
start) and a small JSON-RPC client that talks to it over real HTTP."""

from __future__ import annotations

import json
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from satvault.simnet import Chain, SimnetServer
from satvault.simnet.rpc import dumps


class RpcFailure(Exception):
    def __init__(self, code: int, message: str, status: int) -> None:
        self.code = code
        self.message = message
        self.status = status
        super().__init__(f"{code} {message} (HTTP {status})")


class Rpc:
    """bitcoind-style JSON-RPC 1.0 over httpx; results parsed with exact Decimals."""

    def __init__(self, node: SimnetServer) -> None:
        self.node = node
        self.http = httpx.Client(base_url=node.base_url, auth=(node.user, node.password),
                                 timeout=5)

    def post(self, body: Any, **kwargs: Any) -> httpx.Response:
        content = body if isinstance(body, str | bytes) else dumps(body)
        return self.http.post("/", content=content, **kwargs)

    def text(self, method: str, *params: Any) -> str:
        return self.post({"id": 1, "method": method, "params": list(params)}).text

    def __call__(self, method: str, *params: Any) -> Any:
        resp = self.post({"jsonrpc": "1.0", "id": "t", "method": method,
                          "params": list(params)})
        body = json.loads(resp.text, parse_float=Decimal)
        if body["error"] is not None:
            raise RpcFailure(body["error"]["code"], body["error"]["message"], resp.status_code)
        assert resp.status_code == 200
        return body["result"]

    def fails(self, method: str, *params: Any) -> RpcFailure:
        with pytest.raises(RpcFailure) as info:
            self(method, *params)
        return info.value

    def close(self) -> None:
        self.http.close()


@pytest.fixture
def chain() -> Chain:
    return Chain()


@pytest.fixture
def node(chain: Chain) -> Iterator[SimnetServer]:
    server = SimnetServer(chain).start()
    yield server
    server.stop()


@pytest.fixture
def rpc(node: SimnetServer) -> Iterator[Rpc]:
    client = Rpc(node)
    yield client
    client.close()
