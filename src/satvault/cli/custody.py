"""``satvault custody …``: where the coins are, and the moves between tiers.

``status`` prints one JSON object: each tier's ledger account, its coins and what the node
still has of them, the Lightning channel balance, total liabilities and the reserve ratio,
and any custody difference. ``sweep`` plans a sweep now (the payout worker signs and
broadcasts it). Neither signs, so neither opens a signer (nor the demo seed) and neither
needs ``--demo-signer``. ``resolve`` resolves a ``stuck`` sweep or refill
(:mod:`satvault.reconcile.stuck_moves`). ``satvault reconcile`` runs the whole three-way
reconciliation. Those that read the chain node refuse one of another network than
``SATVAULT_NETWORK`` (exit 1), as the chain workers do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.registry import make_chain_backend
from satvault.cli._common import admin_actor, on_network, run, with_database
from satvault.cli._common import emit as _emit
from satvault.composition import Runtime, make_lightning_backend, open_database
from satvault.config import get_settings
from satvault.custody.status import CustodyStatus, custody_status
from satvault.migrate import ensure_current
from satvault.reconcile import stuck_moves
from satvault.signing.base import NoSigner

__all__ = ["app"]

app = typer.Typer(help="Custody tiers: deposit, semi-cold, cold.", no_args_is_help=True)
T = TypeVar("T")


def _with_runtime(work: Callable[[Runtime], Awaitable[T]]) -> T:
    """``work`` on a runtime that opens no signer: these commands sign nothing (the payout
    worker signs what they plan), so the demo seed stays closed without a signer socket."""
    settings = get_settings()

    async def go() -> T:
        engine, sessions = open_database(settings, pool_size=2)
        runtime = Runtime.build(settings, sessions, lightning=None, signer=NoSigner(
            "satvault custody signs nothing; the payout worker signs what it plans"))
        try:
            await ensure_current(engine)
            await on_network(runtime.backend, settings, runtime.network_guard)
            return await work(runtime)
        finally:
            await runtime.close()
            await engine.dispose()

    return run(go)


@app.command("status")
def status() -> None:
    """Each tier's coins against its ledger account, liabilities and the reserve ratio
    (reads the nodes; needs no signer)."""
    settings = get_settings()

    async def go() -> CustodyStatus:
        engine, sessions = open_database(settings, pool_size=2)
        backend = make_chain_backend(settings)
        lightning = make_lightning_backend(settings)
        try:
            await ensure_current(engine)
            await on_network(backend, settings)
            return await custody_status(sessions, backend, lightning)
        finally:
            await backend.close()
            if lightning is not None:
                await lightning.close()
            await engine.dispose()

    st = run(go)
    _emit({"ok": not st.differences, **st.as_dict()})
    if st.differences:
        raise typer.Exit(1)


@app.command("sweep")
def sweep() -> None:
    """Plan a sweep of confirmed deposit coins now, if one is due."""
    decision = _with_runtime(lambda rt: rt.sweeps.step())
    _emit({"ok": True, "batch": decision.batch_id, "reason": decision.reason,
           "inputs": decision.inputs, "to_semicold_sat": decision.to_semicold_sat,
           "to_cold_sat": decision.to_cold_sat, "fee_sat": decision.fee_sat})


@app.command("upgrade-books")
def upgrade_books() -> None:
    """Once, after migration 0015 on an existing database: move deposits credited before it
    from the semi-cold account to the deposit account, where sweeps take them from."""
    from satvault.custody.upgrade import rebook_legacy_deposits

    settings = get_settings()

    async def go() -> Any:
        engine, sessions = open_database(settings, pool_size=2)
        try:
            await ensure_current(engine)
            return await rebook_legacy_deposits(sessions)
        finally:
            await engine.dispose()

    done = run(go)
    _emit({"ok": True, "moved_sat": done.amount_sat, "reason": done.reason})


@app.command("resolve")
def resolve(
    move_id: Annotated[str, typer.Argument(help="A stuck sweep's or refill's id (swp_…, rfl_…).")],
    as_: Annotated[str, typer.Option("--as", help="The acting admin's e-mail address or id.")],
    note: Annotated[str, typer.Option(help="What was done and why (required, audited).")],
    abandon: Annotated[bool, typer.Option(
        "--abandon", help="Give the move up; its coins are free for a later move.")] = False,
    confirmed_by: Annotated[str | None, typer.Option(
        "--confirmed-by", metavar="TXID",
        help="A confirmed transaction that did the move: booked as the move.")] = None,
) -> None:
    """Resolve a stuck sweep or refill, only as far as the chain node proves it safe (nothing
    is changed otherwise): see docs/operations.md, "Resolving a stuck batch". It asks the
    node, never the signer (there is nothing to give up there)."""
    if abandon == (confirmed_by is not None):
        raise typer.BadParameter("give exactly one of --abandon, --confirmed-by TXID")
    settings = get_settings()

    async def work(sessions: async_sessionmaker[AsyncSession]) -> dict[str, Any]:
        backend = make_chain_backend(settings)
        try:
            await on_network(backend, settings)
            async with sessions() as s:
                actor = await admin_actor(s, as_)
            proof = await stuck_moves.prepare(
                sessions, backend=backend, settings=settings, batch_id=move_id,
                action="abandon" if abandon else "confirmed_by", note=note, txid=confirmed_by)
            async with sessions() as s, s.begin():
                return await stuck_moves.resolve(s, proof, actor=actor, note=note)
        finally:
            await backend.close()

    _emit({"ok": True, **with_database(work, settings)})
