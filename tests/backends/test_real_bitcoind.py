"""The contract's read-only half against a real regtest bitcoind, and mining where the node
allows it. Skipped unless ``SATVAULT_TEST_BITCOIND_URL`` is set::

    SATVAULT_TEST_BITCOIND_URL=http://user:pass@127.0.0.1:18443/wallet/test \\
        pytest -m real_node tests/backends

``SATVAULT_TEST_BITCOIND_COOKIE`` names a ``.cookie`` file to use instead of the URL's
credentials. The node must be on regtest (checked first); mining and the wallet payment
need a loaded wallet and ``generatetoaddress``, and skip when the node refuses them.
Confirmed transactions are looked up by txid only when the node runs with ``-txindex``.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from decimal import Decimal

import pytest

from satvault.backends.base import ChainBackend
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.errors import BackendProtocolError, NotFound, TxRejected

URL = os.environ.get("SATVAULT_TEST_BITCOIND_URL", "")
COOKIE = os.environ.get("SATVAULT_TEST_BITCOIND_COOKIE") or None
UNKNOWN = "ab" * 32

pytestmark = [pytest.mark.real_node,
              pytest.mark.skipif(not URL, reason="SATVAULT_TEST_BITCOIND_URL is not set")]


@pytest.fixture
async def node() -> AsyncIterator[BitcoindBackend]:
    backend = BitcoindBackend(URL, cookie_file=COOKIE, retries=2, backoff=0.1)
    try:
        chain = (await backend.call("getblockchaininfo"))["chain"]
        if chain != "regtest":
            pytest.skip(f"SATVAULT_TEST_BITCOIND_URL points at {chain}, not regtest")
        yield backend
    finally:
        await backend.close()


async def has_txindex(backend: BitcoindBackend) -> bool:
    """Without -txindex, getrawtransaction finds only mempool transactions."""
    try:
        return "txindex" in await backend.call("getindexinfo", "txindex")
    except BackendProtocolError:
        return False


async def optional(backend: BitcoindBackend, method: str, *params: object) -> object:
    """Call something the node may not allow (no wallet, rpcwhitelist): skip if refused."""
    try:
        return await backend.call(method, *params)
    except (BackendProtocolError, NotFound) as exc:
        pytest.skip(f"{method} not available on this node: {exc}")


async def test_tip_and_blocks(node: BitcoindBackend) -> None:
    assert isinstance(node, ChainBackend)
    tip = await node.tip()
    assert await node.block_hash(tip.height) == tip.hash
    block = await node.block(tip.hash)
    assert (block.hash, block.height) == (tip.hash, tip.height)
    if tip.height > 0:
        assert block.prev_hash == await node.block_hash(tip.height - 1)
    coinbase = block.txs[0]
    assert coinbase.is_coinbase and coinbase.inputs == ()
    assert not any(t.is_coinbase for t in block.txs[1:])
    assert all(type(o.value_sat) is int and o.value_sat >= 0
               for t in block.txs for o in t.outputs)
    with pytest.raises(NotFound):
        await node.block_hash(tip.height + 1000)
    with pytest.raises(NotFound):
        await node.block(UNKNOWN)
    genesis = await node.block(await node.block_hash(0))
    assert (genesis.height, genesis.prev_hash) == (0, "")


async def test_transactions_and_outputs(node: BitcoindBackend) -> None:
    tip = await node.tip()
    coinbase = (await node.block(tip.hash)).txs[0]
    # gettxout needs no txindex; an immature coinbase output is certainly unspent.
    assert await node.output(coinbase.txid, 0) == coinbase.outputs[0]
    assert await node.output(coinbase.txid, 0, include_mempool=False) == coinbase.outputs[0]
    assert await node.transaction(UNKNOWN) is None
    assert await node.output(UNKNOWN, 0) is None

    status = await node.transaction(coinbase.txid)
    if await has_txindex(node):
        assert status is not None
        assert status.block_hash == tip.hash and status.block_height == tip.height
        assert status.confirmations >= 1 and status.tx == coinbase

    for txid in list(await node.mempool_txids())[:5]:
        assert len(txid) == 64 and int(txid, 16) >= 0
        status = await node.transaction(txid)
        if status is not None:  # it may have been mined or evicted meanwhile
            assert status.txid == txid


async def test_fee_estimate(node: BitcoindBackend) -> None:
    for target in (1, 6, 144):
        rate = await node.feerate_sat_vb(target)
        assert rate is None or (type(rate) is int and rate >= 1)


async def test_broadcast_of_missing_inputs(node: BitcoindBackend) -> None:
    # One input spending UNKNOWN:0, one 10_000-sat P2WPKH output: well-formed, unfunded.
    raw = ("02000000" "01" + bytes.fromhex(UNKNOWN)[::-1].hex() + "00000000" "00"
           "fdffffff" "01" + (10_000).to_bytes(8, "little").hex() + "160014" + "11" * 20
           + "00000000")
    with pytest.raises(TxRejected):
        await node.broadcast(raw)


async def test_mining_and_a_wallet_payment(node: BitcoindBackend) -> None:
    address = str(await optional(node, "getnewaddress"))
    spk = bytes.fromhex(str((await node.call("validateaddress", address))["scriptPubKey"]))
    before = await node.tip()
    mined_hashes = await optional(node, "generatetoaddress", 1, address)
    assert isinstance(mined_hashes, list) and len(mined_hashes) == 1
    block_hash = str(mined_hashes[0])
    tip = await node.tip()
    assert (tip.height, tip.hash) == (before.height + 1, block_hash)
    block = await node.block(block_hash)
    assert block.prev_hash == before.hash
    assert block.txs[0].outputs[0].script_pubkey == spk

    balance = Decimal(str(await node.call("getbalance")))
    if balance < Decimal("0.01"):
        await node.call("generatetoaddress", 101, address)  # mature one coinbase
    # An explicit fee_rate (sat/vB): regtest nodes rarely have estimates or -fallbackfee.
    txid = str(await node.call("sendtoaddress", address, Decimal("0.00123457"), "", "", False,
                               True, None, "unset", None, 2))
    assert txid in await node.mempool_txids()
    status = await node.transaction(txid)
    assert status is not None and status.confirmations == 0 and status.block_hash is None
    vout = next(i for i, o in enumerate(status.tx.outputs)
                if o.script_pubkey == spk and o.value_sat == 123_457)
    assert await node.output(txid, vout, include_mempool=False) is None
    [mined] = await node.call("generatetoaddress", 1, address)
    assert txid not in await node.mempool_txids()
    assert txid in [t.txid for t in (await node.block(mined)).txs]
    coin = status.tx.outputs[vout]
    assert await node.output(txid, vout, include_mempool=False) == coin
    if await has_txindex(node):
        status = await node.transaction(txid)
        assert status is not None
        assert (status.confirmations, status.block_hash) == (1, mined)
        assert status.tx.outputs[vout] == coin
