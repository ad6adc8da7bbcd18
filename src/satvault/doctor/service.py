"""``run_doctor``: gather the facts, judge them, one report.

The probes that wait on something else — the database's revision, clock and durability
settings, the chain node (its sync state and network, and its transaction index), the
Lightning node, the signer, the disk, hashing the installed
code — run concurrently, each with ``doctor_timeout_seconds``; none holds a database
transaction while it waits on the network. Once the schema is known to be current, the
ledger check and the three-way reconciliation run
(:func:`satvault.reconcile.service.find_differences`, shallow: without walking the audit
chain, which ``satvault audit verify`` does).

Nothing is written: the ledger check and the reconciliation read in sessions that are rolled
back; no incident or review item is kept (the custody worker's reconciliation does that).
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Awaitable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from satvault.backends.base import (
    ChainBackend,
    ChainSync,
    ChainSyncSource,
    TxIndex,
    TxIndexSource,
)
from satvault.backends.lightning import LightningBackend, NodeInfo
from satvault.composition import (
    event_stream,
    make_lightning_backend,
    open_signer,
    passphrase_path,
    seed_path,
)
from satvault.config import Settings, redact_url
from satvault.doctor import checks as J
from satvault.doctor._report import DoctorReport
from satvault.doctor.manifest import (
    IntegrityResult,
    default_manifest_path,
    package_root,
    verify_manifest,
)
from satvault.events.models import OutboxEvent
from satvault.events.relay import cursor_position
from satvault.ledger.check import CheckReport, check_ledger
from satvault.migrate import current_revision, head_revision
from satvault.onchain.models import OnchainWallet
from satvault.reconcile.service import find_differences
from satvault.signing.client import UnixSocketSigner

__all__ = ["run_doctor"]

T = TypeVar("T")


async def _probe(work: Awaitable[T], timeout: float) -> T | BaseException:
    """The value, or the exception met (a timeout says how long it waited)."""
    try:
        async with asyncio.timeout(timeout):
            return await work
    except TimeoutError:
        return TimeoutError(f"no answer within {timeout:g} s")
    except Exception as exc:  # every failure is a finding, reported with advice
        return exc


async def _revision(engine: AsyncEngine) -> str | None:
    return await current_revision(engine)


async def _db_now(engine: AsyncEngine) -> datetime | None:
    """The database server's clock; None on SQLite (it is this process's clock)."""
    if engine.dialect.name == "sqlite":
        return None
    async with engine.connect() as conn:
        value = (await conn.execute(text("SELECT CURRENT_TIMESTAMP"))).scalar_one()
    return value if isinstance(value, datetime) else None


async def _db_settings(engine: AsyncEngine) -> dict[str, str] | None:
    """The PostgreSQL settings durability rests on, as this engine's sessions see them (a
    role's or database's ``ALTER … SET`` included); None on SQLite."""
    if engine.dialect.name == "sqlite":
        return None
    async with engine.connect() as conn:
        rows = (await conn.execute(
            text("SELECT name, setting FROM pg_settings WHERE name = ANY(:names)"),
            {"names": list(J.DURABILITY_SETTINGS)})).all()
    return {name: setting for name, setting in rows}


async def _chain_sync(backend: ChainBackend) -> ChainSync | None:
    if not isinstance(backend, ChainSyncSource):
        return None
    return await backend.sync_info()


async def _tx_index(backend: ChainBackend) -> TxIndex | None:
    if not isinstance(backend, TxIndexSource):
        return None
    return await backend.tx_index()


async def _signer(settings: Settings, timeout: float) -> dict[str, str] | None:
    """The signer's descriptors: the socket's, or the in-process signer's from its seed
    (found from outside: the doctor compared the database's wallets with a socket signer's
    only, and called the in-process one ok whatever seed it held). None without either."""
    if settings.signer_socket:
        return await UnixSocketSigner(settings.signer_socket, timeout=timeout).descriptors()
    if not seed_path(settings).exists():
        return None
    signer = await asyncio.to_thread(open_signer, settings)
    return await signer.descriptors()


def _disks(settings: Settings) -> list[J.DiskFacts | tuple[str, BaseException]]:
    paths = [settings.home]
    if settings.is_sqlite:
        db = make_url(settings.database_url).database
        if db and db != ":memory:":
            paths.append(Path(db).resolve().parent)
    out: list[J.DiskFacts | tuple[str, BaseException]] = []
    seen: set[int] = set()
    for path in paths:
        try:
            device = path.stat().st_dev
            if device in seen:
                continue
            seen.add(device)
            usage = shutil.disk_usage(path)
            out.append(J.DiskFacts(str(path), usage.free, usage.total))
        except OSError as exc:
            out.append((str(path), exc))
    return out


async def _registered(sessions: async_sessionmaker[AsyncSession]) -> dict[str, str]:
    """The database's watch-only deposit and hot wallets, by role."""
    async with sessions() as s:
        rows = await s.execute(select(OnchainWallet.role, OnchainWallet.descriptor).where(
            OnchainWallet.role.in_(("deposit", "hot"))))
        return {role: descriptor for role, descriptor in rows.all()}


async def _stream_last_seq(settings: Settings) -> int | None:
    """The event stream's last sequence (``event_stream = nats``; None: NATS has no such
    stream yet), NATS asked once."""
    if settings.event_stream != "nats":
        return None
    async with event_stream(settings) as stream:
        return await stream.last_seq_if_any()


async def _relay(settings: Settings, sessions: async_sessionmaker[AsyncSession]
                 ) -> J.RelayFacts | None:
    """How far the relay got, and what waits for it (``event_stream = nats``)."""
    if settings.event_stream != "nats":
        return None
    async with sessions() as s:
        position = await cursor_position(s)
        waiting, oldest = (await s.execute(select(
            func.count(), func.min(OutboxEvent.created_at))
            .where(OutboxEvent.id > position))).one()
    return J.RelayFacts(position, int(waiting), oldest)


async def _ledger(sessions: async_sessionmaker[AsyncSession]) -> CheckReport:
    async with sessions() as s:
        try:
            return await check_ledger(s)
        finally:
            await s.rollback()


async def run_doctor(settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                     chain: ChainBackend | None = None,
                     lightning: LightningBackend | bool | None = True,
                     root: Path | None = None, manifest: Path | None = None,
                     now: datetime | None = None) -> DoctorReport:
    """Every check, in a fixed order. ``chain``/``lightning``: adapters to use (a running
    app's); else built from the settings and closed here (``lightning=None``: none).
    ``root``/``manifest``: the code tree to verify and its manifest (default: the installed
    package and its ``_manifest.json``, or ``code_manifest_file``). Raises ValueError for
    settings naming an unknown backend (the caller's exit code 2)."""
    from satvault.backends.registry import make_chain_backend

    engine: AsyncEngine = sessions.kw["bind"]
    timeout = settings.doctor_timeout_seconds
    own: list[Any] = []
    backend = chain if chain is not None else make_chain_backend(settings)
    if chain is None:
        own.append(backend)
    ln: LightningBackend | BaseException | None
    if lightning is True:
        try:
            ln = make_lightning_backend(settings)
        except ValueError:
            raise
        except Exception as exc:  # e.g. an unreadable macaroon, read when the adapter opens
            ln = exc
        if isinstance(ln, LightningBackend):
            own.append(ln)
    else:
        ln = lightning or None
    root = (root or package_root()).resolve()
    manifest = manifest or (Path(settings.code_manifest_file) if settings.code_manifest_file
                            else default_manifest_path(root))
    key = settings.code_manifest_public_key

    async def integrity() -> IntegrityResult | None:
        if not key or not manifest.exists():
            return None
        return await asyncio.to_thread(verify_manifest, root, manifest, key)

    async def ln_info() -> NodeInfo | None:
        if isinstance(ln, BaseException):
            raise ln
        return None if ln is None else await ln.get_info()

    try:
        tasks = (
            asyncio.ensure_future(_probe(_revision(engine), timeout)),
            asyncio.ensure_future(_probe(_db_now(engine), timeout)),
            asyncio.ensure_future(_probe(_db_settings(engine), timeout)),
            asyncio.ensure_future(_probe(_chain_sync(backend), timeout)),
            asyncio.ensure_future(_probe(ln_info(), timeout)),
            asyncio.ensure_future(_probe(_signer(settings, timeout), timeout)),
            asyncio.ensure_future(asyncio.to_thread(_disks, settings)),
            # hashing a few hundred files: bounded by the disk, not the network
            asyncio.ensure_future(_probe(integrity(), max(timeout, 60.0))),
            asyncio.ensure_future(_probe(_tx_index(backend), timeout)),
            asyncio.ensure_future(_probe(_stream_last_seq(settings), timeout)),
            asyncio.ensure_future(_probe(_relay(settings, sessions), timeout)))
        await asyncio.gather(*tasks)
        revision, db_now, db_settings, sync, info, signer = (
            tasks[0].result(), tasks[1].result(), tasks[2].result(), tasks[3].result(),
            tasks[4].result(), tasks[5].result())
        disks, code, txindex = tasks[6].result(), tasks[7].result(), tasks[8].result()
        last_seq, relay = tasks[9].result(), tasks[10].result()
        head = head_revision()
        current = not isinstance(revision, BaseException) and revision == head
        ledger: CheckReport | BaseException | None = None
        differences: list[Any] | BaseException | None = None
        registered: dict[str, str] | BaseException | None = None
        why = "the schema is not current"
        lightning_ok = ln is not None and not isinstance(ln, BaseException) \
            and isinstance(info, NodeInfo)
        if current:
            chain_ok = not isinstance(sync, BaseException)
            why = "the chain node does not answer"
            if isinstance(sync, ChainSync) and sync.network not in (None, settings.network):
                chain_ok, why = False, "the chain node is on another network"
            live_ln = ln if lightning_ok and not isinstance(ln, BaseException) else None
            recon = _probe(find_differences(sessions, backend, live_ln, deep=False),
                           max(timeout, 30.0)) if chain_ok else asyncio.sleep(0, None)
            ledger, found, registered = await asyncio.gather(
                _probe(_ledger(sessions), 60.0), recon, _probe(_registered(sessions), timeout))
            if isinstance(found, BaseException):
                differences = found
            elif found is not None:
                differences = list(found[0])
    finally:
        for adapter in own:
            await adapter.close()

    now = now or datetime.now(UTC)
    kind = settings.lightning_backend or "none"
    url = redact_url(settings.esplora_url if settings.chain_backend == "esplora"
                     else settings.bitcoind_url)
    report = DoctorReport([
        J.judge_migrations(revision, head),
        J.judge_database(db_settings, production=settings.environment == "production"),
        J.judge_chain(sync, kind=settings.chain_backend, url=url, network=settings.network,
                      txindex=txindex),
        J.judge_lightning(info if kind not in ("", "none") else None, kind=kind,
                          network=settings.network),
        J.judge_macaroon(kind=kind, path=settings.lnd_macaroon_path,
                         inline=bool(settings.lnd_macaroon_hex
                                     and settings.lnd_macaroon_hex.get_secret_value())),
        J.judge_tls(kind=kind, cert_path=settings.lnd_tls_cert, url=settings.lnd_url, now=now),
        J.judge_clock(now=now, db_now=db_now, sync=sync, network=settings.network),
        J.judge_disk(disks, warn_bytes=settings.doctor_disk_warn_bytes,
                     error_bytes=settings.doctor_disk_error_bytes),
        J.judge_ledger(ledger),
        J.judge_reconciliation(differences, why),
        J.judge_signer(signer, socket=settings.signer_socket,
                       production=settings.real_money,
                       demo_unasked=settings.demo_signer_unasked,
                       registered=registered if isinstance(registered, dict) else None,
                       network=settings.network),
        J.judge_seed(J.seed_facts(seed_path(settings)),
                     separate_signer=bool(settings.signer_socket)),
        J.judge_passphrase(J.seed_facts(passphrase_path(settings))),
        J.judge_integrity(code, root=str(root), manifest=str(manifest), configured=bool(key),
                          production=settings.environment == "production"),
        J.judge_event_stream(settings.event_stream, url=redact_url(settings.nats_url),
                             stream=settings.nats_stream, last_seq=last_seq,
                             relay=relay if current else None, now=now),
    ])
    return report
