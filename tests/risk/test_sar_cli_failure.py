"""``risk cases sar`` with a PDF path that cannot be written files nothing (found from
outside, stop 32: the SAR was recorded as filed, then the command said it failed)."""

from __future__ import annotations

import asyncio
import json

import pytest
from typer.testing import CliRunner

from satvault.accounts import service as acc
from satvault.cli import app
from satvault.config import reset_settings_cache
from tests.chainenv import Env
from tests.risk.test_case_races import held_withdrawals


@pytest.fixture
def settings_overrides() -> dict[str, object]:
    return {"withdrawal_daily_limit_msat": 10**15}


async def test_sar_that_reports_failure_does_not_file_it(env: Env, db_url, tmp_path,
                                                         monkeypatch):
    """`risk cases sar --file-reference REF --pdf PATH` with an unwritable PDF path answers
    {"ok": false, "error": "cannot write …"}, exit 1, and files nothing (the SAR was
    recorded as filed before the PDF was written: the operator, told it failed, had a
    filing on record they believed had not happened). A path that can be written files it
    and writes the PDF."""
    [(_wid, case_id)] = await held_withdrawals(env, 1, investigate=False)
    async with env.sessions() as s, s.begin():
        await acc.create_user(s, email="ann@example.com", is_admin=True)
    for name, value in (("SATVAULT_DATABASE_URL", db_url), ("SATVAULT_HOME", str(tmp_path)),
                        ("SATVAULT_NETWORK", "regtest"), ("SATVAULT_RATE_SOURCES", "fixed")):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    runner = CliRunner()

    async def cli(*args: str) -> tuple[int, dict]:
        r = await asyncio.to_thread(runner.invoke, app, ["risk", "cases", *args])
        return r.exit_code, json.loads(r.stdout.splitlines()[-1])

    try:
        code, answer = await cli("sar", case_id, "--as", "ann@example.com",
                                 "--file-reference", "FIU-2026-9",
                                 "--pdf", str(tmp_path / "missing-dir" / "sar.pdf"))
        assert code == 1 and answer["ok"] is False, answer
        code, shown = await cli("show", case_id)
        assert code == 0, shown
        sar = shown.get("sar")
        assert sar is None or sar.get("status") != "filed", sar
        pdf = tmp_path / "sar.pdf"
        code, answer = await cli("sar", case_id, "--as", "ann@example.com",
                                 "--file-reference", "FIU-2026-9", "--pdf", str(pdf))
        assert code == 0 and answer["status"] == "filed", answer
        assert pdf.read_bytes().startswith(b"%PDF")
    finally:
        reset_settings_cache()
