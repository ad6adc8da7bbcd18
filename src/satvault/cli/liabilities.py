"""``satvault liabilities …``: publish a proof of liabilities, and check one.

``publish`` reads every customer balance, builds the Merkle-sum tree (stamped with the chain
tip's height), keeps the round for the API and writes what is to be published::

    DIR/root.json               the root: hash, total, block height, leaves
    DIR/proofs/<wallet>.json    one proof per wallet with a balance (hand each to its owner)
    DIR/verify.html, verify.js  the verifier page, which works opened from disk

``verify`` checks one proof against a root, as any customer can (no database, no server).
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from satvault.cli._common import emit as _emit
from satvault.cli._common import fail as _fail
from satvault.config import get_settings
from satvault.custody.errors import CustodyError, ProofInvalid
from satvault.custody.liabilities import build, verify
from satvault.kernel import strictjson
from satvault.kernel.ids import new_id

__all__ = ["app"]

app = typer.Typer(help="Proof of liabilities (a Merkle-sum tree of customer balances).",
                  no_args_is_help=True)
ASSET = "BTC"


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1) + "\n")


@app.command("publish")
def publish(
    out: Annotated[Path, typer.Option(help="A new (or empty) directory for the publication.",
                                      file_okay=False)],
    height: Annotated[int | None, typer.Option(
        min=0, help="Block height to stamp (default: the chain backend's tip).")] = None,
) -> None:
    """Publish the customer balances as a Merkle-sum tree: DIR/root.json, one proof per
    wallet in DIR/proofs/, and the verifier page; the round is kept for the API."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    from satvault.backends.errors import BackendError
    from satvault.composition import chain_height, liabilities_secret, open_database
    from satvault.custody.liabilities_service import (
        VERIFIER_FILES,
        liability_balances,
        store_round,
        verifier_file,
    )
    from satvault.migrate import SchemaNotCurrent, ensure_current

    settings = get_settings()
    if out.exists() and not out.is_dir():
        _fail(f"{out} is not a directory")
    if out.exists() and any(out.iterdir()):
        _fail(f"{out} is not empty: publish each round into a new directory")
    secret = liabilities_secret(settings)
    if height is None:
        # The network call comes before the unit of work opens.
        try:
            height = asyncio.run(chain_height(settings))
        except (BackendError, ValueError, OSError) as exc:
            _fail(f"cannot read the chain tip from the {settings.chain_backend} backend "
                  f"({exc}); pass --height N")
    assert height is not None
    round_id = new_id("pol")
    proofs_dir = out / "proofs"
    try:  # before the round is stored: a directory that cannot be written fails first
        proofs_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _fail(f"cannot write {proofs_dir}: {exc.strerror}")

    async def go() -> Any:
        engine, sessions = open_database(settings, pool_size=1)
        try:
            await ensure_current(engine)
            async with sessions() as s, s.begin():
                balances = await liability_balances(s, asset=ASSET)
            # The tree is built between the two units of work: no lock is held meanwhile.
            publication = build(balances, height=height, round_id=round_id, secret=secret)
            async with sessions() as s, s.begin():
                await store_round(s, round_id=round_id, asset=ASSET, publication=publication)
            return publication
        finally:
            await engine.dispose()

    try:
        publication = asyncio.run(go())
    except SchemaNotCurrent as exc:
        _fail(str(exc), 2)
    except CustodyError as exc:
        _fail(str(exc))

    _write_json(out / "root.json", publication.root)
    for name in VERIFIER_FILES:
        (out / name).write_bytes(verifier_file(name))
    console = Console(stderr=True)
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=True, disable=not console.is_terminal) as bar:
        task = bar.add_task("writing proofs", total=len(publication.proofs))
        for wallet_id, proof in publication.proofs.items():
            _write_json(proofs_dir / f"{wallet_id}.json", proof)
            bar.advance(task)
    _emit({"ok": True, "round": round_id, **publication.root,
           "accounts": len(publication.proofs), "out": str(out)})


@app.command("verify")
def verify_proof(
    root: Annotated[Path, typer.Option(help="The published root.json.", dir_okay=False)],
    proof: Annotated[Path, typer.Option(help="Your proof (proofs/<wallet>.json).",
                                        dir_okay=False)],
    balance: Annotated[int | None, typer.Option(
        min=0, help="Your wallet's balance (msat) at that height, posted_msat + "
                    "frozen_msat: the proof must cover exactly this much.")] = None,
) -> None:
    """Check a proof against a root: prints the balance it proves, or exits 1 with why not."""
    loaded = []
    for what, path in (("root", root), ("proof", proof)):
        try:
            loaded.append(strictjson.loads(path.read_text()))
        except OSError as exc:
            _fail(f"cannot read the {what} {path}: {exc.strerror or exc}")
        except ValueError as exc:
            _fail(f"the {what} {path} is not JSON: {exc}")
    try:
        verified = verify(loaded[0], loaded[1], expected_balance_msat=balance)
    except ProofInvalid as exc:
        _fail(f"proof rejected: {exc}")
    _emit({"ok": True, **verified.as_dict()})
