"""``satvault risk …``: the rules engine's operator commands.

``rules show`` prints the live rule set (or a version); ``rules propose --file`` stores a
validated draft; ``rules approve VERSION`` makes it live — only as an admin other than its
author. ``sanctions refresh`` loads a newer sanctions list (``--file``; without one, the
shipped dated snapshot); ``labels load --file`` replaces the label lists in the file. Each
change is audited under the admin named by ``--as``. ``rollups check`` compares the
screening's roll-ups (PostgreSQL) with the withdrawals and the folded credits and exits 1
naming each wallet apart;
``rollups rebuild`` recomputes those wallets' (or ``--wallet``'s, or ``--all``) from the rows;
``rollups prune`` deletes the buckets no window reads any more.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User, Wallet
from satvault.cli._common import emit as _emit
from satvault.cli._common import in_transaction as _run
from satvault.cli._common import with_database
from satvault.cli.risk_cases import app as cases_app
from satvault.db import utcnow
from satvault.kernel.errors import Forbidden, NotFound
from satvault.risk import service as risk
from satvault.risk.lists import load_labels, refresh_sanctions, shipped_sanctions
from satvault.risk.models import RiskRuleSet
from satvault.risk.rollups import KEEP_DAYS, prune_rollups, rebuild_rollups, rollup_drift

__all__ = ["app"]

T = TypeVar("T")

app = typer.Typer(help="Risk rules, sanctions and address labels.", no_args_is_help=True)
rules_app = typer.Typer(help="Rule sets: show, propose, approve (a second admin).",
                        no_args_is_help=True)
sanctions_app = typer.Typer(help="The sanctions list.", no_args_is_help=True)
labels_app = typer.Typer(help="Operator label lists (blacklist, mixer, darknet, gambling, "
                              "scam, exchange).", no_args_is_help=True)
app.add_typer(rules_app, name="rules")
app.add_typer(sanctions_app, name="sanctions")
app.add_typer(labels_app, name="labels")
app.add_typer(cases_app, name="cases")
rollups_app = typer.Typer(help="The screening's roll-ups (PostgreSQL): check, rebuild, prune.",
                          no_args_is_help=True)
app.add_typer(rollups_app, name="rollups")

AsAdmin = Annotated[str, typer.Option("--as", help="The acting admin's e-mail address.")]





async def _admin(session: AsyncSession, email: str) -> str:
    user = (await session.execute(select(User).where(User.email == email.strip().lower())
                                  )).scalar_one_or_none()
    if user is None or not user.is_admin:
        raise Forbidden(f"{email!r} is not an admin user")
    return f"user:{user.id}"


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError as exc:
        _emit({"ok": False, "error": f"cannot read {path}: {exc.strerror}"})
        raise typer.Exit(1) from None


@rules_app.command("show")
def rules_show(version: Annotated[int | None, typer.Argument(
        help="A version (default: the live one).")] = None) -> None:
    """Print a rule set (the live one by default) and its status."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        if version is None:
            v, _ = await risk.live_rule_set(s)
        else:
            v = version
        rs = await s.get(RiskRuleSet, v)
        if rs is None:
            raise NotFound(f"rule set version {v} not found")
        return {"ok": True, "version": rs.version, "status": rs.status.value,
                "created_by": rs.created_by, "approved_by": rs.approved_by,
                "rules": json.loads(rs.rules)}
    _emit(_run(work))


@rules_app.command("propose")
def rules_propose(
    file: Annotated[Path, typer.Option("--file", help="The rule set, JSON.")],
    as_: AsAdmin, note: Annotated[str, typer.Option(help="Why.")] = "",
) -> None:
    """Store a validated draft; a second admin makes it live with ``rules approve``."""
    text = _read(file)

    async def work(s: AsyncSession) -> dict[str, Any]:
        rs = await risk.propose_rule_set(s, rules=text, actor=await _admin(s, as_), note=note)
        return {"ok": True, "version": rs.version, "status": rs.status.value}
    _emit(_run(work))


@rules_app.command("approve")
def rules_approve(version: Annotated[int, typer.Argument(
                      min=1, max=2**31 - 1, help="The draft's version.")],
                  as_: AsAdmin) -> None:
    """Make a draft live (the live one retires); its author cannot."""
    async def work(s: AsyncSession) -> dict[str, Any]:
        rs = await risk.approve_rule_set(s, version=version, actor=await _admin(s, as_))
        return {"ok": True, "version": rs.version, "status": rs.status.value,
                "approved_by": rs.approved_by}
    _emit(_run(work))


@sanctions_app.command("refresh")
def sanctions_refresh(
    as_: AsAdmin,
    file: Annotated[Path | None, typer.Option(
        "--file", help="CSV (address,label,score,source) or one address per line; "
                       "default: the shipped dated snapshot.")] = None,
    source: Annotated[str, typer.Option(help="Where the list came from.")] = "ofac-sdn",
) -> None:
    """Replace the sanctions list."""
    text = _read(file) if file is not None else shipped_sanctions()

    async def work(s: AsyncSession) -> dict[str, Any]:
        n = await refresh_sanctions(s, text=text, actor=await _admin(s, as_), source=source)
        return {"ok": True, "addresses": n}
    _emit(_run(work))


@labels_app.command("load")
def labels_load(file: Annotated[Path, typer.Option(
        "--file", help="CSV: address,label,score[,source][,first_seen].")],
                as_: AsAdmin) -> None:
    """Replace each label list present in the file."""
    text = _read(file)

    async def work(s: AsyncSession) -> dict[str, Any]:
        return {"ok": True, "labels": await load_labels(s, text=text,
                                                         actor=await _admin(s, as_))}
    _emit(_run(work))


@rollups_app.command("check")
def rollups_check() -> None:
    """Compare every wallet's roll-ups of the last 31 days with its withdrawals and its folded
    credits; exit 1 when any differ (SQLite keeps none: nothing to compare)."""
    async def work(s: AsyncSession) -> list[dict[str, Any]]:
        return [{"wallet": d.wallet_id, "kind": d.kind, "per": d.span, "detail": d.detail}
                for d in await rollup_drift(s, now=utcnow())]
    apart = _run(work)
    _emit({"ok": not apart, "apart": apart})
    if apart:
        raise typer.Exit(1)


@rollups_app.command("prune")
def rollups_prune(
    keep_days: Annotated[int, typer.Option(help="Keep this many days (more than the 31 the "
                                                "windows and the check read).")] = KEEP_DAYS,
) -> None:
    """Delete roll-up buckets no window can read any more (run it daily)."""
    async def work(s: AsyncSession) -> dict[str, int]:
        return await prune_rollups(s, now=utcnow(), keep_days=keep_days)
    try:
        _emit({"ok": True, "deleted": _run(work)})
    except ValueError as exc:
        _emit({"ok": False, "error": str(exc)})
        raise typer.Exit(2) from exc


@rollups_app.command("rebuild")
def rollups_rebuild(
    wallet: Annotated[str | None, typer.Option(help="Only this wallet.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Every wallet, one after the "
                                                     "other.")] = False,
) -> None:
    """Recompute roll-ups from the withdrawals and the credits: the wallets ``rollups check``
    finds apart (by default), one wallet, or all; one transaction per wallet, under the locks
    that wallet's payments take (in their order: they wait for each other, never deadlock),
    a progress bar on stderr."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    if wallet is not None and all_:
        _emit({"ok": False, "error": "--wallet and --all exclude each other"})
        raise typer.Exit(2)
    console = Console(stderr=True)

    async def work(sessions: async_sessionmaker[AsyncSession]) -> list[str]:
        async with sessions() as s:
            if all_:
                targets = list((await s.execute(select(Wallet.id).order_by(Wallet.id))
                                ).scalars())
            elif wallet is not None:
                targets = [wallet]
            else:
                targets = [*sorted({d.wallet_id for d in await rollup_drift(
                    s, now=utcnow(), limit=100_000)})]
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=console, transient=True,
                      disable=not console.is_terminal) as bar:
            task = bar.add_task("rebuilding roll-ups", total=len(targets))
            for target in targets:
                async with sessions() as s, s.begin():
                    await rebuild_rollups(s, target)
                bar.advance(task)
        async with sessions() as s:
            left = await rollup_drift(s, now=utcnow())
        if left:
            raise RuntimeError(f"still apart after the rebuild: {left[0].detail}")
        return targets

    done = with_database(work)
    _emit({"ok": True, "rebuilt": ["(all)"] if all_ else done})
