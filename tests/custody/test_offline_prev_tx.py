"""The offline cosigner takes a cold input's amount only from its previous transaction
(``non_witness_utxo``), as the hot signer does (tests/signer/test_prev_tx.py): a coordinator
that lies about amounts over two signing rounds (the segwit fee attack, CVE-2020-14199) gets
nothing signed, and ``satvault cold sign`` says which input is at fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from embit.psbt import PSBT
from embit.script import Script
from embit.transaction import TransactionOutput
from typer.testing import CliRunner

from satvault.cli import app
from satvault.custody.cold import ColdInput, ColdOutput, ColdWallet, make_cold_psbt
from satvault.custody.errors import ColdPsbtError, SigningRefused
from satvault.custody.offline import sign_cold
from tests.custody.conftest import NETWORK, Cosigner, cold_coin
from tests.signer.test_prev_tx import _claim, _edit  # the same lies, told to the cosigner

runner = CliRunner()
PAY = b"\x00\x14" + bytes(range(20))  # a stranger's P2WPKH


def _spend(wallet: ColdWallet, *, change_sat: int = 79_000) -> tuple[str, list[ColdInput]]:
    """Two cold coins (100,000 and 40,000 sat, the second at output 2 of its transaction)
    paying 60,000 sat out and ``change_sat`` back to cold change: a fee of 1,000 sat as
    given."""
    coins = [cold_coin(wallet, 0, 100_000, salt=b"a"), cold_coin(wallet, 1, 40_000, vout=2,
                                                                  salt=b"b")]
    change = wallet.derive(1, 0)
    psbt = make_cold_psbt(coins, [ColdOutput(PAY, 60_000),
                                  ColdOutput(change.script_pubkey, change_sat,
                                             cold_change_index=0)],
                          wallet=wallet, network=NETWORK)
    return psbt, coins


def cold_sign(tmp: Path, psbt_b64: str, cosigner: Cosigner) -> tuple[int, dict, Path]:
    """``satvault cold sign`` through the command line: exit code, its JSON line, the output
    file it was told to write."""
    src = tmp / "to-sign.psbt"
    src.write_text(psbt_b64)
    out = tmp / f"signed-{cosigner.name}.psbt"
    result = runner.invoke(app, ["cold", "sign", str(src), "--seed-file",
                                 str(cosigner.seed_file(tmp)), "--out", str(out),
                                 "--network", NETWORK])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1]), out


def test_a_cold_psbt_carrying_its_previous_transactions_is_signed(tmp_path, cosigners,
                                                                  cold_wallet):
    psbt, coins = _spend(cold_wallet)
    for scope, coin in zip(PSBT.from_string(psbt).inputs, coins, strict=True):
        assert bytes(scope.non_witness_utxo.txid()).hex() == coin.txid
    code, out, signed = cold_sign(tmp_path, psbt, cosigners[0])
    assert code == 0 and out["ok"] and out["signed_inputs"] == [0, 1], out
    assert out["fee_sat"] == 1_000 and signed.exists()


def test_a_cold_input_without_its_previous_transaction_is_refused(tmp_path, cosigners,
                                                                  cold_wallet):
    """Found in the known gaps: the cosigner checked a non_witness_utxo when the PSBT carried
    one and signed a cold input without it (its amount then only the PSBT's claim)."""
    psbt, coins = _spend(cold_wallet)

    def strip(p: PSBT) -> None:
        p.inputs[1].non_witness_utxo = None

    code, out, signed = cold_sign(tmp_path, _edit(psbt, strip), cosigners[0])
    assert code == 1 and out["ok"] is False, out
    assert out["error"].startswith(f"input 1 ({coins[1].txid}:2) has no non_witness_utxo"), out
    assert "previous transaction" in out["error"] and not signed.exists()
    # The cosigner tool that runs without the rest of satvault refuses it the same way.
    src = tmp_path / "bare.psbt"
    src.write_text(_edit(psbt, strip))
    bare = subprocess.run([sys.executable, "-m", "satvault.custody.offline", "sign", str(src),
                           "--seed-file", str(cosigners[1].seed_file(tmp_path)),
                           "--network", NETWORK], capture_output=True, text=True)
    assert bare.returncode == 1 and "input 1" in json.loads(bare.stdout)["error"]
    assert "no non_witness_utxo" in json.loads(bare.stdout)["error"]


def test_a_previous_transaction_that_does_not_prove_the_input_is_refused(tmp_path, cosigners,
                                                                         cold_wallet):
    psbt, coins = _spend(cold_wallet)
    stranger = PSBT.from_string(make_cold_psbt(
        [cold_coin(cold_wallet, 0, 100_000, salt=b"elsewhere")], [ColdOutput(PAY, 99_000)],
        wallet=cold_wallet, network=NETWORK)).inputs[0].non_witness_utxo

    def another_outpoint(p: PSBT) -> None:  # another coin's transaction
        p.inputs[0].non_witness_utxo = stranger

    def another_script(p: PSBT) -> None:  # a script of the wallet's, not the coin's
        p.inputs[0].witness_utxo = TransactionOutput(
            100_000, Script(cold_wallet.derive(0, 5).script_pubkey))

    cases = [(another_outpoint, rf"input 0 \({coins[0].txid}:0\): non_witness_utxo is the "
                                rf"transaction {bytes(stranger.txid()).hex()}, not"),
             (_claim(0, 100_000 + 3_000), r"input 0 .*claims 103000 sat, .* says 100000 sat"),
             (_claim(1, 40_000 - 1), r"input 1 .*claims 39999 sat, .* says 40000 sat"),
             (another_script, r"input 0 .*script is not the previous transaction's")]
    for edit, reason in cases:
        with pytest.raises(SigningRefused, match=reason):
            sign_cold(_edit(psbt, edit), cosigners[0].root, NETWORK)
    code, out, _ = cold_sign(tmp_path, _edit(psbt, another_script), cosigners[0])
    assert code == 1 and "script is not the previous transaction's" in out["error"], out


@pytest.mark.parametrize("keep_prev_tx", [False, True], ids=["stripped", "attached"])
def test_the_segwit_fee_attack_gets_no_signature_from_a_cosigner(tmp_path, cosigners,
                                                                 cold_wallet, keep_prev_tx):
    """Cold coins worth 100,000 + 40,000 sat pay 60,000 out and a change 20,000 sat short:
    the real fee is 21,000 sat. Round one claims input 1 is worth 20,000 less, round two
    input 0: each shows the cosigner a fee of 1,000 sat, and each would give one valid
    signature per cosigner (the input whose amount is true); m cosigners fooled twice make a
    valid transaction paying 21,000 sat to miners. Neither round is signed, whether the
    coordinator strips the previous transactions or leaves them in."""
    psbt, _ = _spend(cold_wallet, change_sat=79_000 - 20_000)
    assert PSBT.from_string(psbt).fee() == 21_000
    rounds = [_edit(psbt, _claim(1, 40_000 - 20_000, keep_prev_tx=keep_prev_tx)),
              _edit(psbt, _claim(0, 100_000 - 20_000, keep_prev_tx=keep_prev_tx))]
    for cosigner in cosigners[:2]:
        for lie in rounds:
            assert PSBT.from_string(lie).fee() == 1_000  # what a trusting cosigner shows
            code, out, signed = cold_sign(tmp_path, lie, cosigner)
            assert code == 1 and "non_witness_utxo" in out["error"], out
            assert not signed.exists()


def test_satvault_builds_no_cold_spend_without_the_previous_transactions(cold_wallet):
    """What satvault hands the cosigners carries them: a spend's cold input without one is
    refused when the PSBT is built, not by the cosigners later."""
    coin = cold_coin(cold_wallet, 0, 100_000)
    bare = ColdInput(coin.txid, coin.vout, coin.value_sat, coin.chain, coin.index,
                     coin.script_pubkey)
    with pytest.raises(ColdPsbtError, match=rf"input 0 \({coin.txid}:0\) has no previous "
                                            "transaction"):
        make_cold_psbt([bare], [ColdOutput(PAY, 99_000)], wallet=cold_wallet, network=NETWORK)
