"""``satvault signer ping``: the container health check of the signer."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from typer.testing import CliRunner

from satvault.signer import HotSigner
from satvault.signer.cli import app
from satvault.signer.server import start_server

runner = CliRunner()


async def test_ping_answers_while_the_signer_listens(tmp_path: Path,
                                                     signer: HotSigner) -> None:
    path = tmp_path / "signer.sock"
    srv = await start_server(path, signer)
    try:
        up = await asyncio.to_thread(runner.invoke, app, ["ping", "--socket", str(path)])
        assert up.exit_code == 0, up.stdout
        answer = json.loads(up.stdout)
        assert answer["ok"] is True and answer["roles"] == sorted(signer.descriptors())
        assert "xpub" not in up.stdout and "tpub" not in up.stdout  # roles only, no keys
    finally:
        srv.close()
        await srv.wait_closed()
        path.unlink(missing_ok=True)
    down = await asyncio.to_thread(runner.invoke, app, ["ping", "--socket", str(path),
                                                        "--timeout", "1"])
    assert down.exit_code == 1
    assert json.loads(down.stdout)["type"] == "SignerUnavailable"
