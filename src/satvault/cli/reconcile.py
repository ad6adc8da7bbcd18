"""``satvault reconcile``: the three-way reconciliation once, now (deep: the audit chain too).

Prints one JSON object (each way's count, every difference named row by row, what this run
raised for a person, the open incidents) and exits 1 when anything differs, so a cron job or a
deployment check can act on it. It reads the chain and Lightning nodes the settings name; it
corrects nothing, and compares nothing with a chain node of another network than
``SATVAULT_NETWORK`` (exit 1).
"""

from __future__ import annotations

from typing import Any

import typer

from satvault.cli._common import emit, run
from satvault.composition import open_database, reconcile_now
from satvault.config import get_settings
from satvault.migrate import ensure_current
from satvault.reconcile.service import open_incidents

__all__ = ["reconcile"]


def reconcile(
    shallow: bool = typer.Option(False, "--shallow",
                                 help="Skip walking the audit chain (the per-block run)."),
) -> None:
    """Compare the ledger with itself, with the payment records and with the nodes."""
    settings = get_settings()

    async def go() -> dict[str, Any]:
        engine, sessions = open_database(settings, pool_size=2)
        try:
            await ensure_current(engine)
            report = await reconcile_now(settings, sessions, deep=not shallow)
            async with sessions() as s:
                incidents = await open_incidents(s)
            return {**report.as_dict(), "open_incidents": incidents}
        finally:
            await engine.dispose()

    out = run(go)
    emit(out)
    if not out["ok"]:
        raise typer.Exit(1)
