"""A refill through the cold ceremony's commands: export the batch's PSBT, two cosigners
sign it offline, import their files one by one; the complete transaction is handed to
``satvault.custody.refill.accept_signed`` and is valid on simnet."""

from __future__ import annotations

import asyncio
import importlib
import json
import sys
import types
from datetime import UTC, datetime

import pytest
from embit.psbt import PSBT
from typer.testing import CliRunner

from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.custody.cold import ColdInput, ColdOutput, make_cold_psbt, read_psbt
from satvault.kernel.ids import new_id
from satvault.payouts.models import BatchStatus, MoveKind, PayoutBatch
from tests.custody.conftest import NETWORK, make_cosigners
from tests.custody.test_cold import cli_sign, embit_sign, fund, hot_target

runner = CliRunner()
COSIGNERS = make_cosigners(3)


@pytest.fixture
def settings_overrides():
    from satvault.custody.offline import build_descriptor

    return {"cold_descriptor": build_descriptor(2, [c.key_line for c in COSIGNERS], NETWORK)}


@pytest.fixture
def handed_over(monkeypatch) -> list[tuple[str, str, str]]:
    """Where ``accept_signed`` puts what it is given (the lead's function, if present, is
    replaced for this test: it is the contract under test, seen from this side)."""
    calls: list[tuple[str, str, str]] = []

    async def accept_signed(session, batch_id, raw_hex, txid, psbt_b64):
        calls.append((batch_id, raw_hex, txid))

    try:
        module = importlib.import_module("satvault.custody.refill")
        monkeypatch.setattr(module, "accept_signed", accept_signed)
    except ModuleNotFoundError:
        stub = types.ModuleType("satvault.custody.refill")
        stub.accept_signed = accept_signed  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "satvault.custody.refill", stub)
    return calls


async def cli(*args: str):
    # The commands run asyncio.run themselves: off this test's loop.
    result = await asyncio.to_thread(runner.invoke, app, list(args))
    return result, json.loads(result.stdout.strip().splitlines()[-1])


async def test_export_sign_import_until_complete(env, db_url, tmp_path, monkeypatch,
                                                 handed_over):
    from satvault.custody.cold import ColdWallet

    wallet = ColdWallet.from_descriptor(env.settings.cold_descriptor, NETWORK)
    addr = wallet.derive(0, 0)
    txid, vout = await fund(env, addr.address, 400_000)
    hot_spk, hot_origin = await hot_target(env)
    unsigned = make_cold_psbt(
        [ColdInput(txid, vout, 400_000, 0, 0,
                   prev_tx=await env.runtime.backend.raw_transaction(txid))],
        [ColdOutput(hot_spk, 250_000, derivations=(hot_origin,)),
         ColdOutput(wallet.derive(1, 0).script_pubkey, 149_000, cold_change_index=0)],
        wallet=wallet, network=NETWORK)
    now = datetime.now(UTC)
    batch_id = new_id("pob")
    async with env.sessions() as s, s.begin():
        s.add(PayoutBatch(id=batch_id, kind=MoveKind.REFILL, status=BatchStatus.COSIGNING,
                          psbt=unsigned, feerate_sat_vb=2, fee_sat=1_000, created_at=now,
                          updated_at=now))
    for name, value in (("SATVAULT_DATABASE_URL", db_url), ("SATVAULT_NETWORK", NETWORK),
                        ("SATVAULT_HOME", str(tmp_path))):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        r, report = await cli("cold", "export", batch_id, "--out", str(tmp_path / "out"))
        assert r.exit_code == 0, r.output
        exported = (tmp_path / "out" / f"refill-{batch_id}.psbt").read_text().strip()
        assert exported == unsigned and report["qr_parts"] == 1
        a, b, _ = COSIGNERS
        signed_a = tmp_path / "a.psbt"
        signed_a.write_text(cli_sign(tmp_path, exported, a))
        signed_b = tmp_path / "b.psbt"
        signed_b.write_text(embit_sign(exported, b))

        r, report = await cli("cold", "import", str(signed_a), "--batch", batch_id)
        assert r.exit_code == 0, r.output
        assert not report["complete"] and report["inputs"][0]["signatures"] == 1
        async with env.sessions() as s:
            stored = (await s.get(PayoutBatch, batch_id)).partial_psbt
        assert stored and len(read_psbt(stored).inputs[0].partial_sigs) == 1

        # An altered copy (one output changed) is refused; nothing is stored.
        altered = PSBT.from_string(signed_b.read_text())
        altered.outputs[0].value = 260_000
        bad = tmp_path / "altered.psbt"
        bad.write_text(str(altered.to_base64()))
        r, report = await cli("cold", "import", str(bad), "--batch", batch_id)
        assert r.exit_code == 1 and "altered.psbt is not refill" in report["error"]
        # Found from outside: without --batch the refusal asked for --batch, as if the file
        # were fine and only its refill unknown.
        r, report = await cli("cold", "import", str(bad))
        assert r.exit_code == 1 and "altered.psbt" in report["error"], report
        assert "altered copy" in report["error"], report
        async with env.sessions() as s:
            assert (await s.get(PayoutBatch, batch_id)).partial_psbt == stored
        assert handed_over == []

        # The second cosigner, found by transaction (no --batch): complete, handed over.
        r, report = await cli("cold", "import", str(signed_b))
        assert r.exit_code == 0, r.output
        assert report["complete"] and report["batch"] == batch_id
        [(got_batch, raw_hex, final_txid)] = handed_over
        assert got_batch == batch_id and final_txid == report["txid"]
        assert await env.runtime.backend.broadcast(raw_hex) == final_txid
        env.chain.mine(1)
        assert (await env.runtime.backend.transaction(final_txid)).confirmations == 1

        # Only refills in cosigning are exported.
        async with env.sessions() as s, s.begin():
            (await s.get(PayoutBatch, batch_id)).status = BatchStatus.SIGNED
        r, report = await cli("cold", "export", batch_id, "--out", str(tmp_path / "again"))
        assert r.exit_code == 1 and "not cosigning" in report["error"]
    finally:
        reset_settings_cache()
