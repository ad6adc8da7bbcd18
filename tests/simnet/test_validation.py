"""Transactions built and signed by the test (embit), submitted over RPC: accepted when
valid, refused with bitcoind's codes and reasons when not."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.simnet import txbuild
from tests.simnet.conftest import Rpc

SINK = txbuild.to_address("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080")
NULLFAIL = ("mandatory-script-verify-flag-failed (Signature must be zero for failed "
            "CHECK(MULTI)SIG operation)")

WALLETS = {
    "p2wpkh": lambda: txbuild.p2wpkh(txbuild.key(1)),
    "p2tr": lambda: txbuild.p2tr(txbuild.key(2)),
    "p2wsh-2of3": lambda: txbuild.wsh_sortedmulti(2, [txbuild.key(i) for i in (3, 4, 5)]),
}
LEGACY_WALLETS = {
    "p2pkh": lambda: txbuild.p2pkh(txbuild.key(6)),
    "p2sh-p2wpkh": lambda: txbuild.p2sh_p2wpkh(txbuild.key(7)),
}
ALL_WALLETS = {**WALLETS, **LEGACY_WALLETS}


def fund(rpc: Rpc, wallet: txbuild.Wallet, amount: int = 100_000, *,
         mine: bool = True) -> tuple[str, int]:
    """Have the faucet pay ``wallet``; return the outpoint."""
    txid = rpc("simnet_pay", wallet.address, amount)
    if mine:
        rpc("simnet_mine", 1)
    tx = rpc("getrawtransaction", txid, True)
    vout = next(o["n"] for o in tx["vout"] if o["scriptPubKey"].get("address") == wallet.address)
    return txid, vout


def spend(wallet: txbuild.Wallet, outpoint: tuple[str, int], value: int, fee: int,
          **kw: Any) -> Any:
    tx = txbuild.unsigned(outpoint, [(SINK, value - fee)])
    return txbuild.sign(tx, wallet, value, **kw)


@pytest.mark.parametrize("kind", list(ALL_WALLETS))
def test_self_signed_spend_is_accepted_and_mined(rpc: Rpc, kind: str) -> None:
    wallet = ALL_WALLETS[kind]()
    outpoint = fund(rpc, wallet)
    tx = spend(wallet, outpoint, 100_000, 1_000)
    [accepted] = rpc("testmempoolaccept", [tx.serialize().hex()])
    assert accepted["allowed"] is True and accepted["txid"] == tx.txid().hex()
    assert accepted["fees"]["base"] == Decimal("0.00001000")
    txid = rpc("sendrawtransaction", tx.serialize().hex())
    assert txid == tx.txid().hex() and txid in rpc("getrawmempool")
    assert rpc("sendrawtransaction", tx.serialize().hex()) == txid  # idempotent
    rpc("simnet_mine", 1)
    assert rpc("getrawtransaction", txid, True)["confirmations"] == 1
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert (e.code, e.message) == (-27, "Transaction outputs already in utxo set")


@pytest.mark.parametrize("kind", list(WALLETS))
def test_broken_signature_is_rejected(rpc: Rpc, kind: str) -> None:
    wallet = WALLETS[kind]()
    outpoint = fund(rpc, wallet)
    tx = spend(wallet, outpoint, 100_000, 1_000)
    items = tx.vin[0].witness.items
    i = 0 if kind != "p2wsh-2of3" else 1
    sig = bytearray(items[i])
    sig[-2 if kind != "p2tr" else -1] ^= 0x01
    items[i] = bytes(sig)
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert e.code == -26
    expected = ("mandatory-script-verify-flag-failed (Invalid Schnorr signature)"
                if kind == "p2tr" else NULLFAIL)
    assert e.message == expected
    [res] = rpc("testmempoolaccept", [tx.serialize().hex()])
    assert res["allowed"] is False and res["reject-reason"] == expected


@pytest.mark.parametrize("kind", list(ALL_WALLETS))
def test_altered_output_invalidates_signature(rpc: Rpc, kind: str) -> None:
    wallet = ALL_WALLETS[kind]()
    outpoint = fund(rpc, wallet)
    tx = spend(wallet, outpoint, 100_000, 1_000)
    tx.vout[0].value -= 1_000
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert e.code == -26 and e.message.startswith("mandatory-script-verify-flag-failed (")


def test_multisig_with_one_signature_is_rejected(rpc: Rpc) -> None:
    wallet = WALLETS["p2wsh-2of3"]()
    outpoint = fund(rpc, wallet)
    tx = spend(wallet, outpoint, 100_000, 1_000, signers=wallet.keys[:1])
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert e.code == -26 and e.message.startswith("mandatory-script-verify-flag-failed (")


def test_unconfirmed_parent_can_be_spent(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet, mine=False)
    tx = spend(wallet, outpoint, 100_000, 1_000)
    txid = rpc("sendrawtransaction", tx.serialize().hex())
    assert rpc("getmempoolentry", txid)["depends"] == [outpoint[0]]


def test_missing_input(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    tx = spend(wallet, ("ab" * 32, 0), 100_000, 1_000)
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert (e.code, e.message) == (-25, "bad-txns-inputs-missingorspent")
    [res] = rpc("testmempoolaccept", [tx.serialize().hex()])
    assert res["reject-reason"] == "missing-inputs"


def test_dust_output(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet)
    tx = txbuild.unsigned(outpoint, [(SINK, 293), (wallet.spk, 98_000)])
    txbuild.sign(tx, wallet, 100_000)
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert (e.code, e.message) == (-26, "dust")
    tx = txbuild.unsigned(outpoint, [(SINK, 294), (wallet.spk, 98_000)])
    txbuild.sign(tx, wallet, 100_000)
    assert rpc("sendrawtransaction", tx.serialize().hex()) == tx.txid().hex()


def test_fee_below_min_relay(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet)
    tx = spend(wallet, outpoint, 100_000, 50)
    e = rpc.fails("sendrawtransaction", tx.serialize().hex())
    assert e.code == -26 and e.message.startswith("min relay fee not met, 50 < ")


def test_max_feerate_is_exact(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet)
    hexed = spend(wallet, outpoint, 100_000, 1_000).serialize().hex()
    # 1,000 sat for 110 vB. The cap is ceil(rate * vsize): 0.00009080 BTC/kvB allows 999 sat
    # (refused), 0.00009090 allows exactly 1,000 (accepted).
    e = rpc.fails("sendrawtransaction", hexed, Decimal("0.00009080"))
    assert (e.code, e.message) == (
        -25, "Fee exceeds maximum configured by user (e.g. -maxtxfee, maxfeerate)")
    assert rpc("testmempoolaccept", [hexed], Decimal("0.00009080"))[0]["reject-reason"] \
        == "max-fee-exceeded"
    assert rpc("sendrawtransaction", hexed, Decimal("0.00009090"))


def test_conflicts_and_full_rbf(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet)
    first = rpc("sendrawtransaction", spend(wallet, outpoint, 100_000, 1_000).serialize().hex())
    same_fee = txbuild.unsigned(outpoint, [(wallet.spk, 99_000)])
    txbuild.sign(same_fee, wallet, 100_000)
    e = rpc.fails("sendrawtransaction", same_fee.serialize().hex())
    assert e.code == -26 and e.message.startswith(
        f"insufficient fee, rejecting replacement {same_fee.txid().hex()}; new feerate")
    assert rpc("getrawmempool") == [first]
    better = spend(wallet, outpoint, 100_000, 3_000)  # no RBF opt-in needed: full RBF
    better.vin[0].sequence = 0xFFFFFFFF
    txbuild.sign(better, wallet, 100_000)
    second = rpc("sendrawtransaction", better.serialize().hex())
    assert rpc("getrawmempool") == [second]
    assert rpc.fails("getmempoolentry", first).code == -5


def test_decode_failures(rpc: Rpc) -> None:
    e = rpc.fails("sendrawtransaction", "00ff")
    assert (e.code, e.message) == (-22, "TX decode failed. Make sure the tx has at least one "
                                        "input.")
    assert rpc.fails("decoderawtransaction", "zz").code == -22
    assert rpc.fails("testmempoolaccept", ["0100"]).code == -22


def test_spending_a_script_simnet_cannot_evaluate_is_refused(rpc: Rpc) -> None:
    wallet = WALLETS["p2wpkh"]()
    outpoint = fund(rpc, wallet)
    anyone = txbuild.Script(b"\x51")  # bare OP_TRUE: relayed as an output, not verifiable
    tx = txbuild.unsigned(outpoint, [(anyone, 50_000), (SINK, 49_000)])
    txbuild.sign(tx, wallet, 100_000)
    parent = rpc("sendrawtransaction", tx.serialize().hex())
    child = txbuild.unsigned((parent, 0), [(SINK, 49_000)])
    e = rpc.fails("sendrawtransaction", child.serialize().hex())
    assert e.code == -26 and e.message.startswith("simnet-unsupported-script (")
