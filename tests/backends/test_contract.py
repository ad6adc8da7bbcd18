"""The ``ChainBackend`` contract: every adapter, over a fresh simnet chain, must give the same
answers — ``bitcoind`` through the simnet's JSON-RPC server, ``esplora`` through the fake
Esplora API. A difference between the two is a bug in one of them."""

from __future__ import annotations

import contextlib
from decimal import Decimal

import httpx
import pytest
from embit.transaction import Transaction, TransactionInput, TransactionOutput

from satvault.backends._rawtx import checked_raw_tx
from satvault.backends.base import (
    ChainBackend,
    ChainSyncSource,
    ChainTip,
    OutPoint,
    TxIndex,
    TxIndexSource,
    TxOut,
)
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.errors import (
    BackendProtocolError,
    NotFound,
    TxAlreadyInChain,
    TxMissingInputs,
    TxRejected,
)
from satvault.simnet import GENESIS_HASH
from tests.backends.conftest import ALICE, BOB, Node, spend

UNKNOWN = "ab" * 32


async def rebroadcast_is_harmless(backend: ChainBackend, raw: str, txid: str) -> None:
    """Sending a transaction again answers its txid, or TxAlreadyInChain once it confirmed."""
    with contextlib.suppress(TxAlreadyInChain):
        assert await backend.broadcast(raw) == txid


async def test_is_a_chain_backend(node: Node) -> None:
    assert isinstance(node.backend, ChainBackend)
    assert node.backend.name == node.kind


async def test_sync_info_reports_the_tip_and_its_times(node: Node) -> None:
    """What ``satvault doctor`` reads: the tip, the best header where the backend knows it
    (bitcoind; Esplora cannot tell), initial block download, the tip's times."""
    assert isinstance(node.backend, ChainSyncSource)
    sync = await node.backend.sync_info()
    tip = node.chain.tip
    assert (sync.height, sync.tip_time) == (110, tip.header.time)
    assert sync.median_time == node.chain.median_time_past(110)
    assert sync.initial_block_download is False
    assert sync.headers == (110 if node.kind == "bitcoind" else None)


@pytest.mark.parametrize(("chain", "network"), [
    ("regtest", "regtest"), ("main", "mainnet"), ("test", "testnet"), ("testnet4", "testnet"),
    ("signet", "signet")])
async def test_sync_info_names_the_network_in_satvaults_words(node: Node, chain: str,
                                                              network: str) -> None:
    """Which chain the node is on (bitcoind's ``chain``, Esplora's genesis block), named as
    ``SATVAULT_NETWORK`` names it: testnet3 and testnet4 are both ``testnet``."""
    assert isinstance(node.backend, ChainSyncSource)
    assert (await node.backend.sync_info()).network == "regtest"
    node.claim_chain(chain)
    assert (await node.backend.sync_info()).network == network


async def test_tx_index_says_whether_a_confirmed_transaction_is_found_by_its_txid(
        node: Node) -> None:
    """Bitcoin Core's ``getindexinfo`` (the index and its height); an Esplora server indexes
    everything by design. A Core without ``getindexinfo`` (before 0.21) cannot say: None."""
    assert isinstance(node.backend, TxIndexSource)
    if node.kind == "esplora":
        assert await node.backend.tx_index() == TxIndex(True)
        return
    assert await node.backend.tx_index() == TxIndex(True, True, 110)
    rpc = node.backend
    assert isinstance(rpc, BitcoindBackend)
    await rpc.call("simnet_settxindex", False)
    assert await rpc.tx_index() == TxIndex(False, False)
    await rpc.call("simnet_settxindex", True, False)
    assert await rpc.tx_index() == TxIndex(True, False, 0)
    old = BitcoindBackend("http://127.0.0.1:9/", transport=httpx.MockTransport(
        lambda request: httpx.Response(404, json={
            "result": None, "error": {"code": -32601, "message": "Method not found"},
            "id": 1})))
    try:
        assert await old.tx_index() is None
    finally:
        await old.close()


async def test_tip_and_block_hashes_match_the_chain(node: Node) -> None:
    b = node.backend
    assert await b.tip() == ChainTip(110, node.chain.tip.hash)
    assert await b.block_hash(0) == GENESIS_HASH
    for height in (1, 55, 110):
        assert await b.block_hash(height) == node.chain.block_at(height).hash  # type: ignore[union-attr]
    node.mine(2)
    assert await b.tip() == ChainTip(112, node.chain.tip.hash)


async def test_heights_and_hashes_that_do_not_exist(node: Node) -> None:
    with pytest.raises(NotFound):
        await node.backend.block_hash(111)
    with pytest.raises(NotFound):
        await node.backend.block_hash(10_000)
    with pytest.raises(NotFound):
        await node.backend.block(UNKNOWN)


async def test_blocks_link_and_carry_exact_transactions(node: Node) -> None:
    b = node.backend
    txid = node.pay(ALICE.address, 123_456_789)
    [block_hash] = node.mine(1)
    block = await b.block(block_hash)
    sim = node.chain.block(block_hash)
    assert sim is not None
    assert (block.hash, block.height, block.time) == (block_hash, 111, sim.header.time)
    assert block.prev_hash == await b.block_hash(110)
    assert [t.txid for t in block.txs] == [t.txid for t in sim.txs]

    coinbase, payment = block.txs
    assert coinbase.is_coinbase and coinbase.inputs == ()
    assert not payment.is_coinbase and payment.txid == txid
    for ours, theirs in zip(block.txs, sim.txs, strict=True):
        assert ours.outputs == tuple(TxOut(o.value, o.script_pubkey.data)
                                     for o in theirs.tx.vout)
        assert all(type(o.value_sat) is int for o in ours.outputs)
    assert payment.inputs == tuple(OutPoint(t, n) for t, n in sim.txs[1].outpoints())
    assert TxOut(123_456_789, ALICE.spk.data) in payment.outputs
    fee = sum(c.value for c in node.chain.spent_coins(sim)[1]) - sum(
        o.value_sat for o in payment.outputs)
    assert coinbase.outputs[0].value_sat == 50 * 100_000_000 + fee
    assert coinbase.outputs[1] == TxOut(0, sim.txs[0].tx.vout[1].script_pubkey.data)
    assert coinbase.outputs[1].script_pubkey.startswith(bytes.fromhex("6a24aa21a9ed"))


async def test_genesis_block(node: Node) -> None:
    genesis = await node.backend.block(GENESIS_HASH)
    assert (genesis.height, genesis.prev_hash, genesis.time) == (0, "", 1296688602)
    assert len(genesis.txs) == 1 and genesis.txs[0].is_coinbase
    assert genesis.txs[0].outputs[0].value_sat == 50 * 100_000_000


async def test_a_block_with_more_than_one_page_of_transactions(node: Node) -> None:
    txids = [node.pay(BOB.address, 10_000 + i) for i in range(30)]  # Esplora pages by 25
    [block_hash] = node.mine(1)
    block = await node.backend.block(block_hash)
    assert len(block.txs) == 31
    assert [t.txid for t in block.txs[1:]] == txids
    assert [next(o.value_sat for o in t.outputs if o.script_pubkey == BOB.spk.data)
            for t in block.txs[1:]] == [10_000 + i for i in range(30)]


async def test_payment_from_mempool_to_confirmed(node: Node) -> None:
    b = node.backend
    assert await b.mempool_txids() == set()
    txid = node.pay(ALICE.address, 50_000)
    assert await b.mempool_txids() == {txid}

    status = await b.transaction(txid)
    assert status is not None
    assert (status.txid, status.confirmations, status.block_hash, status.block_height) == \
        (txid, 0, None, None)
    assert status.tx.txid == txid and not status.tx.is_coinbase
    assert TxOut(50_000, ALICE.spk.data) in status.tx.outputs

    [block_hash] = node.mine(1)
    assert await b.mempool_txids() == set()
    status = await b.transaction(txid)
    assert status is not None
    assert (status.confirmations, status.block_hash, status.block_height) == \
        (1, block_hash, 111)
    node.mine(2)
    status = await b.transaction(txid)
    assert status is not None and status.confirmations == 3 and status.block_height == 111


async def test_coinbase_transaction(node: Node) -> None:
    block = node.chain.block_at(100)
    assert block is not None
    status = await node.backend.transaction(block.txs[0].txid)
    assert status is not None
    assert (status.confirmations, status.block_hash, status.block_height) == \
        (11, block.hash, 100)
    assert status.tx.is_coinbase and status.tx.inputs == ()


async def test_unknown_transaction_is_none(node: Node) -> None:
    assert await node.backend.transaction(UNKNOWN) is None
    assert await node.backend.output(UNKNOWN, 0) is None


async def test_raw_transaction_from_mempool_and_chain(node: Node) -> None:
    """The bytes a PSBT carries as ``non_witness_utxo``: the node's serialization, found in
    the mempool and, once confirmed, through the transaction index."""
    txid = node.pay(ALICE.address, 50_000)
    hit = node.chain.find_tx(txid)
    assert hit is not None
    assert await node.backend.raw_transaction(txid) == bytes.fromhex(hit[0].hex)
    node.mine(1)
    raw = await node.backend.raw_transaction(txid)
    assert raw == bytes.fromhex(hit[0].hex)
    assert bytes(Transaction.parse(raw).txid()).hex() == txid
    assert await node.backend.raw_transaction(UNKNOWN) is None


def test_raw_transaction_of_another_txid_is_a_protocol_error() -> None:
    raw = Transaction(vin=[TransactionInput(b"\x11" * 32, 0)],
                      vout=[TransactionOutput(1_000, ALICE.spk)])
    good = bytes(raw.txid()).hex()
    assert checked_raw_tx(good, raw.serialize().hex(), "x") == raw.serialize()
    with pytest.raises(BackendProtocolError, match="answered"):
        checked_raw_tx(UNKNOWN, raw.serialize().hex(), "x")
    with pytest.raises(BackendProtocolError):
        checked_raw_tx(good, "zz", "x")


async def test_output_lifecycle_and_include_mempool(node: Node) -> None:
    b = node.backend
    outpoint = node.fund(ALICE, 100_000)
    coin = TxOut(100_000, ALICE.spk.data)
    # Created in the mempool: only visible when the mempool counts.
    assert await b.output(*outpoint) == coin
    assert await b.output(*outpoint, include_mempool=False) is None
    assert await b.output(outpoint[0], 99) is None

    node.mine(1)
    assert await b.output(*outpoint) == coin
    assert await b.output(*outpoint, include_mempool=False) == coin

    txid, raw = spend(outpoint, 100_000, [(BOB, 90_000)])
    assert await b.broadcast(raw) == txid
    assert txid in await b.mempool_txids()
    # Spent in the mempool: gone with the mempool, still in the UTXO set without it.
    assert await b.output(*outpoint) is None
    assert await b.output(*outpoint, include_mempool=False) == coin
    assert await b.output(txid, 0) == TxOut(90_000, BOB.spk.data)
    assert await b.output(txid, 0, include_mempool=False) is None
    await rebroadcast_is_harmless(b, raw, txid)

    node.mine(1)
    assert await b.output(*outpoint) is None
    assert await b.output(*outpoint, include_mempool=False) is None
    assert await b.output(txid, 0, include_mempool=False) == TxOut(90_000, BOB.spk.data)
    await rebroadcast_is_harmless(b, raw, txid)
    status = await b.transaction(txid)
    assert status is not None and status.confirmations == 1
    assert status.tx.inputs == (OutPoint(*outpoint),)


async def test_double_spent_payment_disappears(node: Node) -> None:
    b = node.backend
    txid, vout = node.fund(ALICE, 70_000)
    assert await b.output(txid, vout) == TxOut(70_000, ALICE.spk.data)
    replacement = node.double_spend(txid)
    assert await b.mempool_txids() == {replacement}
    assert await b.transaction(txid) is None
    assert await b.output(txid, vout) is None
    status = await b.transaction(replacement)
    assert status is not None and status.confirmations == 0
    assert all(o.script_pubkey != ALICE.spk.data for o in status.tx.outputs)


async def test_unspendable_output_is_not_an_output(node: Node) -> None:
    """The coinbase's witness commitment (OP_RETURN) never enters the UTXO set."""
    coinbase = node.chain.tip.txs[0]
    assert await node.backend.output(coinbase.txid, 0) is not None
    assert await node.backend.output(coinbase.txid, 1) is None


async def test_broadcast_of_missing_inputs(node: Node) -> None:
    _, raw = spend((UNKNOWN, 0), 100_000, [(BOB, 90_000)])
    with pytest.raises(TxMissingInputs) as info:
        await node.backend.broadcast(raw)
    assert info.value.code == -25
    assert "missingorspent" in info.value.reason


async def test_broadcast_of_a_spent_input(node: Node) -> None:
    outpoint = node.fund(ALICE, 100_000)
    node.mine(1)
    _, first = spend(outpoint, 100_000, [(BOB, 90_000)])
    await node.backend.broadcast(first)
    node.mine(1)
    _, second = spend(outpoint, 100_000, [(BOB, 80_000)])
    with pytest.raises(TxMissingInputs):
        await node.backend.broadcast(second)


async def test_broadcast_of_dust(node: Node) -> None:
    outpoint = node.fund(ALICE, 100_000)
    _, raw = spend(outpoint, 100_000, [(BOB, 90_000), (ALICE, 100)])
    with pytest.raises(TxRejected) as info:
        await node.backend.broadcast(raw)
    assert not isinstance(info.value, TxMissingInputs | TxAlreadyInChain)
    assert (info.value.code, info.value.reason) == (-26, "dust")
    assert await node.backend.mempool_txids() == {outpoint[0]}


async def test_broadcast_of_garbage(node: Node) -> None:
    with pytest.raises(TxRejected) as info:
        await node.backend.broadcast("00ff")
    assert info.value.code == -22


@pytest.mark.parametrize(("sat_vb", "expected"), [(2, 2), (1, 1), (Decimal("12.5"), 13),
                                                  (Decimal("1.001"), 2), (250, 250), (51, 51)])
async def test_feerate_follows_the_chain(node: Node, sat_vb: int | Decimal, expected: int
                                         ) -> None:
    node.set_feerate(sat_vb)
    for target in (1, 2, 6, 144):
        assert await node.backend.feerate_sat_vb(target) == expected


async def test_reorg_changes_the_hashes(node: Node) -> None:
    b = node.backend
    txid = node.pay(ALICE.address, 40_000)
    node.mine(2)
    before = {h: await b.block_hash(h) for h in (109, 110, 111, 112)}
    status = await b.transaction(txid)
    assert status is not None and status.block_hash == before[111]

    new = node.reorg(2)
    assert await b.tip() == ChainTip(113, new[-1])
    assert await b.block_hash(110) == before[110]
    after = {h: await b.block_hash(h) for h in (111, 112, 113)}
    assert after[111] != before[111] and after[112] != before[112]
    assert list(after.values()) == new
    assert (await b.block(after[111])).prev_hash == before[110]
    # The payment was mined again in the first block of the new branch.
    status = await b.transaction(txid)
    assert status is not None
    assert (status.block_hash, status.block_height, status.confirmations) == \
        (after[111], 111, 3)


async def test_reorg_that_drops_a_payment(node: Node) -> None:
    b = node.backend
    txid, vout = node.fund(ALICE, 40_000)
    node.mine(1)
    assert await b.output(txid, vout, include_mempool=False) == TxOut(40_000, ALICE.spk.data)
    node.reorg(1, drop_txids=(txid,))
    assert await b.transaction(txid) is None
    assert await b.output(txid, vout) is None
    assert await b.mempool_txids() == set()
