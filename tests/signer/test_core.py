"""HotSigner: descriptors the web side can use, payouts it signs, payouts it refuses."""

from __future__ import annotations

import itertools
import json
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import coincurve
import pytest
from embit import bip32, bip39
from embit.networks import NETWORKS
from embit.psbt import PSBT, DerivationPath
from embit.script import Script, Witness
from embit.transaction import SIGHASH, Transaction, TransactionInput, TransactionOutput

from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.keys import hash160
from satvault.signer import HotSigner
from satvault.signing import Payment, PsbtOutput, make_psbt
from satvault.signing.errors import (
    BadChange,
    FeeTooHigh,
    InvalidPsbt,
    InvalidRequest,
    MissingPayment,
    NegativeFee,
    OutputMismatch,
    SigningRefused,
    UnknownInput,
)
from satvault.signing.psbt import RBF_SEQUENCE, PsbtInput
from tests.signer.conftest import (
    MNEMONIC,
    NETWORK,
    PAY_A,
    PAY_B,
    SEED,
    Builder,
    Payout,
    prev_tx,
)

LOOSE = {"max_fee_sat": 100_000, "max_feerate_sat_vb": 1_000}
_CURVE_HALF_ORDER = 0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0


# ------------------------------------------------------------------ independent verification
def assert_fully_signed(raw_hex: str, spent: list[PsbtInput]) -> Transaction:
    """Check every input's witness against BIP143 without the signer's code: the sighash
    from embit's Transaction, the ECDSA check from libsecp256k1 via coincurve."""
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    assert len(tx.vin) == len(spent)
    for i, (vin, utxo) in enumerate(zip(tx.vin, spent, strict=True)):
        assert bytes(vin.txid).hex() == utxo.txid and vin.vout == utxo.vout
        sig, pub = vin.witness.items
        assert b"\x00\x14" + hash160(pub) == utxo.script_pubkey, f"input {i} key"
        assert sig[-1] == SIGHASH.ALL
        script_code = Script(b"\x76\xa9\x14" + hash160(pub) + b"\x88\xac")
        digest = tx.sighash_segwit(i, script_code, utxo.value_sat, sighash=SIGHASH.ALL)
        assert coincurve.PublicKey(pub).verify(sig[:-1], digest, hasher=None), f"input {i}"
        assert _der_s(sig[:-1]) <= _CURVE_HALF_ORDER, f"input {i} high S"  # standardness
    return tx


def _der_s(der: bytes) -> int:
    assert der[0] == 0x30 and der[2] == 0x02
    r_len = der[3]
    assert der[4 + r_len] == 0x02
    s_len = der[5 + r_len]
    return int.from_bytes(der[6 + r_len:6 + r_len + s_len], "big")


def vsize_of(raw_hex: str) -> int:
    tx = Transaction.parse(bytes.fromhex(raw_hex))
    total = len(tx.serialize())
    for vin in tx.vin:
        vin.witness = Witness([])
    base = len(tx.serialize())
    return -(-(3 * base + total) // 4)


def audit_lines(path: Path) -> list[dict[str, Any]]:
    """The signature lines of the audit log (refusals have their own lines)."""
    return [line for line in all_audit_lines(path) if line["event"] == "sign_payout"]


def all_audit_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


# ------------------------------------------------------------------ descriptors
def test_descriptors_parse_and_derive_spendable_addresses(signer: HotSigner,
                                                          builder: Builder) -> None:
    d = signer.descriptors()
    fp = signer.fingerprint.hex()
    assert d["deposit"].startswith(f"wpkh([{fp}/84h/1h/0h]tpub")
    assert d["hot"].startswith(f"wpkh([{fp}/84h/1h/1h]tpub")
    assert "/<0;1>/*)#" in d["deposit"]
    for name in ("deposit", "hot"):
        wallet = parse_wallet(d[name], NETWORK)
        assert wallet.descriptor() == d[name]
    # Addresses derived by the watch-only side are the ones the signer spends: an
    # independent derivation from the mnemonic (embit's HDKey) gives the same scripts.
    root = bip32.HDKey.from_seed(bip39.mnemonic_to_seed(MNEMONIC),
                                 version=NETWORKS["regtest"]["xprv"])
    for name, account in (("deposit", 0), ("hot", 1)):
        wallet = parse_wallet(d[name], NETWORK)
        for chain, index in ((0, 0), (0, 5), (1, 2)):
            key = root.derive(f"m/84h/1h/{account}h/{chain}/{index}")
            assert wallet.derive(index, change=chain).script_pubkey == \
                b"\x00\x14" + hash160(key.sec())
    # and the signer signs for them
    payout = builder.payout()
    signed = signer.sign_payout(payout.psbt, payout.payments, **LOOSE)
    assert_fully_signed(signed.raw_hex, payout.inputs)


def test_mainnet_descriptors_use_coin_type_0() -> None:
    d = HotSigner(SEED, "mainnet").descriptors()
    assert "/84h/0h/0h]xpub" in d["deposit"] and "/84h/0h/1h]xpub" in d["hot"]
    parse_wallet(d["hot"], "mainnet")


def test_repr_has_no_key_material(signer: HotSigner) -> None:
    assert "prv" not in repr(signer) and SEED.hex() not in repr(signer)


# ------------------------------------------------------------------ signing
def test_sign_payout(signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    payout = builder.payout(fee=1_234)
    signed = signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=1_234,
                                max_feerate_sat_vb=10)
    assert signed.fee_sat == 1_234
    tx = assert_fully_signed(signed.raw_hex, payout.inputs)
    assert bytes(tx.txid()).hex() == signed.txid
    assert tx.version == 2 and tx.locktime == 0
    assert all(vin.sequence == RBF_SEQUENCE for vin in tx.vin)
    assert [(bytes(o.script_pubkey.data), o.value) for o in tx.vout] == \
        [(o.script_pubkey, o.amount_sat) for o in payout.outputs]
    # the returned PSBT is finalized and extracts to the same transaction
    final = PSBT.from_string(signed.psbt_b64)
    assert all(inp.final_scriptwitness for inp in final.inputs)
    assert all(not inp.partial_sigs and not inp.bip32_derivations for inp in final.inputs)
    lines = audit_lines(audit_path)
    assert stat.S_IMODE(audit_path.stat().st_mode) == 0o600
    assert len(lines) == 1 and lines[0]["txid"] == signed.txid
    assert lines[0]["fee_sat"] == 1_234
    assert [o["kind"] for o in lines[0]["outputs"]] == ["payment", "change", "payment"]
    assert [i["path"] for i in lines[0]["inputs"]] == ["m/84'/1'/1'/0/0", "m/84'/1'/1'/0/7",
                                                      "m/84'/1'/1'/1/2"]
    assert lines[0]["leaving_sat"] == 90_000 + 1_234
    tx.vout[0].value += 1  # the check above is not vacuous: any change breaks a signature
    with pytest.raises(AssertionError, match="input 0"):
        assert_fully_signed(tx.serialize().hex(), payout.inputs)


def test_payments_in_any_order_and_duplicates(signer: HotSigner, builder: Builder) -> None:
    inputs = [builder.utxo("hot", 1, 50_000)]
    outputs = [PsbtOutput(PAY_A, 10_000), PsbtOutput(PAY_A, 10_000), PsbtOutput(PAY_B, 20_000)]
    psbt = make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=builder.accounts)
    payments = [Payment(PAY_B, 20_000, "b"), Payment(PAY_A, 10_000, "a1"),
                Payment(PAY_A, 10_000, "a2")]
    signed = signer.sign_payout(psbt, payments, **LOOSE)
    assert signed.fee_sat == 10_000
    with pytest.raises(MissingPayment, match="a3"):
        signer.sign_payout(psbt, [*payments, Payment(PAY_A, 10_000, "a3")], **LOOSE)


def test_sweep_to_own_change_without_payments(signer: HotSigner, builder: Builder) -> None:
    inputs = [builder.utxo("deposit", i, 10_000) for i in range(3)]
    psbt = make_psbt(inputs, [builder.change(0, 29_000)], network=NETWORK,
                     fingerprint_and_paths=builder.accounts)
    signed = signer.sign_payout(psbt, [], **LOOSE)
    assert_fully_signed(signed.raw_hex, inputs)


def test_replacement_with_higher_fee_signs(signer: HotSigner, builder: Builder,
                                           audit_path: Path) -> None:
    first = builder.payout(fee=500)
    bumped = builder.payout(fee=3_000)
    a = signer.sign_payout(first.psbt, first.payments, max_fee_sat=5_000, max_feerate_sat_vb=20)
    b = signer.sign_payout(bumped.psbt, bumped.payments, max_fee_sat=5_000,
                           max_feerate_sat_vb=20)
    assert a.txid != b.txid and (a.fee_sat, b.fee_sat) == (500, 3_000)
    ta = assert_fully_signed(a.raw_hex, first.inputs)
    tb = assert_fully_signed(b.raw_hex, bumped.inputs)
    # the replacement spends the same outpoints (BIP125 conflicts) and signals RBF
    assert [(bytes(v.txid), v.vout) for v in ta.vin] == [(bytes(v.txid), v.vout) for v in tb.vin]
    assert all(v.sequence == RBF_SEQUENCE for v in tb.vin)
    assert [line["txid"] for line in audit_lines(audit_path)] == [a.txid, b.txid]
    # but the bump must still respect the limits it is given
    with pytest.raises(FeeTooHigh):
        signer.sign_payout(bumped.psbt, bumped.payments, max_fee_sat=2_999,
                           max_feerate_sat_vb=20)


# ------------------------------------------------------------------ refusals
def _edit(psbt_b64: str, change: Callable[[PSBT], None]) -> str:
    psbt = PSBT.from_string(psbt_b64)
    change(psbt)
    return str(psbt.to_base64())


def _set_value(n: int, value: int) -> Callable[[PSBT], None]:
    def go(p: PSBT) -> None:
        p.outputs[n].value = value
    return go


def _set_script(n: int, spk: bytes) -> Callable[[PSBT], None]:
    def go(p: PSBT) -> None:
        p.outputs[n].script_pubkey = Script(spk)
    return go


def _add_output(spk: bytes, value: int) -> Callable[[PSBT], None]:
    def go(p: PSBT) -> None:
        p.outputs[1].value -= value  # take it out of the change: the fee is unchanged
        extra = PSBT(Transaction(vin=[], vout=[TransactionOutput(value, Script(spk))]),
                     unknown={})
        p.outputs.append(extra.outputs[0])
    return go


def _drop_output(n: int) -> Callable[[PSBT], None]:
    def go(p: PSBT) -> None:
        del p.outputs[n]
    return go


def _drop_change_derivation(p: PSBT) -> None:
    p.outputs[1].bip32_derivations.clear()


def _change_on_receive_chain(p: PSBT) -> None:
    ((pub, der),) = p.outputs[1].bip32_derivations.items()
    p.outputs[1].bip32_derivations[pub] = DerivationPath(der.fingerprint,
                                                         [*der.derivation[:3], 0, 3])


STRANGER = bytes.fromhex("0014") + b"\xee" * 20

REFUSALS: list[tuple[str, Callable[[PSBT], None], type[SigningRefused], str]] = [
    ("altered amount", _set_value(0, 60_001), OutputMismatch, "wd_a"),
    ("lowered amount", _set_value(2, 29_000), OutputMismatch, "wd_b"),
    ("extra unknown output", _add_output(STRANGER, 5_000), OutputMismatch,
     "neither a requested payment"),
    ("swapped destination", _set_script(0, STRANGER), OutputMismatch,
     "neither a requested payment"),
    ("missing payment", _drop_output(2), MissingPayment, "wd_b"),
    ("change to a foreign script", _set_script(1, STRANGER), BadChange, "change"),
    ("change without proof", _drop_change_derivation, OutputMismatch,
     "neither a requested payment"),
    ("change claiming the receive chain", _change_on_receive_chain, BadChange,
     "hot wallet's receive address at m/84'/1'/1'/0/3"),
]


@pytest.mark.parametrize(("edit", "error", "words"), [r[1:] for r in REFUSALS],
                         ids=[r[0] for r in REFUSALS])
def test_output_refusals(signer: HotSigner, builder: Builder, audit_path: Path,
                         edit: Callable[[PSBT], None], error: type[SigningRefused],
                         words: str) -> None:
    payout = builder.payout()
    with pytest.raises(error, match=words):
        signer.sign_payout(_edit(payout.psbt, edit), payout.payments, **LOOSE)
    assert audit_lines(audit_path) == []


def test_missing_payment_request(signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    payout = builder.payout()
    with pytest.raises(MissingPayment, match="wd_c"):
        signer.sign_payout(payout.psbt, [*payout.payments, Payment(STRANGER, 1_000, "wd_c")],
                           **LOOSE)
    with pytest.raises(OutputMismatch):  # a payment the request does not contain
        signer.sign_payout(payout.psbt, payout.payments[:1], **LOOSE)
    assert audit_lines(audit_path) == []


def test_input_from_another_seed(signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    other = Builder(HotSigner(bytes(64), NETWORK).descriptors())
    psbt = make_psbt([other.utxo("deposit", 0, 100_000)], [PsbtOutput(PAY_A, 90_000)],
                     network=NETWORK, fingerprint_and_paths=other.accounts)
    with pytest.raises(UnknownInput, match="no BIP32 derivation from this signer"):
        signer.sign_payout(psbt, [Payment(PAY_A, 90_000, "x")], **LOOSE)
    assert audit_lines(audit_path) == []


def test_input_with_our_path_but_a_foreign_script(signer: HotSigner, builder: Builder,
                                                  audit_path: Path) -> None:
    payout = builder.payout()

    def foreign_utxo(p: PSBT) -> None:  # a stranger's coin, its previous transaction real
        prev = prev_tx(STRANGER, 40_000, salt=b"stranger")
        p.inputs[1].txid, p.inputs[1].vout = prev.txid(), 0
        p.inputs[1].non_witness_utxo = prev
        p.inputs[1].witness_utxo = TransactionOutput(40_000, Script(STRANGER))

    with pytest.raises(UnknownInput, match="input 1"):
        signer.sign_payout(_edit(payout.psbt, foreign_utxo), payout.payments, **LOOSE)

    def outside_accounts(p: PSBT) -> None:
        ((pub, der),) = p.inputs[0].bip32_derivations.items()
        path = [der.derivation[0], der.derivation[1], 0x80000002, 0, 0]
        p.inputs[0].bip32_derivations[pub] = DerivationPath(der.fingerprint, path)

    with pytest.raises(UnknownInput, match="neither the deposit nor the hot account"):
        signer.sign_payout(_edit(payout.psbt, outside_accounts), payout.payments, **LOOSE)

    def no_utxo(p: PSBT) -> None:
        p.inputs[2].witness_utxo = None

    with pytest.raises(UnknownInput, match="witness_utxo"):
        signer.sign_payout(_edit(payout.psbt, no_utxo), payout.payments, **LOOSE)

    def wrong_prev_tx(p: PSBT) -> None:
        p.inputs[0].non_witness_utxo = Transaction(
            vin=[TransactionInput(b"\x33" * 32, 0)],
            vout=[TransactionOutput(100_000, p.inputs[0].witness_utxo.script_pubkey)])

    with pytest.raises(InvalidPsbt, match="non_witness_utxo"):
        signer.sign_payout(_edit(payout.psbt, wrong_prev_tx), payout.payments, **LOOSE)

    def sighash_none(p: PSBT) -> None:
        p.inputs[0].sighash_type = SIGHASH.NONE

    with pytest.raises(InvalidPsbt, match="sighash"):
        signer.sign_payout(_edit(payout.psbt, sighash_none), payout.payments, **LOOSE)
    assert audit_lines(audit_path) == []


def test_fee_limits(signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    payout = builder.payout(fee=5_000)  # about 20 sat/vB on ~250 vB
    with pytest.raises(FeeTooHigh, match="5000 sat, above the limit of 4999"):
        signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=4_999,
                           max_feerate_sat_vb=1_000)
    with pytest.raises(FeeTooHigh, match="sat/vB"):
        signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=5_000,
                           max_feerate_sat_vb=10)
    assert audit_lines(audit_path) == []
    signed = signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=5_000,
                                max_feerate_sat_vb=30)
    vsize = vsize_of(signed.raw_hex)
    assert signed.fee_sat == 5_000 and 10 * vsize < 5_000 <= 30 * vsize
    assert audit_lines(audit_path)[0]["vsize"] == vsize


def test_negative_fee(signer: HotSigner, builder: Builder) -> None:
    payout = builder.payout()
    with pytest.raises(NegativeFee):
        signer.sign_payout(_edit(payout.psbt, _set_value(1, 10**6)), payout.payments, **LOOSE)


def test_bad_requests(signer: HotSigner, builder: Builder) -> None:
    payout = builder.payout()
    with pytest.raises(InvalidPsbt):
        signer.sign_payout("not a psbt", payout.payments, **LOOSE)
    with pytest.raises(InvalidRequest):
        signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=-1, max_feerate_sat_vb=1)
    with pytest.raises(InvalidRequest):
        signer.sign_payout(payout.psbt, [Payment(PAY_A, 0, "zero")], **LOOSE)


def test_audit_log_has_no_key_material(signer: HotSigner, builder: Builder,
                                       audit_path: Path) -> None:
    payouts: list[Payout] = [builder.payout(fee=700), builder.payout(fee=900, change_index=4)]
    for p in payouts:
        signer.sign_payout(p.psbt, p.payments, **LOOSE)
    with pytest.raises(OutputMismatch):  # a refusal line is written too
        signer.sign_payout(payouts[0].psbt, payouts[0].payments[:1], **LOOSE)
    text = audit_path.read_text()
    assert len(text.splitlines()) == 3
    root = bip32.HDKey.from_seed(SEED, version=NETWORKS["regtest"]["xprv"])
    secrets = [SEED.hex(), MNEMONIC, root.to_base58()]
    for account in (0, 1):
        secrets.append(root.derive(f"m/84h/1h/{account}h").to_base58())
    for path in ("m/84h/1h/1h/0/0", "m/84h/1h/1h/0/7", "m/84h/1h/1h/1/2"):
        key = root.derive(path).key
        secrets += [key.wif(NETWORKS["regtest"]), key.secret.hex()]
    for secret in secrets:
        assert secret not in text
    assert "prv" not in text
    words = MNEMONIC.split()
    assert not any(f"{a} {b}" in text for a, b in itertools.pairwise(words))


def test_matching_non_witness_utxo_is_accepted(signer: HotSigner, builder: Builder) -> None:
    spk = builder.hot.derive(4).script_pubkey
    prev = Transaction(vin=[TransactionInput(b"\x44" * 32, 0)],
                       vout=[TransactionOutput(1, Script(STRANGER)),
                             TransactionOutput(70_000, Script(spk))])
    utxo = PsbtInput(bytes(prev.txid()).hex(), 1, 70_000, spk, "hot", 0, 4, prev.serialize())
    psbt = make_psbt([utxo], [PsbtOutput(PAY_A, 69_000)], network=NETWORK,
                     fingerprint_and_paths=builder.accounts)
    assert PSBT.from_string(psbt).inputs[0].non_witness_utxo.serialize() == prev.serialize()
    signed = signer.sign_payout(psbt, [Payment(PAY_A, 69_000, "x")], **LOOSE)
    assert_fully_signed(signed.raw_hex, [utxo])
