"""``satvault audit …``: the hash-chained audit log.

``seal`` chains what has been written since the last round (the ``audit`` worker does this
every few seconds; the command is for processes that run no workers). ``verify`` seals, then
walks the whole chain and re-hashes the ledger transfer ranges it vouches for; exit 1 names
the first broken row and what differs. ``anchor`` seals and prints the head (seq, hash, time)
for the operator to publish somewhere the platform cannot rewrite, and records it as an
``audit.anchor`` row; with ``--onchain`` the next sweep also commits it in an ``OP_RETURN``.
``anchors`` lists those on-chain anchors; ``verify-anchor <txid>`` reads one back from the
chain and checks the log still hashes to it.
"""

from __future__ import annotations

from typing import Annotated, Any

import typer
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.cli._common import emit as _emit
from satvault.cli._common import with_database
from satvault.config import get_settings

__all__ = ["app"]

app = typer.Typer(help="The hash-chained audit log: seal, verify, anchor (also on chain).",
                  no_args_is_help=True)
FenceTimeout = Annotated[float, typer.Option(
    min=0.0, help="Seconds to wait for transactions still open before sealing past them.")]


@app.command("seal")
def seal_cmd(fence_timeout: FenceTimeout = 30.0) -> None:
    """Chain every row and ledger transfer written since the last round."""
    from satvault.audit.service import seal_all

    done = with_database(lambda sessions: seal_all(sessions, fence_timeout=fence_timeout))
    _emit({"ok": not done.waiting, **done.as_dict()})
    if done.waiting:
        raise typer.Exit(1)


@app.command("verify")
def verify_cmd(fence_timeout: FenceTimeout = 30.0) -> None:
    """Seal, then walk the chain from its first row; exit 1 naming the first broken row."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from satvault.audit.service import seal_all, verify

    console = Console(stderr=True)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> Any:
        await seal_all(sessions, fence_timeout=fence_timeout)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("verifying the audit chain", total=None)

            def step(done: int, total: int) -> None:
                if done % 500 == 0 or done == total:
                    bar.update(task, completed=done, total=total)

            async with sessions() as s, s.begin():
                return await verify(s, progress=step)

    result = with_database(work)
    _emit(result.as_dict())
    if not result.ok:
        raise typer.Exit(1)


@app.command("anchor")
def anchor_cmd(
    actor: Annotated[str, typer.Option(help="Who anchors (recorded on the anchor row).")]
    = "cli",
    onchain: Annotated[bool, typer.Option(
        "--onchain", help="Also commit this head in the next sweep's OP_RETURN.")] = False,
    fence_timeout: FenceTimeout = 30.0,
) -> None:
    """Seal and print the chain's head (seq, hash, time); record it as an anchor row.
    Publish the printed line somewhere this platform cannot rewrite. With --onchain the
    next sweep also commits it on chain (`audit anchors` shows its txid once confirmed)."""
    from satvault.audit.service import anchor

    top = with_database(lambda sessions: anchor(sessions, actor=actor, fence_timeout=fence_timeout,
                                       onchain=onchain))
    out: dict[str, Any] = {"ok": True, **top.as_dict()}
    if onchain:
        settings = get_settings()
        out["onchain"] = "requested: the next sweep commits it" if settings.sweep_enabled \
            else "requested, but sweeps are disabled (sweep_enabled): nothing carries it yet"
    _emit(out)


@app.command("anchors")
def anchors_cmd(
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many, newest first.")] = 20,
) -> None:
    """The on-chain anchors: requested, planned (in a sweep), confirmed (txid, block)."""
    from satvault.audit.anchors import list_anchors

    async def work(sessions: async_sessionmaker[AsyncSession]) -> Any:
        async with sessions() as s:
            return await list_anchors(s, limit=limit)

    _emit({"ok": True, "anchors": with_database(work)})


@app.command("verify-anchor")
def verify_anchor_cmd(
    txid: Annotated[str, typer.Argument(help="The sweep transaction carrying the anchor.")],
    fence_timeout: FenceTimeout = 30.0,
) -> None:
    """Read the transaction from the chain backend, take the seq and hash from its SVA1
    OP_RETURN, re-hash the chain up to that row and compare; exit 1 naming what differs."""
    from satvault.backends.registry import make_chain_backend
    from satvault.cli._common import on_network
    from satvault.custody.anchoring import check_anchor_tx

    async def work(sessions: async_sessionmaker[AsyncSession]) -> Any:
        backend = make_chain_backend(get_settings())
        try:
            await on_network(backend, get_settings())  # refused by with_database
            return await check_anchor_tx(sessions, backend, txid, fence_timeout=fence_timeout)
        finally:
            await backend.close()

    result = with_database(work)
    _emit(result)
    if not result["ok"]:
        raise typer.Exit(1)
