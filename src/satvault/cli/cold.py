"""``satvault cold …``: the cold-wallet ceremony.

On a cosigner's offline machine: ``keygen`` (a new mnemonic file and the key line to give the
coordinator) and ``sign`` (check a PSBT and add this cosigner's signatures). On the
coordinator's side: ``descriptor`` (build the cold descriptor from the cosigners' key
lines), ``export`` (a refill batch's PSBT as a file and QR codes) and ``import`` (merge the
cosigners' signatures into the batch and, once m have signed every input, hand the signed
transaction over). See docs/custody-cold.md for the ceremony step by step.
"""

from __future__ import annotations

import base64
import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from satvault.custody.errors import CustodyError

__all__ = ["app"]

app = typer.Typer(help="The cold wallet: keys, descriptor, PSBT export, offline signing, "
                       "import.", no_args_is_help=True)

NetworkOpt = Annotated[str | None, typer.Option(
    help="mainnet, testnet, signet or regtest (default: the configured network).")]


def _emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")


def _fail(message: str, code: int = 1) -> None:
    _emit({"ok": False, "error": message})
    raise typer.Exit(code)


def _network(network: str | None) -> str:
    if network:
        return network
    from satvault.config import get_settings

    return get_settings().network


@app.command("keygen")
def keygen(
    out: Annotated[Path, typer.Option(help="Where to write the new mnemonic (mode 0600; an "
                                           "existing file is never replaced).")],
    words: Annotated[int, typer.Option(help="12 or 24 words.")] = 24,
    network: NetworkOpt = None,
) -> None:
    """Create a cosigner seed (BIP39 mnemonic file) and print its key line for the cold
    descriptor: [fingerprint/48h/c'/0h/2h]xpub. Run it on the offline machine."""
    from satvault.custody.offline import cosigner_key, load_seed_file, new_seed_file

    net = _network(network)
    try:
        new_seed_file(out, words=words)
        root = load_seed_file(out, net)
    except CustodyError as exc:
        _fail(str(exc))
    except OSError as exc:  # found from outside: a folder that is not there was a traceback
        _fail(f"cannot write {out}: {exc.strerror or exc}")
    _emit({"ok": True, "seed_file": str(out), "fingerprint": root.my_fingerprint.hex(),
           "key": cosigner_key(root, net), "network": net,
           "note": "write the mnemonic down on paper; a BIP39 passphrase, if used, comes from "
                   "SATVAULT_COLD_PASSPHRASE and changes the key"})


@app.command("descriptor")
def descriptor(
    keys: Annotated[list[str], typer.Argument(help="The cosigners' key lines "
                                                   "([fingerprint/path]xpub).")],
    m: Annotated[int, typer.Option("--m", min=2, max=15, help="Signatures required (at least "
                                                          "two).")] = 2,
    network: NetworkOpt = None,
) -> None:
    """Build the cold wallet's wsh(sortedmulti(m, …)) descriptor, with checksum, and show its
    first receive address to compare on the cosigners' devices."""
    from satvault.custody.cold import ColdWallet
    from satvault.custody.offline import build_descriptor

    net = _network(network)
    try:
        text = build_descriptor(m, keys, net)
        wallet = ColdWallet.from_descriptor(text, net)
    except CustodyError as exc:
        _fail(str(exc))
    _emit({"ok": True, "descriptor": text, "m": wallet.threshold, "n": wallet.n,
           "first_address": wallet.derive(0, 0).address})


@app.command("sign")
def sign(
    file: Annotated[Path, typer.Argument(help="The PSBT (base64, hex or binary).")],
    seed_file: Annotated[Path, typer.Option(help="This cosigner's mnemonic file.")],
    out: Annotated[Path | None, typer.Option(help="Where to write the signed PSBT "
                                                  "(default: FILE-<fingerprint>.psbt).")
                   ] = None,
    network: NetworkOpt = None,
    descriptor: Annotated[str | None, typer.Option(
        help="The cold wallet's descriptor (or @FILE), as recorded at the ceremony: proves "
             "the inputs and the change are the wallet's own. Without it, change is shown "
             "as unverified.")] = None,
) -> None:
    """Check a cold PSBT (or a proof of reserves) and add this cosigner's signatures; a
    summary of what is signed goes to stderr."""
    from satvault.custody.offline import descriptor_arg, load_seed_file, sign_cold

    net = _network(network)
    try:
        root = load_seed_file(seed_file, net)
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise CustodyError(f"cannot read {file}: {exc.strerror}") from exc
        result = sign_cold(data, root, net, descriptor_arg(descriptor))
    except CustodyError as exc:
        _fail(str(exc))
    target = out or file.with_name(f"{file.stem}-{root.my_fingerprint.hex()}.psbt")
    from satvault.cli._common import output

    with output(target) as handle:
        handle.write(result.psbt_b64 + "\n")
    sys.stderr.write(result.summary + "\n")
    _emit({"ok": True, "out": str(target), "fingerprint": root.my_fingerprint.hex(),
           "signed_inputs": list(result.signed_inputs),
           "proof_of_reserves": result.proof_message is not None,
           "message": result.proof_message, "fee_sat": result.fee_sat,
           "outputs": result.outputs})


# ------------------------------------------------------------------ the coordinator's side

def _in_transaction(work: Any) -> Any:
    """``work(session, settings)`` in one transaction (imported here: `cold sign`, on the
    offline machine, never loads the database layer)."""
    from satvault.cli._common import in_transaction
    from satvault.config import get_settings

    settings = get_settings()
    return in_transaction(lambda session: work(session, settings), settings)


@app.command("export")
def export(
    batch_id: Annotated[str, typer.Argument(help="The refill batch (pob_…), in cosigning.")],
    out: Annotated[Path, typer.Option(help="Directory for the .psbt file and QR images.")],
) -> None:
    """Write a refill's unsigned PSBT for the cosigners: base64 file plus one QR image, or a
    numbered structured-append QR sequence when it is large."""
    from satvault.custody.ceremony import refill_for_export
    from satvault.custody.cold import export_files

    async def work(session: Any, settings: Any) -> tuple[str, str]:
        batch = await refill_for_export(session, batch_id=batch_id)
        return batch.id, batch.psbt

    found, psbt = _in_transaction(work)
    try:
        files = export_files(psbt, out, stem=f"refill-{found}")
    except CustodyError as exc:
        _fail(str(exc))
    qr = [str(f) for f in files[1:]]
    _emit({"ok": True, "batch": found, "psbt_file": str(files[0]), "qr": qr,
           "qr_parts": len(qr)})


@app.command("import")
def import_(
    files: Annotated[list[Path], typer.Argument(help="Signed PSBTs from the cosigners.")],
    batch: Annotated[str | None, typer.Option(help="The refill batch (default: the one in "
                                                   "cosigning for this transaction).")
                     ] = None,
) -> None:
    """Merge cosigners' signatures into the refill; once m have signed every input, the
    signed transaction goes on to be broadcast."""
    from satvault.custody.ceremony import import_signatures

    texts = []
    for f in files:
        try:
            data = f.read_bytes()
        except OSError as exc:
            _fail(f"cannot read {f}: {exc.strerror}")
        binary = data.startswith(b"psbt\xff")  # wallets often save the binary form
        texts.append((str(f), base64.b64encode(data).decode() if binary
                      else data.decode("ascii", "replace")))

    async def work(session: Any, settings: Any) -> Any:
        return await import_signatures(session, files=texts, network=settings.network,
                                       batch_id=batch)

    result = _in_transaction(work)
    _emit({"ok": True, "batch": result.batch_id, "complete": result.complete,
           "txid": result.txid,
           "inputs": [{"n": c.index, "signatures": c.valid, "needed": c.needed,
                       "signers": list(c.signers)} for c in result.signatures]})
