"""The bitcoind adapter's own behaviour: retries through warm-up and outages, credentials
(user/password and the cookie file), and amounts that stay exact to the satoshi — against
the simnet's JSON-RPC server, or a canned reply (``httpx.MockTransport``) where the server
would never answer that way."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from satvault.backends.base import TxOut
from satvault.backends.bitcoind import BitcoindBackend, btc_to_sat
from satvault.backends.errors import (
    BackendError,
    BackendProtocolError,
    BackendUnavailable,
    BackendWarmingUp,
    NotFound,
)
from satvault.simnet import Chain, SimnetServer
from tests.backends.conftest import ALICE

TXID = "cd" * 32
SPK = "0014" + "11" * 20


@pytest.fixture
def server() -> Iterator[SimnetServer]:
    node = SimnetServer(Chain()).start()
    yield node
    node.stop()


@pytest.fixture
async def adapters() -> AsyncIterator[Callable[..., BitcoindBackend]]:
    """Make adapters (fast retries unless told otherwise); all closed at the end."""
    made: list[BitcoindBackend] = []

    def make(url: str, **kw: Any) -> BitcoindBackend:
        kw.setdefault("retries", 2)
        kw.setdefault("backoff", 0.01)
        made.append(BitcoindBackend(url, **kw))
        return made[-1]

    yield make
    for backend in made:
        await backend.close()


# -- warm-up and outages -----------------------------------------------------------------

async def test_warm_up_is_retried_until_it_ends(server: SimnetServer, adapters: Any) -> None:
    backend = adapters(server.url, retries=6, backoff=0.03)  # waits up to 1.9 s in all
    server.set_warmup(0.15)
    tip = await backend.tip()
    assert tip.height == 110 and tip.hash == server.chain.tip.hash
    assert backend.last_error is None


async def test_warm_up_that_outlasts_the_retries(server: SimnetServer, adapters: Any) -> None:
    backend = adapters(server.url)
    server.set_warmup(60)
    with pytest.raises(BackendWarmingUp) as info:
        await backend.tip()
    assert isinstance(info.value, BackendUnavailable)
    assert "Loading block index" in str(info.value)
    assert backend.last_error is not None and "warming up" in backend.last_error
    server.set_warmup(0)
    assert (await backend.tip()).height == 110
    assert backend.last_error is None


async def test_offline_node_is_unavailable_then_back(server: SimnetServer,
                                                     adapters: Any) -> None:
    backend = adapters(server.url)
    assert (await backend.tip()).height == 110  # leaves a keep-alive connection behind
    server.set_offline(True)
    with pytest.raises(BackendUnavailable) as info:
        await backend.tip()
    assert not isinstance(info.value, BackendWarmingUp)
    assert isinstance(info.value, BackendError)
    with pytest.raises(BackendUnavailable):
        await backend.broadcast("00")
    server.set_offline(False)
    assert (await backend.tip()).height == 110
    assert await backend.mempool_txids() == set()


async def test_node_coming_back_during_the_retries(server: SimnetServer, adapters: Any) -> None:
    backend = adapters(server.url, retries=6, backoff=0.03)
    server.set_offline(True)
    asyncio.get_running_loop().call_later(0.1, server.set_offline, False)
    assert (await backend.tip()).height == 110


# -- credentials -------------------------------------------------------------------------

@pytest.mark.parametrize("userinfo", ["simnet:wrong@", "nobody:simnet@", ""])
async def test_refused_credentials(server: SimnetServer, adapters: Any, userinfo: str) -> None:
    backend = adapters(f"http://{userinfo}127.0.0.1:{server.port}/", retries=0)
    with pytest.raises(BackendProtocolError, match="401"):
        await backend.tip()


async def test_percent_encoded_credentials(adapters: Any) -> None:
    node = SimnetServer(Chain(initial_blocks=1), user="us@r", password="p:ss/w%rd").start()
    try:
        backend = adapters(f"http://us%40r:p%3Ass%2Fw%25rd@127.0.0.1:{node.port}/")
        assert (await backend.tip()).height == 1
    finally:
        node.stop()


async def test_cookie_file_auth(tmp_path: Path, adapters: Any) -> None:
    cookie = tmp_path / "regtest" / ".cookie"
    node = SimnetServer(Chain(initial_blocks=3), cookie_path=cookie).start()
    try:
        backend = adapters(node.base_url, cookie_file=cookie)
        assert (await backend.tip()).height == 3
        # A restarted node writes a new cookie: the adapter reads it again on every call.
        before = cookie.read_text()
        node.stop()
        node.start()
        assert cookie.read_text() != before
        assert (await backend.tip()).height == 3
        # Without the cookie (and no user in the URL) the node refuses us.
        with pytest.raises(BackendProtocolError, match="401"):
            await adapters(node.base_url).tip()
    finally:
        node.stop()


async def test_missing_cookie_file(server: SimnetServer, tmp_path: Path,
                                   adapters: Any) -> None:
    backend = adapters(server.base_url, cookie_file=tmp_path / "no-such" / ".cookie")
    with pytest.raises(BackendUnavailable, match="cookie"):
        await backend.tip()


# -- exact amounts -----------------------------------------------------------------------

@pytest.mark.parametrize("sat", [123_456_789, 29_000_000, 50_000_000_001, 546])
async def test_amounts_are_exact(server: SimnetServer, adapters: Any, sat: int) -> None:
    """29_000_000 sat is 0.29 BTC, which a float turns into 28999999.999999996 sat;
    50_000_000_001 sat is 500.00000001 BTC, past a float's 15 significant digits."""
    backend = adapters(server.url)
    with server.lock:
        txid = server.chain.pay(ALICE.address, sat)
    coin = TxOut(sat, ALICE.spk.data)
    status = await backend.transaction(txid)
    assert status is not None and coin in status.tx.outputs
    vout = status.tx.outputs.index(coin)
    assert await backend.output(txid, vout) == coin
    with server.lock:
        [block_hash] = server.chain.mine(1)
        sim = server.chain.block(block_hash)
    assert sim is not None
    block = await backend.block(block_hash)
    assert block.txs[1].outputs[vout] == coin
    exact = [[o.value for o in t.tx.vout] for t in sim.txs]
    assert [[o.value_sat for o in t.outputs] for t in block.txs] == exact
    assert all(type(o.value_sat) is int for t in block.txs for o in t.outputs)


@pytest.mark.parametrize(("btc", "sat"), [
    (Decimal("0.00000001"), 1), (Decimal("0.29"), 29_000_000), (Decimal(50), 5_000_000_000),
    (0, 0), (21, 2_100_000_000), (Decimal("20999999.97690000"), 2_099_999_997_690_000),
    (Decimal("1E-8"), 1),
])
def test_btc_to_sat(btc: Decimal | int, sat: int) -> None:
    assert btc_to_sat(btc) == sat
    assert type(btc_to_sat(btc)) is int


@pytest.mark.parametrize("bad", [Decimal("0.000000001"), Decimal("1.123456789"), 0.29, "0.29",
                                 None])
def test_btc_to_sat_refuses(bad: Any) -> None:
    with pytest.raises(BackendProtocolError):
        btc_to_sat(bad)


# -- canned replies ----------------------------------------------------------------------

class CannedNode:
    """A JSON-RPC endpoint answering each method with a fixed JSON text (written by hand,
    so numbers arrive exactly as typed) and an HTTP status."""

    def __init__(self, replies: dict[str, tuple[int, str]]) -> None:
        self.replies = replies
        self.calls: list[str] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content)
        self.calls.append(body["method"])
        status, result = self.replies[body["method"]]
        return httpx.Response(status, text=result.replace("$ID", str(body["id"])),
                              headers={"content-type": "application/json"})

    def adapter(self, **kw: Any) -> BitcoindBackend:
        kw.setdefault("retries", 2)
        kw.setdefault("backoff", 0.001)
        return BitcoindBackend("http://u:p@node.test:18443/", transport=httpx.MockTransport(self),
                               **kw)


def ok(result: str) -> tuple[int, str]:
    return 200, f'{{"result": {result}, "error": null, "id": $ID}}'


def err(code: int, message: str, status: int = 500) -> tuple[int, str]:
    return status, json.dumps({"result": None, "error": {"code": code, "message": message},
                               "id": 1})


def mempool_tx(value: str) -> str:
    return (f'{{"txid": "{TXID}", "vin": [{{"txid": "{"ef" * 32}", "vout": 1}}], '
            f'"vout": [{{"value": {value}, "n": 0, "scriptPubKey": {{"hex": "{SPK}"}}}}]}}')


def txout(value: str) -> str:
    return f'{{"bestblock": "{"00" * 32}", "value": {value}, "scriptPubKey": {{"hex": "{SPK}"}}}}'


async def test_json_numbers_are_read_exactly() -> None:
    node = CannedNode({"getrawtransaction": ok(mempool_tx("0.29")),
                       "gettxout": ok(txout("20999999.97690000")),
                       "estimatesmartfee": ok('{"feerate": 0.00012001, "blocks": 2}')})
    backend = node.adapter()
    try:
        status = await backend.transaction(TXID)
        assert status is not None
        assert status.tx.outputs == (TxOut(29_000_000, bytes.fromhex(SPK)),)
        assert await backend.output(TXID, 0) == TxOut(2_099_999_997_690_000, bytes.fromhex(SPK))
        assert await backend.feerate_sat_vb(2) == 13  # 12.001 sat/vB, rounded up
    finally:
        await backend.close()


@pytest.mark.parametrize("value", ["0.123456789", "1.000000001", "0.00000000999"])
async def test_more_than_eight_decimals_is_refused(value: str) -> None:
    node = CannedNode({"getrawtransaction": ok(mempool_tx(value)),
                       "gettxout": ok(txout(value)),
                       "estimatesmartfee": ok(f'{{"feerate": {value}, "blocks": 2}}')})
    backend = node.adapter()
    try:
        with pytest.raises(BackendProtocolError, match="whole number of satoshis"):
            await backend.transaction(TXID)
        with pytest.raises(BackendProtocolError, match="whole number of satoshis"):
            await backend.output(TXID, 0)
        with pytest.raises(BackendProtocolError, match="whole number of satoshis"):
            await backend.feerate_sat_vb(2)
    finally:
        await backend.close()


async def test_no_fee_estimate_and_not_found() -> None:
    no_such = "No such mempool or blockchain transaction. Use gettransaction for wallet " \
              "transactions."
    node = CannedNode({"estimatesmartfee": ok('{"errors": ["Insufficient data or no feerate '
                                              'found"], "blocks": 0}'),
                       "getrawtransaction": err(-5, no_such),
                       "getblock": err(-5, "Block not found"),
                       "gettxout": ok("null")})
    backend = node.adapter()
    try:
        assert await backend.feerate_sat_vb(6) is None
        assert await backend.transaction(TXID) is None
        assert await backend.output(TXID, 0) is None
        with pytest.raises(NotFound):
            await backend.block("00" * 32)
    finally:
        await backend.close()


async def test_busy_node_is_retried_then_unavailable() -> None:
    node = CannedNode({"getblockcount": (503, "Work queue depth exceeded")})
    backend = node.adapter(retries=3)
    try:
        with pytest.raises(BackendUnavailable, match="503"):
            await backend.call("getblockcount")
        assert node.calls == ["getblockcount"] * 4
    finally:
        await backend.close()


async def test_unknown_error_codes_and_non_json() -> None:
    node = CannedNode({"getblockcount": err(-1, "something odd"),
                       "getbestblockhash": (403, "Forbidden"),
                       "getrawmempool": (200, "<html>proxy error</html>")})
    backend = node.adapter()
    try:
        with pytest.raises(BackendProtocolError, match="-1"):
            await backend.call("getblockcount")
        with pytest.raises(BackendProtocolError, match="403"):
            await backend.call("getbestblockhash")
        with pytest.raises(BackendProtocolError, match="no JSON"):
            await backend.mempool_txids()
        assert node.calls.count("getblockcount") == 1  # not retried
    finally:
        await backend.close()


@pytest.mark.parametrize("reply", ["[]", "null", '"ok"', '{"result": 1, "error": "boom"}'])
async def test_malformed_replies_stay_inside_the_adapter(reply: str,
                                                         request: pytest.FixtureRequest) -> None:
    node = CannedNode({"getblockcount": (200, reply)})
    backend = node.adapter()
    try:
        with pytest.raises(BackendProtocolError):
            await backend.call("getblockcount")
    finally:
        await backend.close()


async def test_an_answer_nested_past_the_parsers_limit_is_a_protocol_error() -> None:
    """Found from outside (in LNURL answers, the same parse): JSON nested ~100k deep raised
    RecursionError, which no "not JSON" handler caught."""
    node = CannedNode({"getrawmempool": (200, "[" * 100_000 + "]" * 100_000)})
    backend = node.adapter()
    try:
        with pytest.raises(BackendProtocolError, match="no JSON"):
            await backend.mempool_txids()
    finally:
        await backend.close()
