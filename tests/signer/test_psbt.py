"""make_psbt: the web side builds what the signer accepts, from the descriptors only."""

from __future__ import annotations

import dataclasses

import pytest
from embit.psbt import PSBT

from satvault.signer import HotSigner
from satvault.signing import (
    PsbtInput,
    PsbtOutput,
    accounts_from_descriptors,
    make_psbt,
)
from satvault.signing.errors import PsbtBuildError
from satvault.signing.psbt import RBF_SEQUENCE
from tests.signer.conftest import NETWORK, PAY_A, Builder


def test_fields(builder: Builder, signer: HotSigner) -> None:
    payout = builder.payout()
    psbt = PSBT.from_string(payout.psbt)
    tx = psbt.tx
    assert tx.version == 2 and tx.locktime == 0
    assert [v.sequence for v in tx.vin] == [RBF_SEQUENCE] * 3
    assert psbt.fee() == 1_000
    fp = signer.fingerprint
    expected_paths = [[84, 1, 1, 0, 0], [84, 1, 1, 0, 7], [84, 1, 1, 1, 2]]
    for scope, utxo, path in zip(psbt.inputs, payout.inputs, expected_paths, strict=True):
        assert bytes(scope.witness_utxo.script_pubkey.data) == utxo.script_pubkey
        assert scope.witness_utxo.value == utxo.value_sat
        ((_pub, der),) = scope.bip32_derivations.items()
        assert der.fingerprint == fp
        assert der.derivation == [p + (0x80000000 if k < 3 else 0) for k, p in enumerate(path)]
    assert [len(o.bip32_derivations) for o in psbt.outputs] == [0, 1, 0]
    ((_, der),) = psbt.outputs[1].bip32_derivations.items()
    assert der.derivation[3:] == [1, 3]


def test_accounts_from_descriptors_checks_the_layout(signer: HotSigner) -> None:
    d = signer.descriptors()
    accounts = accounts_from_descriptors(d, NETWORK)
    assert accounts["deposit"].fingerprint == signer.fingerprint
    with pytest.raises(PsbtBuildError, match="path"):
        accounts_from_descriptors({"deposit": d["hot"], "hot": d["hot"]}, NETWORK)
    with pytest.raises(PsbtBuildError, match="different seeds"):
        other = HotSigner(bytes(64), NETWORK).descriptors()
        accounts_from_descriptors({"deposit": d["deposit"], "hot": other["hot"]}, NETWORK)
    with pytest.raises(PsbtBuildError):
        accounts_from_descriptors(d, "mainnet")  # tpub on mainnet
    bare = d["deposit"].split("]")[1].split("/")[0]
    with pytest.raises(PsbtBuildError, match="origin"):
        accounts_from_descriptors({"deposit": f"wpkh({bare})", "hot": d["hot"]}, NETWORK)


def test_build_errors(builder: Builder) -> None:
    acc = builder.accounts
    good = builder.utxo("deposit", 0, 10_000)

    def build(inputs: list[PsbtInput], outputs: list[PsbtOutput]) -> str:
        return make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=acc)

    with pytest.raises(PsbtBuildError, match="not paid to deposit 0/1"):
        build([dataclasses.replace(good, index=1)], [PsbtOutput(PAY_A, 5_000)])
    with pytest.raises(PsbtBuildError, match="twice"):
        build([good, good], [PsbtOutput(PAY_A, 5_000)])
    with pytest.raises(PsbtBuildError, match="exceed"):
        build([good], [PsbtOutput(PAY_A, 10_001)])
    with pytest.raises(PsbtBuildError, match="change"):
        build([good], [PsbtOutput(PAY_A, 5_000, change_index=0)])
    with pytest.raises(PsbtBuildError, match="whole number"):
        build([good], [PsbtOutput(PAY_A, 0)])
    with pytest.raises(PsbtBuildError):
        build([], [PsbtOutput(PAY_A, 1)])


def test_every_input_needs_its_previous_transaction(builder: Builder) -> None:
    """The signer refuses an input without ``non_witness_utxo``: the builder does too, and
    checks the one it is given against the coin as the books record it."""
    good = builder.utxo("deposit", 0, 10_000, vout=2)
    other = builder.utxo("deposit", 0, 10_000, txid="other")

    def build(coin: PsbtInput) -> str:
        return make_psbt([coin], [PsbtOutput(PAY_A, 5_000)], network=NETWORK,
                         fingerprint_and_paths=builder.accounts)

    scope = PSBT.from_string(build(good)).inputs[0]
    assert bytes(scope.non_witness_utxo.txid()).hex() == good.txid
    assert scope.non_witness_utxo.serialize() == good.prev_tx
    with pytest.raises(PsbtBuildError, match="no previous transaction"):
        build(dataclasses.replace(good, prev_tx=None))
    with pytest.raises(PsbtBuildError, match=f"given is {other.txid}"):
        build(dataclasses.replace(good, prev_tx=other.prev_tx))
    with pytest.raises(PsbtBuildError, match="not the coin recorded"):
        build(dataclasses.replace(good, value_sat=10_001))
    with pytest.raises(PsbtBuildError, match="not the coin recorded"):
        build(dataclasses.replace(good, vout=1))
    with pytest.raises(PsbtBuildError, match="not readable"):
        build(dataclasses.replace(good, prev_tx=b"\x02\x00"))
