"""The Esplora adapter's own behaviour: how it reads electrs's error texts, fee tables and
failures — against the fake Esplora, or a canned reply (``httpx.MockTransport``)."""

from __future__ import annotations

import json
from collections.abc import Callable

import httpx
import pytest

from satvault.backends.errors import (
    BackendProtocolError,
    BackendUnavailable,
    NotFound,
    TxAlreadyInChain,
    TxMissingInputs,
    TxRejected,
)
from satvault.backends.esplora import EsploraBackend
from satvault.simnet import Chain
from tests.backends.conftest import GENESIS
from tests.backends.fake_esplora import create_app

Handler = Callable[[httpx.Request], httpx.Response]


def canned(handler: Handler, *, retries: int = 2) -> EsploraBackend:
    return EsploraBackend("https://esplora.test/api", retries=retries, backoff=0.001,
                          transport=httpx.MockTransport(handler))


def rpc_error(code: int, message: str) -> httpx.Response:
    detail = json.dumps({"code": code, "message": message}, separators=(",", ":"))
    return httpx.Response(400, text=f"sendrawtransaction RPC error: {detail}")


@pytest.mark.parametrize(("reply", "error", "code"), [
    (rpc_error(-27, "Transaction outputs already in utxo set"), TxAlreadyInChain, -27),
    (rpc_error(-25, "bad-txns-inputs-missingorspent"), TxMissingInputs, -25),
    (rpc_error(-26, "min relay fee not met, 100 < 141"), TxRejected, -26),
    (rpc_error(-22, "TX decode failed"), TxRejected, -22),
    (httpx.Response(400, text="Invalid hex string"), TxRejected, 0),
])
async def test_broadcast_errors_from_electrs(reply: httpx.Response, error: type[TxRejected],
                                             code: int) -> None:
    backend = canned(lambda request: reply)
    try:
        with pytest.raises(error) as info:
            await backend.broadcast("00")
        assert type(info.value) is error and info.value.code == code
    finally:
        await backend.close()


async def test_broadcast_sends_the_hex_and_returns_the_txid() -> None:
    seen: list[tuple[str, str, bytes]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append((request.method, request.url.path, request.content))
        return httpx.Response(200, text="ab" * 32 + "\n")

    backend = canned(handler)
    try:
        assert await backend.broadcast("0200") == "ab" * 32
        assert seen == [("POST", "/api/tx", b"0200")]
    finally:
        await backend.close()


@pytest.mark.parametrize(("table", "target", "expected"), [
    ({}, 6, None),
    ({"1": 30.5, "6": 10.0, "144": 1.0}, 1, 31),
    ({"1": 30.5, "6": 10.0, "144": 1.0}, 3, 10),  # next slower target in the table
    ({"1": 30.5, "6": 10.0, "144": 1.0}, 1000, 1),  # beyond the table: the slowest
    ({"2": 0.5}, 2, 1),  # never below 1 sat/vB
    ({"6": 7}, 6, 7),
])
async def test_fee_table(table: dict[str, float], target: int, expected: int | None) -> None:
    backend = canned(lambda request: httpx.Response(200, json=table))
    try:
        assert await backend.feerate_sat_vb(target) == expected
    finally:
        await backend.close()


async def test_unreachable_is_retried_then_unavailable() -> None:
    attempts: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        attempts.append(request.url.path)
        raise httpx.ConnectError("connection refused", request=request)

    backend = canned(handler, retries=3)
    try:
        with pytest.raises(BackendUnavailable):
            await backend.tip()
        assert attempts == ["/api/blocks/tip/hash"] * 4
        with pytest.raises(BackendUnavailable):
            await backend.broadcast("00")
    finally:
        await backend.close()


async def test_not_found_is_not_found() -> None:
    backend = canned(lambda request: httpx.Response(404, text="Block not found"))
    try:
        with pytest.raises(NotFound):
            await backend.block_hash(5)
        assert await backend.transaction("ab" * 32) is None
    finally:
        await backend.close()


async def test_server_errors_are_unavailable(request: pytest.FixtureRequest) -> None:
    backend = canned(lambda request: httpx.Response(503, text="Service Unavailable"))
    try:
        with pytest.raises(BackendUnavailable):
            await backend.tip()
    finally:
        await backend.close()


async def test_broadcast_through_a_failing_proxy_is_not_a_rejection(
        request: pytest.FixtureRequest) -> None:
    """A 502 says nothing about the transaction: it may well have reached the node. Calling
    it rejected invites a refund of a payment that is on its way."""
    backend = canned(lambda request: httpx.Response(502, text="<html>Bad Gateway</html>"))
    try:
        with pytest.raises(BackendUnavailable):
            await backend.broadcast("00")
    finally:
        await backend.close()


@pytest.mark.parametrize("path", ["/api/mempool/txids", "/api/blocks/tip/hash"])
async def test_unreadable_replies_stay_inside_the_adapter(
        path: str, request: pytest.FixtureRequest) -> None:

    def handler(req: httpx.Request) -> httpx.Response:
        if req.url.path == path:
            return httpx.Response(200, text="<html>captive portal</html>")
        return httpx.Response(200, text="[]")

    backend = canned(handler)
    try:
        with pytest.raises(BackendProtocolError):
            if path.endswith("hash"):
                await backend.tip()
            else:
                await backend.mempool_txids()
    finally:
        await backend.close()


async def test_tip_is_one_block(request: pytest.FixtureRequest) -> None:
    """A block found between the adapter's two tip requests must not pair one block's
    height with the next block's hash."""
    chain = Chain()
    inner = httpx.ASGITransport(app=create_app(chain))

    class MinesAfterHeight(httpx.AsyncBaseTransport):
        async def handle_async_request(self, req: httpx.Request) -> httpx.Response:
            response = await inner.handle_async_request(req)
            if req.url.path.endswith("/blocks/tip/height"):
                chain.mine(1)
            return response

    backend = EsploraBackend("http://esplora.test/api", transport=MinesAfterHeight())
    try:
        tip = await backend.tip()
        assert chain.block_at(tip.height).hash == tip.hash  # type: ignore[union-attr]
    finally:
        await backend.close()


async def test_a_genesis_block_of_no_known_network_is_named_not_guessed() -> None:
    """A server of a chain satvault does not know (Blockstream's Liquid Esplora, say) is on
    none of the configured networks: its genesis hash is reported as it is."""
    app = create_app(Chain())
    app.state.genesis = GENESIS["liquidv1"]
    backend = EsploraBackend("http://esplora.test/api", retries=0,
                             transport=httpx.ASGITransport(app=app))
    try:
        sync = await backend.sync_info()
    finally:
        await backend.close()
    assert sync.network == f"unknown (genesis {GENESIS['liquidv1']})"


async def test_an_answer_nested_past_the_parsers_limit_stays_inside_the_adapter(
        request: pytest.FixtureRequest) -> None:
    """Found from outside (in LNURL answers, the same parse): JSON nested ~100k deep raised
    RecursionError, which no "not JSON" handler caught."""
    backend = canned(lambda req: httpx.Response(200, text="[" * 100_000 + "]" * 100_000))
    try:
        with pytest.raises(BackendProtocolError, match="did not answer JSON"):
            await backend.mempool_txids()
    finally:
        await backend.close()
