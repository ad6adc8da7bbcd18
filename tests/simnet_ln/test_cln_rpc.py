"""Core Lightning's RPC socket, driven by pyln-client's ``LightningRpc`` as a CLN adapter
would."""

from __future__ import annotations

import hashlib
import json
import socket
import threading

import bolt11
import pytest
from pyln.client import LightningRpc, RpcError

from satvault.simnet.ln import ClnRpcServer, LnNetwork, PaymentStatus
from tests.waiting import wait_until


@pytest.fixture
def rpc(cln: ClnRpcServer) -> LightningRpc:
    return LightningRpc(str(cln.path))


def _code(err: pytest.ExceptionInfo[RpcError]) -> int:
    return int(err.value.error["code"])


def test_getinfo_and_listfunds(rpc: LightningRpc, net: LnNetwork) -> None:
    info = rpc.getinfo()
    assert info["id"] == net.pubkey("platform") and info["network"] == "regtest"
    assert info["blockheight"] == 200 and info["num_active_channels"] == 2
    funds = rpc.listfunds()
    assert funds["outputs"][0]["amount_msat"] == 100_000_000 * 1000
    assert funds["outputs"][0]["address"].startswith("bcrt1q")
    ours = sorted(c["our_amount_msat"] for c in funds["channels"])
    assert ours == [2_000_000_000, 10_000_000_000]
    assert all(c["state"] == "CHANNELD_NORMAL" for c in funds["channels"])


def test_invoice_and_waitanyinvoice(rpc: LightningRpc, net: LnNetwork) -> None:
    inv = rpc.invoice(100_000, "order-1", "coffee", expiry=900)
    assert set(inv) >= {"payment_hash", "expires_at", "bolt11", "payment_secret",
                        "created_index"}
    decoded = bolt11.decode(inv["bolt11"])
    assert decoded.signature is not None and decoded.signature.verify(net.pubkey("platform"))
    assert decoded.min_final_cltv_expiry == 18 and decoded.expiry == 900
    with pytest.raises(RpcError) as err:
        rpc.waitanyinvoice(0, 0)
    assert _code(err) == 904

    waiter: dict[str, object] = {}
    thread = threading.Thread(target=lambda: waiter.update(rpc.waitanyinvoice()))
    thread.start()
    wait_until(lambda: net.invoice_subscribers("platform") == 1)  # the call is waiting
    net.pay("customer2", inv["bolt11"])
    thread.join(3)
    assert waiter["label"] == "order-1" and waiter["status"] == "paid"
    assert waiter["pay_index"] == 1 and waiter["amount_received_msat"] == 100_000
    preimage = str(waiter["payment_preimage"])
    assert hashlib.sha256(bytes.fromhex(preimage)).hexdigest() == inv["payment_hash"]
    # catch-up: everything paid after lastpay_index, one at a time
    second = rpc.invoice("any", "tip", "tips")
    net.pay("customer1", second["bolt11"], amount_msat=777)
    again = rpc.waitanyinvoice(lastpay_index=0)
    assert again["label"] == "order-1"
    nxt = rpc.waitanyinvoice(lastpay_index=1, timeout=1)
    assert (nxt["label"], nxt["pay_index"], nxt["amount_received_msat"]) == ("tip", 2, 777)
    assert "amount_msat" not in nxt


def test_listinvoices_delinvoice(rpc: LightningRpc, net: LnNetwork) -> None:
    inv = rpc.invoice("1500sat", "a", "first", deschashonly=True,
                      fallbacks=["bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080"])
    decoded = rpc.decode(inv["bolt11"])
    assert decoded["amount_msat"] == 1_500_000
    assert decoded["description_hash"] == hashlib.sha256(b"first").hexdigest()
    assert decoded["fallbacks"][0]["type"] == "P2WPKH"
    listed = rpc.listinvoices(payment_hash=inv["payment_hash"])["invoices"]
    assert [(i["label"], i["status"]) for i in listed] == [("a", "unpaid")]
    with pytest.raises(RpcError) as err:
        rpc.invoice(1000, "a", "dup")
    assert _code(err) == 900
    with pytest.raises(RpcError) as err:
        rpc.delinvoice("a", "paid")
    assert _code(err) == 906 and err.value.error["data"]["current_status"] == "unpaid"
    assert rpc.delinvoice("a", "unpaid")["label"] == "a"
    with pytest.raises(RpcError) as err:
        rpc.delinvoice("a", "unpaid")
    assert _code(err) == 905
    assert rpc.listinvoices()["invoices"] == []
    assert net.pay("customer1", inv["bolt11"]).status is PaymentStatus.FAILED
    short = rpc.invoice(1000, "b", "soon", expiry=60)
    net.advance_time(61)
    assert rpc.listinvoices(label="b")["invoices"][0]["status"] == "expired"
    assert short["expires_at"] < net.now()


def test_pay_xpay_listpays(rpc: LightningRpc, net: LnNetwork) -> None:
    inv = net.create_invoice("customer2", 50_000, memo="refund")
    paid = rpc.pay(inv.bolt11)
    assert paid["status"] == "complete" and paid["amount_sent_msat"] == 51_050
    assert paid["payment_preimage"] == inv.preimage
    assert rpc.pay(inv.bolt11)["payment_preimage"] == inv.preimage  # a repeat: the result
    with pytest.raises(RpcError) as err:
        rpc.xpay(invstring=inv.bolt11)
    assert _code(err) == 219
    pays = rpc.listpays(payment_hash=inv.payment_hash)["pays"]
    assert pays[0]["status"] == "complete" and pays[0]["preimage"] == inv.preimage
    sends = rpc.listsendpays(payment_hash=inv.payment_hash)["payments"]
    assert sends[0]["status"] == "complete" and sends[0]["amount_sent_msat"] == 51_050

    other = net.create_invoice("customer1", 9_000)
    got = rpc.xpay(invstring=other.bolt11)
    assert (got["amount_msat"], got["amount_sent_msat"], got["successful_parts"]) == (
        9_000, 9_000, 1)
    anyamount = net.create_invoice("customer1", None)
    with pytest.raises(RpcError) as err:
        rpc.pay(anyamount.bolt11)
    assert _code(err) == -32602 and "amount_msat parameter required" in err.value.error["message"]
    with pytest.raises(RpcError) as err:
        rpc.pay(other.bolt11, amount_msat=1)
    assert "unnecessary" in err.value.error["message"]
    assert rpc.pay(anyamount.bolt11, amount_msat="2sat")["amount_msat"] == 2000


@pytest.mark.parametrize(("reason", "code"), [("no_route", 205), ("insufficient_balance", 205),
                                              ("incorrect_payment_details", 203),
                                              ("timeout", 210)])
def test_pay_failures(rpc: LightningRpc, net: LnNetwork, reason: str, code: int) -> None:
    inv = net.create_invoice("customer2", 10_000)
    net.script_next("platform", f"fail:{reason}")
    with pytest.raises(RpcError) as err:
        rpc.pay(inv.bolt11)
    assert _code(err) == code
    assert rpc.listpays(bolt11=inv.bolt11)["pays"][0]["status"] == "failed"


def test_expired_and_in_flight(rpc: LightningRpc, net: LnNetwork) -> None:
    old = net.create_invoice("customer2", 10_000, expiry=60)
    net.advance_time(61)
    with pytest.raises(RpcError) as err:
        rpc.pay(old.bolt11)
    assert _code(err) == 207
    inv = net.create_invoice("customer2", 10_000)
    net.script(inv.payment_hash, "in_flight")
    result: dict[str, object] = {}
    thread = threading.Thread(target=lambda: result.update(rpc.pay(inv.bolt11)))
    thread.start()
    wait_until(lambda: net.payment("platform", inv.payment_hash) is not None)
    assert rpc.listpays(payment_hash=inv.payment_hash)["pays"][0]["status"] == "pending"
    with pytest.raises(RpcError) as err:
        rpc.pay(inv.bolt11)
    assert _code(err) == 200
    net.resolve(inv.payment_hash, "succeed")
    thread.join(2)
    assert result["status"] == "complete"


def test_hang_then_succeed_never_answers(cln: ClnRpcServer, net: LnNetwork) -> None:
    inv = net.create_invoice("customer2", 10_000)
    net.script_next("platform", "hang_then_succeed", delay=0.8)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(str(cln.path))
        sock.settimeout(0.5)
        sock.sendall(json.dumps({"jsonrpc": "2.0", "id": 1, "method": "pay",
                                 "params": {"bolt11": inv.bolt11}}).encode())
        with pytest.raises(TimeoutError):
            sock.recv(1024)
    final = net.wait_payment("platform", inv.payment_hash, timeout=3)
    assert final.status is PaymentStatus.SUCCEEDED
    rpc = LightningRpc(str(cln.path))
    assert rpc.listpays(payment_hash=inv.payment_hash)["pays"][0]["status"] == "complete"


def test_protocol_errors_and_offline(rpc: LightningRpc, cln: ClnRpcServer) -> None:
    with pytest.raises(RpcError) as err:
        rpc.call("nosuchmethod")
    assert _code(err) == -32601
    with pytest.raises(RpcError) as err:
        rpc.call("invoice", {"amount_msat": "lots", "label": "x", "description": "y"})
    assert _code(err) == -32602
    assert rpc.call("getinfo", [])["network"] == "regtest"  # positional params
    cln.set_offline(True)
    with pytest.raises(OSError):
        rpc.getinfo()
    cln.set_offline(False)
    assert rpc.getinfo()["alias"] == "platform"
