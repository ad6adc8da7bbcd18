"""The JSON-RPC surface: result shapes, errors, HTTP behaviour — all over real HTTP."""

from __future__ import annotations

import base64
import json
from decimal import Decimal

import httpx

from satvault.simnet import GENESIS_HASH, SimnetServer
from tests.simnet.conftest import Rpc

DEST = "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"


def test_chain_info_shapes(rpc: Rpc) -> None:
    info = rpc("getblockchaininfo")
    assert info["chain"] == "regtest"
    assert info["blocks"] == info["headers"] == 110 == rpc("getblockcount")
    assert info["bestblockhash"] == rpc("getbestblockhash")
    assert info["initialblockdownload"] is False
    assert info["chainwork"] == f"{222:064x}"
    assert rpc("getblockhash", 0) == GENESIS_HASH
    net = rpc("getnetworkinfo")
    assert net["version"] >= 280000 and net["relayfee"] == Decimal("0.00001000")
    assert isinstance(rpc("uptime"), int)
    assert rpc("getindexinfo") == {"txindex": {"synced": True, "best_block_height": 110}}
    assert rpc("getchaintips") == [{"height": 110, "hash": info["bestblockhash"],
                                    "branchlen": 0, "status": "active"}]


def test_blocks_and_headers(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 50_000)
    [block_hash] = rpc("simnet_mine", 1)
    header = rpc("getblockheader", block_hash)
    assert header["height"] == 111 and header["confirmations"] == 1
    assert header["bits"] == "207fffff" and header["versionHex"] == "20000000"
    assert header["previousblockhash"] == rpc("getblockhash", 110)
    assert "nextblockhash" not in header
    assert header["time"] == 1296688602 + 600 * 111
    assert len(rpc("getblockheader", block_hash, False)) == 160

    raw = rpc("getblock", block_hash, 0)
    assert raw.startswith(rpc("getblockheader", block_hash, False))
    b1 = rpc("getblock", block_hash)
    assert b1["tx"][1] == txid and b1["nTx"] == 2 and b1["weight"] > b1["size"]
    b2 = rpc("getblock", block_hash, 2)
    coinbase, payment = b2["tx"]
    assert "coinbase" in coinbase["vin"][0] and "fee" not in coinbase
    assert coinbase["vout"][1]["scriptPubKey"]["hex"].startswith("6a24aa21a9ed")
    assert payment["txid"] == txid and payment["fee"] > 0
    out = next(o for o in payment["vout"] if o["scriptPubKey"].get("address") == DEST)
    assert out["value"] == Decimal("0.00050000")
    assert out["scriptPubKey"]["type"] == "witness_v0_keyhash"
    assert out["scriptPubKey"]["desc"].startswith(f"addr({DEST})#")
    assert coinbase["vout"][0]["value"] == Decimal(50) + payment["fee"]
    assert rpc("getblockheader", rpc("getblockhash", 110))["nextblockhash"] == block_hash


def test_block_errors(rpc: Rpc) -> None:
    e = rpc.fails("getblockhash", 111)
    assert (e.code, e.message, e.status) == (-8, "Block height out of range", 500)
    e = rpc.fails("getblock", "00" * 32)
    assert (e.code, e.message) == (-5, "Block not found")
    e = rpc.fails("getblockheader", "abc")
    assert (e.code, e.message) == (-8, "blockhash must be of length 64 (not 3, for 'abc')")
    e = rpc.fails("getblockhash", "1")
    assert e.code == -3


def test_mempool_and_transaction_shapes(rpc: Rpc) -> None:
    txid = rpc("simnet_pay", DEST, 70_000)
    assert rpc("getrawmempool") == [txid]
    entry = rpc("getmempoolentry", txid)
    assert rpc("getrawmempool", True) == {txid: entry}
    assert entry["bip125-replaceable"] is True and entry["ancestorcount"] == 1
    assert entry["fees"]["base"] == Decimal(entry["vsize"] * 2) / 10**8  # 2 sat/vB
    assert rpc("getmempoolinfo")["size"] == 1

    tx = rpc("getrawtransaction", txid, True)
    assert "confirmations" not in tx and "blockhash" not in tx
    assert tx["hex"] == rpc("getrawtransaction", txid)
    decoded = rpc("decoderawtransaction", tx["hex"])
    assert decoded["txid"] == txid and "hex" not in decoded
    assert len(tx["vin"][0]["txinwitness"]) == 2 and tx["vin"][0]["sequence"] == 0xFFFFFFFD
    assert rpc("getrawtransaction", txid, 2)["fee"] == entry["fees"]["base"]

    vout = next(o["n"] for o in tx["vout"] if o["scriptPubKey"].get("address") == DEST)
    txout = rpc("gettxout", txid, vout)
    assert txout["confirmations"] == 0 and txout["value"] == Decimal("0.0007")
    assert rpc("gettxout", txid, vout, False) is None
    spent = tx["vin"][0]
    assert rpc("gettxout", spent["txid"], spent["vout"]) is None

    [block_hash] = rpc("simnet_mine", 1)
    tx = rpc("getrawtransaction", txid, 1)
    assert tx["blockhash"] == block_hash and tx["confirmations"] == 1
    assert tx["time"] == tx["blocktime"] == rpc("getblockheader", block_hash)["time"]
    assert rpc("getrawtransaction", txid, True, block_hash)["in_active_chain"] is True
    assert rpc("gettxout", txid, vout)["confirmations"] == 1
    e = rpc.fails("getmempoolentry", txid)
    assert (e.code, e.message) == (-5, "Transaction not in mempool")
    e = rpc.fails("getrawtransaction", "11" * 32)
    assert e.code == -5
    assert e.message == ("No such mempool or blockchain transaction. Use gettransaction for "
                         "wallet transactions.")


def test_estimatesmartfee_follows_setfeerate(rpc: Rpc) -> None:
    assert rpc("estimatesmartfee", 6) == {"feerate": Decimal("0.00002000"), "blocks": 6}
    rpc("simnet_setfeerate", Decimal("12.5"))
    assert '"feerate":0.00012500' in rpc.text("estimatesmartfee", 1)
    assert rpc("estimatesmartfee", 1)["blocks"] == 2
    assert rpc.fails("estimatesmartfee", 0).code == -8


def test_protocol_behaviour(node: SimnetServer, rpc: Rpc) -> None:
    resp = rpc.post({"id": 7, "method": "nosuch", "params": []})
    assert resp.status_code == 404
    assert resp.json() == {"result": None, "error": {"code": -32601,
                                                     "message": "Method not found"}, "id": 7}
    resp = rpc.post({"jsonrpc": "2.0", "id": 7, "method": "nosuch"})
    assert resp.status_code == 200 and "result" not in resp.json()
    assert resp.json()["error"]["code"] == -32601
    resp = rpc.post({"jsonrpc": "2.0", "id": 8, "method": "getblockcount"})
    assert resp.json() == {"jsonrpc": "2.0", "result": 110, "id": 8}
    assert rpc.post({"jsonrpc": "2.0", "method": "getblockcount"}).status_code == 204
    batch = rpc.post([{"id": 1, "method": "getblockcount"}, {"id": 2, "method": "nosuch"}])
    assert batch.status_code == 200
    assert [r["id"] for r in batch.json()] == [1, 2] and batch.json()[1]["error"]
    assert rpc.post("{not json").status_code == 500
    assert rpc.post({"id": 1}).status_code == 400  # missing method
    named = rpc.post({"id": 1, "method": "getblockhash", "params": {"height": 0}})
    assert named.json()["result"] == GENESIS_HASH

    assert rpc.http.get("/").status_code == 405
    wallet = rpc.http.post("/wallet/anything", content=json.dumps(
        {"id": 1, "method": "getblockcount"}))
    assert wallet.json()["result"] == 110
    assert rpc.http.post("/nope", content="{}").status_code == 404
    bad = httpx.post(node.base_url, content="{}", auth=("simnet", "wrong"))
    assert bad.status_code == 401 and bad.headers["www-authenticate"] == 'Basic realm="jsonrpc"'
    assert httpx.post(node.base_url, content="{}").status_code == 401


def test_cookie_auth(tmp_path) -> None:
    cookie = tmp_path / ".cookie"
    with SimnetServer(cookie_path=cookie, password="other") as node:
        user, _, password = cookie.read_text().partition(":")
        assert user == "__cookie__" and len(password) == 64
        header = base64.b64encode(cookie.read_text().encode()).decode()
        resp = httpx.post(node.base_url, headers={"Authorization": f"Basic {header}"},
                          content=json.dumps({"id": 1, "method": "getblockcount"}))
        assert resp.json()["result"] == 110
    assert not cookie.exists()


def test_getindexinfo_and_a_node_without_txindex(rpc: Rpc) -> None:
    """``getindexinfo`` answers as Bitcoin Core (0.21+) does: the transaction index when it
    runs (on by default here), ``{}`` when the node was started without ``-txindex`` (turned
    off with ``simnet_settxindex``); and then, as Core, ``getrawtransaction`` finds a confirmed
    transaction only with its block hash."""
    assert rpc("getindexinfo", "txindex") == {
        "txindex": {"synced": True, "best_block_height": 110}}
    assert rpc("getindexinfo", "coinstatsindex") == {}
    confirmed = rpc("simnet_pay", DEST, 50_000)
    [block_hash] = rpc("simnet_mine", 1)
    waiting = rpc("simnet_pay", DEST, 20_000)

    assert rpc("simnet_settxindex", False) == {"txindex": False, "synced": False}
    assert rpc("getindexinfo") == {} and rpc("getindexinfo", "txindex") == {}
    failure = rpc.fails("getrawtransaction", confirmed)
    assert failure.code == -5 and "Use -txindex or provide a block hash" in failure.message
    assert rpc("getrawtransaction", confirmed, 1, block_hash)["txid"] == confirmed
    assert rpc("getrawtransaction", waiting, 1)["txid"] == waiting  # the mempool's: found

    assert rpc("simnet_settxindex", True, False) == {"txindex": True, "synced": False}
    assert rpc("getindexinfo") == {"txindex": {"synced": False, "best_block_height": 0}}
    assert rpc("simnet_settxindex", True) == {"txindex": True, "synced": True}
    assert rpc("getrawtransaction", confirmed, 1)["blockhash"] == block_hash
