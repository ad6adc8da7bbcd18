"""The previous transaction (``non_witness_utxo``): the signer takes an input's amount only
from it, so a coordinator that lies about amounts over two signing rounds (the segwit fee
attack, CVE-2020-14199) gets nothing signed."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import TransactionOutput

from satvault.signer import HotSigner
from satvault.signing import PsbtOutput, make_psbt
from satvault.signing.errors import InvalidPsbt
from tests.signer.conftest import NETWORK, Builder, prev_tx
from tests.signer.test_core import LOOSE, all_audit_lines, assert_fully_signed, audit_lines


def _edit(psbt_b64: str, change: Callable[[PSBT], None]) -> str:
    psbt = PSBT.from_string(psbt_b64)
    change(psbt)
    return str(psbt.to_base64())


def _claim(n: int, value: int, *, keep_prev_tx: bool = True) -> Callable[[PSBT], None]:
    """The coordinator's lie: input ``n`` is worth ``value``."""
    def go(p: PSBT) -> None:
        p.inputs[n].witness_utxo = TransactionOutput(value, p.inputs[n].witness_utxo.script_pubkey)
        if not keep_prev_tx:
            for scope in p.inputs:
                scope.non_witness_utxo = None
    return go


def _refusals(path: Path) -> list[dict[str, object]]:
    return [line for line in all_audit_lines(path) if line["event"] == "refused"]


def test_the_builder_attaches_every_previous_transaction(signer: HotSigner,
                                                         builder: Builder) -> None:
    payout = builder.payout()
    psbt = PSBT.from_string(payout.psbt)
    for scope, utxo in zip(psbt.inputs, payout.inputs, strict=True):
        prev = scope.non_witness_utxo
        assert prev is not None and bytes(prev.txid()).hex() == utxo.txid
        assert prev.vout[utxo.vout].value == utxo.value_sat
    signed = signer.sign_payout(payout.psbt, payout.payments, **LOOSE)
    assert_fully_signed(signed.raw_hex, payout.inputs)


def test_an_input_without_its_previous_transaction_is_refused(
        signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    payout = builder.payout()

    def strip(p: PSBT) -> None:
        p.inputs[1].non_witness_utxo = None

    with pytest.raises(InvalidPsbt, match=r"input 1 .* no non_witness_utxo"):
        signer.sign_payout(_edit(payout.psbt, strip), payout.payments, **LOOSE)
    assert audit_lines(audit_path) == []
    (refusal,) = _refusals(audit_path)
    assert refusal["error_type"] == "InvalidPsbt" and "input 1" in str(refusal["reason"])


def test_a_previous_transaction_of_another_outpoint_is_refused(
        signer: HotSigner, builder: Builder, audit_path: Path) -> None:
    payout = builder.payout()
    other = prev_tx(payout.inputs[0].script_pubkey, payout.inputs[0].value_sat, salt=b"other")

    def swap(p: PSBT) -> None:
        p.inputs[0].non_witness_utxo = other

    with pytest.raises(InvalidPsbt, match=rf"input 0 .*{bytes(other.txid()).hex()}, not"):
        signer.sign_payout(_edit(payout.psbt, swap), payout.payments, **LOOSE)
    assert audit_lines(audit_path) == [] and len(_refusals(audit_path)) == 1


@pytest.mark.parametrize("claimed", [100_000 + 3_000, 100_000 - 1])
def test_an_amount_other_than_the_previous_transactions_is_refused(
        signer: HotSigner, builder: Builder, audit_path: Path, claimed: int) -> None:
    """Input 0 is worth 100,000 sat in its previous transaction; the PSBT claims otherwise
    (more: the fee looks larger, still within the limits; less: it looks smaller)."""
    payout = builder.payout()
    with pytest.raises(InvalidPsbt, match=rf"claims {claimed} sat, .* says 100000 sat"):
        signer.sign_payout(_edit(payout.psbt, _claim(0, claimed)), payout.payments, **LOOSE)
    assert audit_lines(audit_path) == []
    (refusal,) = _refusals(audit_path)
    assert refusal["error_type"] == "InvalidPsbt"


def test_a_script_other_than_the_previous_transactions_is_refused(
        signer: HotSigner, builder: Builder) -> None:
    payout = builder.payout()
    other_key = builder.hot.derive(9).script_pubkey

    def lie(p: PSBT) -> None:
        p.inputs[0].witness_utxo = TransactionOutput(100_000, Script(other_key))

    with pytest.raises(InvalidPsbt, match="script is not the previous transaction's"):
        signer.sign_payout(_edit(payout.psbt, lie), payout.payments, **LOOSE)


@pytest.mark.parametrize("keep_prev_tx", [False, True], ids=["stripped", "attached"])
def test_the_segwit_fee_attack_gets_no_signature(signer: HotSigner, builder: Builder,
                                                 audit_path: Path, keep_prev_tx: bool) -> None:
    """Inputs worth 100,000 + 40,000 sat pay 60,000 + 30,000 and a change 20,000 sat short:
    the real fee is 21,000 sat. Round one claims input 1 is worth 20,000 less, round two
    input 0: each shows a fee of 1,000 sat, and each would give one valid signature (the
    input whose amount is true). Together they make a valid transaction paying 21,000 sat
    to miners. Neither round is signed, whether the coordinator strips the previous
    transactions or leaves them in."""
    honest = builder.payout(fee=1_000)
    outputs = [o if o.change_index is None else PsbtOutput(o.script_pubkey, o.amount_sat
                                                           - 20_000, o.change_index)
               for o in honest.outputs]
    psbt = make_psbt(honest.inputs, outputs, network=NETWORK,
                     fingerprint_and_paths=builder.accounts)
    assert PSBT.from_string(psbt).fee() == 21_000
    rounds = [_edit(psbt, _claim(1, 40_000 - 20_000, keep_prev_tx=keep_prev_tx)),
              _edit(psbt, _claim(0, 100_000 - 20_000, keep_prev_tx=keep_prev_tx))]
    for lie in rounds:
        assert PSBT.from_string(lie).fee() == 1_000  # what a trusting signer would see
        with pytest.raises(InvalidPsbt, match="non_witness_utxo"):
            signer.sign_payout(lie, honest.payments, max_fee_sat=1_000,
                               max_feerate_sat_vb=1_000)
    assert audit_lines(audit_path) == []
    assert [r["error_type"] for r in _refusals(audit_path)] == ["InvalidPsbt"] * 2


def test_a_previous_transaction_with_witnesses_is_accepted(signer: HotSigner,
                                                           builder: Builder) -> None:
    """The builder strips witnesses (they are not in the txid); a PSBT from elsewhere may
    keep them."""
    from embit.script import Witness

    payout = builder.payout()

    def witnessed(p: PSBT) -> None:
        prev = p.inputs[0].non_witness_utxo
        prev.vin[0].witness = Witness([b"\x01" * 72, b"\x02" * 33])
        assert PSBT.from_string(payout.psbt).inputs[0].non_witness_utxo.serialize() \
            != prev.serialize()

    signed = signer.sign_payout(_edit(payout.psbt, witnessed), payout.payments, **LOOSE)
    assert_fully_signed(signed.raw_hex, payout.inputs)
