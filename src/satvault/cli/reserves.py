"""``satvault reserves …``: BIP127 proofs of reserves over the hot and cold coins.

``prove`` builds the proof from the books and has the hot signer sign the hot coins; with
cold coins it writes the partially signed PSBT for the cosigners (``satvault cold sign``),
whose copies ``finalize`` merges into the proof. ``verify`` checks any proof file against
the chain. See docs/custody-cold.md.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from satvault.cli._common import DemoSignerFlag, output, refuse_demo_signer, run
from satvault.config import get_settings
from satvault.custody.errors import CustodyError
from satvault.kernel.errors import SatvaultError

__all__ = ["app"]

app = typer.Typer(help="BIP127 proofs of reserves.", no_args_is_help=True)


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _fail(message: str, code: int = 1) -> None:
    _emit({"ok": False, "error": message})
    raise typer.Exit(code)


@app.command("prove")
def prove(
    message: Annotated[str, typer.Option(help="The message the proof commits to (e.g. "
                                              "'satvault reserves 2025-06-30').")],
    out: Annotated[Path, typer.Option(help="Where to write the proof (or the PSBT for the "
                                           "cosigners).")],
    demo_signer: DemoSignerFlag = False,
) -> None:
    """Prove the hot and cold coins: signs the hot ones; with cold coins, writes the PSBT
    the cosigners sign next."""
    from satvault.composition import open_database, open_signer
    from satvault.custody.reserves_service import prove_reserves
    from satvault.migrate import ensure_current

    settings = get_settings()
    refuse_demo_signer(settings, demo_signer)

    async def go() -> Any:
        engine, sessions = open_database(settings, pool_size=1)
        try:
            await ensure_current(engine)
            return await prove_reserves(sessions, open_signer(settings), message=message,
                                        network=settings.network)
        finally:
            await engine.dispose()

    with output(out) as file:  # before the signer signs anything
        draft = run(go)
        file.write(draft.psbt_b64 + "\n")
    report: dict[str, Any] = {"ok": True, "out": str(out), "complete": draft.complete,
                              "total_sat": draft.total_sat, "hot_coins": draft.hot_coins,
                              "cold_coins": draft.cold_coins, "message": message}
    if not draft.complete:
        report["next"] = (f"each cosigner: satvault cold sign {out.name} --seed-file SEED; "
                          f"then: satvault reserves finalize {out.name} SIGNED.psbt… "
                          "--out PROOF")
    _emit(report)


@app.command("finalize")
def finalize(
    files: Annotated[list[Path], typer.Argument(help="The proof PSBT and the cosigners' "
                                                     "signed copies.")],
    out: Annotated[Path, typer.Option(help="Where to write the proof.")],
    descriptor: Annotated[str | None, typer.Option(
        help="The cold descriptor (default: the cold wallet registered in the database).")
    ] = None,
) -> None:
    """Combine the copies, finalize the cold coins (m signatures each) and write the proof;
    input 0, the commitment, stays unsigned as BIP127 wants."""
    from satvault.custody.cold import ColdWallet, read_psbt_file
    from satvault.custody.reserves import finalize_proof

    settings = get_settings()
    try:
        psbts = [read_psbt_file(f) for f in files]
        text = descriptor or _stored_cold_descriptor()
        wallet = ColdWallet.from_descriptor(text, settings.network) if text else None
        final = finalize_proof(psbts, [str(f) for f in files], cold_wallet=wallet)
    except CustodyError as exc:
        _fail(str(exc))
    with output(out) as file:
        file.write(final.psbt_b64 + "\n")
    _emit({"ok": True, "out": str(out), "message": final.message,
           "raw_tx_bytes": len(final.raw_hex) // 2})


def _stored_cold_descriptor() -> str | None:
    from sqlalchemy import select

    from satvault.composition import open_database
    from satvault.migrate import ensure_current
    from satvault.onchain.models import OnchainWallet

    async def go() -> str | None:
        engine, sessions = open_database(get_settings(), pool_size=1)
        try:
            await ensure_current(engine)
            async with sessions() as s:
                return (await s.execute(select(OnchainWallet.descriptor).where(
                    OnchainWallet.role == "cold"))).scalar_one_or_none()
        finally:
            await engine.dispose()

    return asyncio.run(go())


@app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="The proof: a finalized PSBT or a raw "
                                              "transaction (hex).")],
    message: Annotated[str | None, typer.Option(help="The expected message (default: the "
                                                     "one the proof carries).")] = None,
    at_block: Annotated[int | None, typer.Option(min=0, help="Check the coins at this "
                                                             "height (default: the tip).")
                        ] = None,
) -> None:
    """Verify a proof of reserves against the configured chain backend: signatures, the
    commitment to the message, and every coin confirmed and unspent at block N."""
    from satvault.backends.errors import WrongChainNetwork
    from satvault.backends.registry import make_chain_backend
    from satvault.cli._common import on_network, refuse_network
    from satvault.custody.reserves import verify_proof

    settings = get_settings()
    try:
        text = file.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        _fail(f"cannot read {file}: {exc}")

    async def go() -> Any:
        backend = make_chain_backend(settings)
        try:
            await on_network(backend, settings)
            return await verify_proof(text, message, backend, at_block)
        finally:
            await backend.close()

    try:
        result = asyncio.run(go())
    except WrongChainNetwork as exc:
        refuse_network(exc)
    except SatvaultError as exc:
        _fail(str(exc))
    _emit({"ok": True, "valid": True, "message": result.message, "at_block": result.at_block,
           "total_sat": result.total_sat,
           "inputs": [{"n": i.index, "outpoint": f"{i.txid}:{i.vout}", "value_sat": i.value_sat,
                       "kind": i.kind, "confirmed_at": i.confirmed_at, "spent_at": i.spent_at}
                      for i in result.inputs]})
