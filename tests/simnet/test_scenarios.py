"""What the platform will live through: payments confirming, fee bumps, double spends,
reorgs, a node that is still starting or goes away, a restart from disk."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path

import httpx
import pytest

from satvault.simnet import Chain, SimnetServer
from tests.simnet import txbuild
from tests.simnet.conftest import Rpc, RpcFailure
from tests.waiting import wait_until

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"
OTHER = txbuild.p2tr(txbuild.key(9)).address
LEGACY = "mkHS9ne12qx9pS9VojpwU5xtRd4T7X7ZUt"
P2SH = "2MzQwSSnBHWHqSAqtTVQ6v47XtaisrJa1Vc"


def outputs_to(rpc: Rpc, txid: str, address: str) -> list[dict]:
    tx = rpc("getrawtransaction", txid, True)
    return [o for o in tx["vout"] if o["scriptPubKey"].get("address") == address]


def test_pay_mempool_mine_confirmations(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 25_000)
    assert rpc("getrawmempool") == [txid]
    [h1] = rpc("simnet_mine", 1)
    assert rpc("getrawmempool") == []
    assert rpc("getrawtransaction", txid, True)["blockhash"] == h1
    rpc("generatetoaddress", 5, OTHER)
    assert rpc("getrawtransaction", txid, True)["confirmations"] == 6
    assert rpc("getblockcount") == 116
    e = rpc.fails("generatetoaddress", 1, "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4")
    assert (e.code, e.message) == (-5, "Error: Invalid address")


@pytest.mark.parametrize("address", [DEST, OTHER, LEGACY, P2SH])
def test_pay_every_address_type(rpc: Rpc, address: str) -> None:
    txid = rpc("simnet_pay", address, 10_000)
    [out] = outputs_to(rpc, txid, address)
    assert out["value"] == Decimal("0.00010000")


def test_bip21_amounts_are_exact(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", f"bitcoin:{DEST}?amount=1.00000001&label=Order%2042")
    assert f'"value":1.00000001,"n":{outputs_to(rpc, txid, DEST)[0]["n"]}' in rpc.text(
        "getrawtransaction", txid, True)
    txid = rpc("simnet_pay", f"BITCOIN:{DEST.upper()}?amount=0.001", 294)  # explicit wins
    assert outputs_to(rpc, txid, DEST)[0]["value"] == Decimal("0.00000294")
    assert rpc.fails("simnet_pay", f"bitcoin:{DEST}?amount=0.000000001").code == -3
    assert rpc.fails("simnet_pay", f"bitcoin:{DEST}?amount=1&req-x=1").code == -5
    assert rpc.fails("simnet_pay", DEST).code == -3  # no amount anywhere


def test_paymany_one_transaction(rpc: Rpc) -> None:
    txid = rpc("simnet_paymany", [[DEST, 1_000], [OTHER, 2_000], [LEGACY, 3_000]])
    tx = rpc("getrawtransaction", txid, True)
    assert len(tx["vout"]) == 4  # three payments and change
    assert rpc("simnet_paymany", {DEST: 5_000, P2SH: 6_000}) != txid


def test_faucet_payment_pays_the_requested_feerate(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 30_000, 7)
    entry = rpc("getmempoolentry", txid)
    assert entry["fees"]["base"] * 10**8 == 7 * entry["vsize"]


def test_rbf_replace_removes_the_original(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 40_000)
    old = rpc("getmempoolentry", txid)
    new = rpc("simnet_replace", txid, 20)
    assert rpc("getrawmempool") == [new]
    assert rpc("getmempoolentry", new)["fees"]["base"] > old["fees"]["base"]
    assert outputs_to(rpc, new, DEST)[0]["value"] == Decimal("0.0004")
    redirected = rpc("simnet_replace", new, None, [[OTHER, 40_000]])
    assert rpc("getrawmempool") == [redirected] and outputs_to(rpc, redirected, DEST) == []
    [ours] = outputs_to(rpc, redirected, OTHER)
    assert ours["value"] == Decimal("0.0004")
    e = rpc.fails("simnet_replace", txid, 30)
    assert e.code == -5


def test_double_spend(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 50_000)
    spent = {(i["txid"], i["vout"]) for i in rpc("getrawtransaction", txid, True)["vin"]}
    conflict = rpc("simnet_doublespend", txid)
    assert rpc("getrawmempool") == [conflict]
    ds = rpc("getrawtransaction", conflict, True)
    assert {(i["txid"], i["vout"]) for i in ds["vin"]} == spent
    assert outputs_to(rpc, conflict, DEST) == []
    rpc("simnet_mine", 1)
    assert rpc.fails("getrawtransaction", txid).code == -5


def test_reorg_changes_the_tip_and_drops_a_payment(rpc: Rpc) -> None:
    kept = rpc("simnet_pay", DEST, 60_000)
    rpc("simnet_mine", 1)
    dropped = rpc("simnet_pay", OTHER, 70_000)
    rpc("simnet_mine", 1)
    waiting = rpc("simnet_pay", LEGACY, 80_000)
    old_tip, old_parent = rpc("getbestblockhash"), rpc("getblockhash", 111)
    new = rpc("simnet_reorg", 2, [dropped])
    assert len(new) == 3 and rpc("getblockcount") == 113
    assert rpc("getblockhash", 111) == new[0] != old_parent
    assert rpc("getblockhash", 112) == new[1] != old_tip
    assert rpc("getblockhash", 110) == rpc("getblockheader", new[0])["previousblockhash"]
    assert rpc("getrawtransaction", kept, True)["blockhash"] == new[0]
    # Core's transaction index keeps a dropped transaction, in the stale block, unconfirmed.
    gone = rpc("getrawtransaction", dropped, True)
    assert gone["blockhash"] == old_tip and gone["confirmations"] == 0
    assert "blocktime" not in gone
    assert rpc("getrawmempool") == [waiting]
    stale = rpc("getblock", old_tip)
    assert stale["confirmations"] == -1 and "nextblockhash" not in stale
    tips = rpc("getchaintips")
    assert {"height": 112, "hash": old_tip, "branchlen": 2, "status": "valid-fork"} in tips
    assert rpc.fails("simnet_reorg", 200).code == -8


def test_reorg_without_drops_reconfirms_everything(chain: Chain) -> None:
    a = chain.pay(DEST, 10_000)
    chain.mine(1)
    b = chain.pay(DEST, 20_000)
    chain.mine(1)
    before = chain.tip.hash
    chain.reorg(2)
    assert chain.tip.hash != before and chain.height == 113
    for txid in (a, b):
        hit = chain.find_tx(txid)
        assert hit is not None and hit[1] is not None and hit[1].height == 111


def _warming(rpc: Rpc) -> bool:
    try:
        rpc("getblockcount")
    except RpcFailure as e:
        if e.code == -28:
            return True
        raise
    return False


def test_warmup(node: SimnetServer, rpc: Rpc) -> None:
    assert rpc("simnet_warmup", 30) is None
    e = rpc.fails("getblockcount")
    assert (e.code, e.message, e.status) == (-28, "Loading block index…", 500)
    assert rpc.fails("simnet_mine", 1).code == -28
    node.set_warmup(0)  # loading finished
    assert rpc("getblockcount") == 110
    rpc("simnet_warmup", Decimal("0.05"))
    wait_until(lambda: not _warming(rpc), timeout=5)  # and a warm-up ends by itself
    assert rpc("getblockcount") == 110


def test_setchain_plays_a_node_of_another_network(rpc: Rpc) -> None:
    """``getblockchaininfo`` names the chain as Core does; ``simnet_setchain`` makes the node
    claim another one (its blocks stay regtest's), for the checks that compare it with the
    configured network."""
    assert rpc("getblockchaininfo")["chain"] == "regtest"
    for name in ("main", "test", "testnet4", "signet"):
        assert rpc("simnet_setchain", name) == {"chain": name}
        assert rpc("getblockchaininfo")["chain"] == name
    e = rpc.fails("simnet_setchain", "mainnet")  # Core's names only
    assert e.code == -8 and "main, test, testnet4, signet, regtest" in e.message
    assert rpc("getblockchaininfo")["chain"] == "signet"
    rpc("simnet_setchain", "regtest")
    assert rpc("getblockchaininfo")["chain"] == "regtest"


def test_offline_refuses_connections_and_recovers(node: SimnetServer, rpc: Rpc) -> None:
    assert rpc("getblockcount") == 110  # a pooled keep-alive connection exists now
    port = node.port
    node.set_offline(True)
    with pytest.raises(httpx.TransportError):
        rpc("getblockcount")
    with pytest.raises(httpx.ConnectError):
        httpx.post(node.base_url, content="{}", auth=("simnet", "simnet"))
    node.chain.mine(1)  # the chain lives on while the node is unreachable
    node.set_offline(False)
    assert node.port == port
    assert rpc("getblockcount") == 111


def test_save_load_round_trip(chain: Chain, tmp_path: Path) -> None:
    chain.pay(DEST, 10_000)
    chain.mine(2)
    chain.reorg(1)
    waiting = chain.pay(OTHER, 20_000)
    chain.set_feerate(5)
    path = tmp_path / "chain.json"
    chain.save(path)
    loaded = Chain.load(path)
    assert loaded.tip.hash == chain.tip.hash and loaded.height == chain.height
    assert [e.txid for e in loaded.mempool] == [waiting]
    assert loaded.feerate_sat_kvb == 5000
    assert loaded.mine(1) == chain.mine(1)  # same chain going forward, too


def test_server_persists_after_each_change(tmp_path: Path) -> None:
    path = tmp_path / "simnet.json"
    with SimnetServer(data_path=path) as node:
        rpc = Rpc(node)
        rpc("simnet_pay", DEST, 10_000)
        rpc("simnet_mine", 1)
        best = rpc("getbestblockhash")
        rpc.close()
    assert Chain.load(path).tip.hash == best


def test_determinism() -> None:
    a, b = Chain(), Chain()
    assert a.tip.hash == b.tip.hash
    assert a.pay(DEST, 12_345) == b.pay(DEST, 12_345)
    assert Chain(b"another seed").tip.hash != a.tip.hash


def test_concurrent_clients(node: SimnetServer) -> None:
    def worker(n: int) -> list[str]:
        rpc = Rpc(node)
        try:
            return [rpc("simnet_pay", DEST, 10_000 + n * 100 + i) for i in range(10)]
        finally:
            rpc.close()

    with ThreadPoolExecutor(4) as pool:
        txids = [t for batch in pool.map(worker, range(4)) for t in batch]
    assert len(set(txids)) == 40 and len(node.chain.mempool) == 40
    node.chain.mine(1)
    assert len(node.chain.tip.txs) == 41
