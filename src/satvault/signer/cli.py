"""``satvault signer …``: create the seed, show the descriptors, run the signer, read its
refusals.

The seed passphrase comes from ``SATVAULT_SIGNER_PASSPHRASE`` or from the file named by
``SATVAULT_SIGNER_PASSPHRASE_FILE``, never from the command line (it would show in ``ps``
and shell history). Commands print one JSON object on stdout (``refusals``: one per refusal).

``serve`` takes the signer's own defences from its command line, else from the same
settings the web side reads (``SATVAULT_COLD_DESCRIPTOR``, ``SATVAULT_SIGNER_MAX_TX_SAT``,
``SATVAULT_SIGNER_MAX_DAILY_SAT`` or ``satvault.toml``): the cold descriptor sweeps may pay
into and the caps on value leaving the platform. They are never taken from a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from satvault.signer.audit import AuditLog, hold_file_lock, read_records
from satvault.signer.core import HotSigner
from satvault.signer.seed import (
    PASSPHRASE_ENV,
    create_seed_file,
    load_seed_file,
    passphrase_from_env_or_file,
)
from satvault.signer.server import check_socket_free, group_id
from satvault.signer.server import serve as serve_socket
from satvault.signing.errors import AuditLogError, SignerError
from satvault.signing.paths import NETWORKS

__all__ = ["app"]

app = typer.Typer(help="The hot-wallet signer: the only process that holds private keys.",
                  no_args_is_help=True)

SeedFile = Annotated[Path, typer.Option("--seed-file", help="The encrypted seed file.")]

_MNEMONIC_WARNING = (
    "WRITE DOWN THESE WORDS NOW, on paper, and keep them offline. They are the only backup "
    "of every deposit and hot-wallet coin; anyone who has them can spend everything. They "
    "are shown this once and never again.")


def _emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


def _fail(exc: SignerError) -> NoReturn:
    _emit({"ok": False, "error": str(exc), "type": type(exc).__name__})
    raise typer.Exit(1)


def _load(seed_file: Path, audit_log: Path | None = None, **options: Any) -> HotSigner:
    material = load_seed_file(seed_file, passphrase_from_env_or_file())
    return HotSigner.from_material(material, audit_log=audit_log, **options)


@app.command("init")
def init(
    seed_file: SeedFile,
    network: Annotated[str | None, typer.Option(
        help=f"{', '.join(NETWORKS)} (default: the configured network).")] = None,
) -> None:
    """Create a new seed (24 words), encrypt it to the seed file, print the mnemonic once and
    the two descriptors to configure the web side with."""
    if network is None:
        from satvault.config import get_settings

        network = get_settings().network
    try:
        mnemonic = create_seed_file(seed_file, passphrase_from_env_or_file(), network=network)
        signer = _load(seed_file)
    except SignerError as exc:
        _fail(exc)
    sys.stderr.write(f"\n*** {_MNEMONIC_WARNING} ***\n\n")
    _emit({"ok": True, "seed_file": str(seed_file), "network": network,
           "fingerprint": signer.fingerprint.hex(), "warning": _MNEMONIC_WARNING,
           "mnemonic": mnemonic, "descriptors": signer.descriptors()})


@app.command("descriptors")
def descriptors(seed_file: SeedFile) -> None:
    """Print the deposit and hot descriptors (decrypts the seed to check them)."""
    try:
        signer = _load(seed_file)
    except SignerError as exc:
        _fail(exc)
    _emit({"ok": True, "network": signer.network, "fingerprint": signer.fingerprint.hex(),
           "descriptors": signer.descriptors()})


@app.command("serve")
def serve(
    seed_file: SeedFile,
    socket_path: Annotated[Path, typer.Option("--socket", help="Unix socket to listen on.")],
    audit_log: Annotated[Path | None, typer.Option(
        help="JSON-lines audit log (default: signer-audit.jsonl beside the seed file).")
                         ] = None,
    cold_descriptor: Annotated[str | None, typer.Option(
        help="The cold wallet, wsh(sortedmulti(m,[fp/48h/c'/0h/2h]xpub…/<0;1>/*,…)), that "
             "sweeps may pay into (default: SATVAULT_COLD_DESCRIPTOR; empty: none).")] = None,
    max_tx_sat: Annotated[int | None, typer.Option(
        min=1, help="Most value (payments + fee, sat) one transaction may send out of the "
                    "platform (default: SATVAULT_SIGNER_MAX_TX_SAT, 10000000).")] = None,
    max_daily_sat: Annotated[int | None, typer.Option(
        min=1, help="Most value (payments + fee, sat) leaving over any 24 hours (default: "
                    "SATVAULT_SIGNER_MAX_DAILY_SAT, 50000000).")] = None,
    socket_group: Annotated[str | None, typer.Option(
        help="Make the socket 0660 and owned by this group (name or gid), set before it "
             "can be reached: for a web side running as another user of that group.")] = None,
    allow_uid: Annotated[list[int] | None, typer.Option(
        help="Answer only processes of this user id (repeatable), as the kernel reports the "
             "peer (SO_PEERCRED); others get one refusal. Default: whoever may open the "
             "socket.")] = None,
) -> None:
    """Run the signer in the foreground on a unix socket (mode 0600) until SIGINT/SIGTERM."""
    from satvault.config import Settings

    settings = Settings()  # environment and satvault.toml, as the web side reads them
    cold = settings.cold_descriptor if cold_descriptor is None else cold_descriptor
    caps = {"max_tx_sat": max_tx_sat or settings.signer_max_tx_sat,
            "max_daily_sat": max_daily_sat or settings.signer_max_daily_sat}
    log_path = audit_log or seed_file.parent / "signer-audit.jsonl"
    held: list[int] = []  # one signer per seed file and per audit log: held until it stops
    try:
        gid = None if socket_group is None else group_id(socket_group)
        AuditLog(log_path).touch()
        held.append(hold_file_lock(seed_file, "seed file"))
        held.append(hold_file_lock(log_path, "audit log"))
        signer = _load(seed_file, log_path, cold_descriptor=cold or None, **caps)
        check_socket_free(socket_path)  # before saying it listens
    except SignerError as exc:
        for fd in held:
            os.close(fd)
        _fail(exc)
    # The long-running process keeps no copy of the passphrase in its environment.
    os.environ.pop(PASSPHRASE_ENV, None)

    async def run() -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await serve_socket(socket_path, signer, group=gid,
                               allow_uids=frozenset(allow_uid) if allow_uid else None)

    if not socket_path.parent.is_dir():  # before saying it listens
        for fd in held:
            os.close(fd)
        _fail(SignerError(f"cannot create the socket {socket_path}: its directory "
                          f"{socket_path.parent} does not exist"))
    limits = signer.limits()
    sys.stderr.write(
        f"signer {signer.fingerprint.hex()} ({signer.network}) listening on {socket_path}; "
        f"audit log {log_path}; caps {limits['max_tx_sat']} sat per transaction, "
        f"{limits['max_daily_sat']} sat per 24 h ({limits['used_24h_sat']} used); cold "
        f"wallet {signer.cold_descriptor or 'none'}; socket "
        f"{'0600' if gid is None else f'0660 group {gid}'}, users "
        f"{','.join(map(str, sorted(set(allow_uid)))) if allow_uid else 'any that can open it'}\n")
    try:
        asyncio.run(run())
    except SignerError as exc:
        _fail(exc)
    finally:
        for fd in held:
            os.close(fd)


@app.command("ping")
def ping(
    socket_path: Annotated[Path, typer.Option("--socket", help="The signer's unix socket.")],
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 5.0,
) -> None:
    """Ask the signer at the socket for its descriptors: exit 0 if it answers (a container
    health check), 1 otherwise. Needs no seed and no passphrase; prints no key."""
    from satvault.signing.client import UnixSocketSigner

    try:
        roles = sorted(asyncio.run(UnixSocketSigner(socket_path, timeout=timeout)
                                   .descriptors()))
    except SignerError as exc:
        _fail(exc)
    _emit({"ok": True, "socket": str(socket_path), "roles": roles})


@app.command("abandon")
def abandon(
    txid: Annotated[str, typer.Argument(help="A transaction the signer signed.")],
    socket_path: Annotated[Path, typer.Option("--socket", help="The signer's unix socket.")],
    reason: Annotated[str, typer.Option(
        help="Why it can never confirm (kept in the audit log).")],
    timeout: Annotated[float, typer.Option(min=0.1, help="Seconds to wait.")] = 5.0,
) -> None:
    """Give up a transaction the signer signed, so that the withdrawals it paid may be paid
    from other coins. Only for one that can never confirm: one of its inputs is spent by a
    confirmed transaction, say. The signer refuses (PaidBefore) to pay a withdrawal again
    from coins that do not conflict with an earlier payment of it until then."""
    from satvault.signing.client import UnixSocketSigner

    try:
        done = asyncio.run(UnixSocketSigner(socket_path, timeout=timeout)
                           .abandon(txid, reason=reason))
    except SignerError as exc:
        _fail(exc)
    _emit({"txid": txid, "abandoned": done,
           "note": "given up now" if done else "already given up, or never signed here"})


@app.command("refusals")
def refusals(
    audit_log: Annotated[Path, typer.Option(help="The signer's JSON-lines audit log.")],
    as_list: Annotated[bool, typer.Option(
        "--list", help="Print one JSON list instead of one JSON line per refusal.")] = False,
) -> None:
    """Print the signer's refusals (policy and limits) from its audit log, oldest first.
    Needs no seed and no passphrase."""
    if not audit_log.exists():
        _fail(AuditLogError(f"no audit log at {audit_log}"))
    try:
        found = [r for r in read_records(audit_log) if r.get("event") == "refused"]
    except SignerError as exc:
        _fail(exc)
    if as_list:
        sys.stdout.write(json.dumps(found) + "\n")
    else:
        sys.stdout.writelines(json.dumps(r) + "\n" for r in found)
    sys.stdout.flush()
