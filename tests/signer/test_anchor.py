"""The signer and the audit anchor: a sweep may carry exactly one zero-value ``SVA1``
``OP_RETURN`` (the audit chain's head); any other ``OP_RETURN``, an anchor worth anything, a
second anchor, an anchor outside a sweep or a zero-value output to a stranger is refused,
nothing is signed, and the refusal is written to the audit log."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from embit.psbt import PSBT
from embit.script import Script

from satvault.signer import HotSigner
from satvault.signing import Payment, PsbtOutput, make_psbt
from satvault.signing.anchor import anchor_script, find_anchor, parse_anchor
from satvault.signing.errors import OutputMismatch, PsbtBuildError
from tests.signer.conftest import NETWORK, PAY_A, Builder, hot_receive_derivation
from tests.signer.test_core import assert_fully_signed, audit_lines
from tests.signer.test_defence import LOOSE, refusals

HEAD = "ab" * 32
ANCHOR = anchor_script(42, HEAD)


def anchored_sweep(builder: Builder, *outputs: PsbtOutput, fee: int = 800) -> str:
    """Two deposit coins into hot receive 5, plus ``outputs`` (0 sat each)."""
    inputs = [builder.utxo("deposit", i, 30_000) for i in range(2)]
    hot = PsbtOutput(builder.hot.derive(5).script_pubkey, 60_000 - fee)
    psbt = make_psbt(inputs, [hot, *outputs], network=NETWORK,
                     fingerprint_and_paths=builder.accounts)
    p = PSBT.from_string(psbt)
    p.outputs[0].bip32_derivations.update(hot_receive_derivation(builder, 5))
    return str(p.to_base64())


def craft(psbt: str, n: int, *, script: bytes | None = None, value: int | None = None) -> str:
    """Rewrite output ``n`` behind the builder's back (what a compromised caller could send)."""
    p = PSBT.from_string(psbt)
    for out in (p.tx.vout[n], p.outputs[n]):
        if script is not None:
            out.script_pubkey = Script(script)
        if value is not None:
            out.value = value
    return str(p.to_base64())


def test_the_anchor_format():
    assert len(ANCHOR) == 46 and ANCHOR[:6] == b"\x6a\x2cSVA1"
    assert parse_anchor(ANCHOR) == (42, HEAD)
    assert find_anchor([(b"\x00\x14" + bytes(20), 1000), (ANCHOR, 0)]) == (42, HEAD)
    assert find_anchor([(ANCHOR, 1)]) is None  # worth something: not an anchor
    for other in (b"\x6a\x04SVA1", b"\x6a\x2cSVA2" + ANCHOR[6:], ANCHOR + b"\x00",
                  b"\x6a\x2cSVA1" + bytes(8) + bytes(32)):  # seq 0 is no row
        assert parse_anchor(other) is None
    with pytest.raises(ValueError):
        anchor_script(0, HEAD)
    with pytest.raises(ValueError):
        anchor_script(1, "AB" * 32)


def test_a_sweep_with_one_anchor_is_signed(signer: HotSigner, builder: Builder,
                                           audit_path: Path):
    psbt = anchored_sweep(builder, PsbtOutput(ANCHOR, 0))
    signed = signer.sign_payout(psbt, [], **LOOSE)
    tx = assert_fully_signed(signed.raw_hex, [builder.utxo("deposit", i, 30_000)
                                              for i in range(2)])
    assert find_anchor((bytes(o.script_pubkey.data), o.value) for o in tx.vout) == (42, HEAD)
    (line,) = audit_lines(audit_path)
    assert [o["kind"] for o in line["outputs"]] == ["internal", "anchor"]
    assert line["outputs"][1]["amount_sat"] == 0
    assert line["leaving_sat"] == signed.fee_sat == 800  # the anchor moves nothing


def test_the_builder_refuses_a_valued_anchor(builder: Builder):
    with pytest.raises(PsbtBuildError, match="worth 0 sat"):
        anchored_sweep(builder, PsbtOutput(ANCHOR, 1_000))


@pytest.mark.parametrize(("make", "why"), [
    # another payload behind OP_RETURN, of the same length or another
    (lambda b: craft(anchored_sweep(b, PsbtOutput(ANCHOR, 0)), 1,
                     script=b"\x6a\x2cEVIL" + ANCHOR[6:]), "not the audit anchor"),
    (lambda b: craft(anchored_sweep(b, PsbtOutput(ANCHOR, 0)), 1,
                     script=b"\x6a\x20" + bytes(32)), "not the audit anchor"),
    (lambda b: craft(anchored_sweep(b, PsbtOutput(ANCHOR, 0)), 1,
                     script=ANCHOR + b"\x51"), "not the audit anchor"),
    # the anchor itself, but with value (the hot output pays for it)
    (lambda b: craft(craft(anchored_sweep(b, PsbtOutput(ANCHOR, 0)), 1, value=5_000), 0,
                     value=60_000 - 800 - 5_000), "worth 5000 sat"),
    # two anchors
    (lambda b: anchored_sweep(b, PsbtOutput(ANCHOR, 0), PsbtOutput(anchor_script(43, HEAD), 0)),
     "at most one"),
    # a zero-value output to someone else's script
    (lambda b: craft(anchored_sweep(b, PsbtOutput(ANCHOR, 0)), 1, script=PAY_A),
     "neither a requested payment"),
])
def test_other_data_outputs_are_refused_and_logged(signer: HotSigner, builder: Builder,
                                                   audit_path: Path,
                                                   make: Callable[[Builder], str], why: str):
    psbt = make(builder)
    with pytest.raises(OutputMismatch, match=why):
        signer.sign_payout(psbt, [], **LOOSE)
    assert audit_lines(audit_path) == []  # nothing signed
    (refusal,) = refusals(audit_path)
    assert refusal["error_type"] == "OutputMismatch" and why in refusal["reason"]
    assert refusal["txid"] == PSBT.from_string(psbt).tx.txid().hex()


def test_an_anchor_only_rides_in_a_sweep(signer: HotSigner, builder: Builder,
                                         audit_path: Path):
    hot = builder.utxo("hot", 3, 100_000)
    payout = make_psbt([hot], [PsbtOutput(PAY_A, 50_000), builder.change(3, 49_000),
                               PsbtOutput(ANCHOR, 0)],
                       network=NETWORK, fingerprint_and_paths=builder.accounts)
    with pytest.raises(OutputMismatch, match="only a sweep"):
        signer.sign_payout(payout, [Payment(PAY_A, 50_000, "wd_1")], **LOOSE)
    # hot coins moved between the platform's own addresses are no sweep either
    shuffle = make_psbt([hot], [builder.change(4, 99_000), PsbtOutput(ANCHOR, 0)],
                        network=NETWORK, fingerprint_and_paths=builder.accounts)
    with pytest.raises(OutputMismatch, match="only a sweep"):
        signer.sign_payout(shuffle, [], **LOOSE)
    assert audit_lines(audit_path) == []
    assert [r["error_type"] for r in refusals(audit_path)] == ["OutputMismatch"] * 2
