"""The composition root: the one place that builds satvault's parts from the settings and
wires them together.

* :func:`open_database` / :func:`open_sessions` — the engine and the session factory, with
  the outbox's commit hooks installed explicitly (nothing is wired by an import);
* :func:`open_signer` — the signer client: the key-holding process over its unix socket
  (``signer_socket``, production) or an in-process signer from the encrypted seed file (the
  embedded demo); :func:`register_signer_wallets` — its watch-only wallets;
* :class:`Runtime` — the node adapters (chain backend, Lightning), the rate service and the
  services around them (chain watcher, payout job, Lightning listener and payer);
* :func:`build_workers` — every background worker, with its wake-up hooks; the chain watcher,
  payout job and custody worker run only against a chain node on ``SATVAULT_NETWORK``
  (:class:`~satvault.backends.networks.NetworkGuard`, asked on first contact and again every
  ``chain_network_recheck_seconds``: a node down at start-up does not hold the start-up);
* :class:`Platform` — all of the above for one process (and, with the NATS event stream, the
  live updates' subscriber to it), started and stopped as one: the HTTP app's lifespan
  (``satvault serve``), the CLI and the tests use it.

Domain packages never import this module (the import contract in ``make test`` says so);
it imports them.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import httpx
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from satvault.accounts.frozen import DepositScreen
from satvault.auth.credentials import sealer_for
from satvault.backends.base import ChainBackend
from satvault.backends.errors import BackendUnavailable
from satvault.backends.lightning import LightningBackend
from satvault.backends.lnd import LndBackend
from satvault.backends.networks import NetworkGuard
from satvault.backends.registry import make_chain_backend
from satvault.config import Settings
from satvault.custody.refill import RefillPlanner
from satvault.custody.sweeps import SweepPlanner
from satvault.db import create_engine, session_factory
from satvault.events import outbox
from satvault.events.delivery import WebhookDispatcher
from satvault.events.fanout import CONSUMER, WebhookFanout
from satvault.events.jetstream import DurableConsumer, JetStream, StreamSettings
from satvault.events.live import LiveFeed
from satvault.events.outbox_feed import OutboxFeed
from satvault.events.relay import EventRelay
from satvault.invoices.service import apply_payment
from satvault.invoices.tasks import InvoiceRefresher, lightning_follow_up
from satvault.kernel.plugins import PluginError, load_plugin, plugin_names
from satvault.kernel.tls import default_context
from satvault.leases import Lease
from satvault.lightning.invoices import InvoiceListener, StoreInvoiceHook
from satvault.lightning.payments import LightningPayer
from satvault.logs import get_logger
from satvault.metrics.alerts import (
    AlertMonitor,
    Channel,
    EmailChannel,
    PluginChannel,
    WebhookChannel,
)
from satvault.migrate import ensure_current
from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.errors import InvalidDescriptor
from satvault.onchain.models import OnchainWallet
from satvault.onchain.service import register_wallet
from satvault.onchain.watcher import Watcher
from satvault.payouts.job import PayoutJob
from satvault.rates.memory import DbRateMemory
from satvault.rates.service import RateService, build_rate_service
from satvault.reconcile import Reconciler, RunReport, reconcile_once
from satvault.risk.frozen import RiskDepositScreen
from satvault.signer.core import HotSigner
from satvault.signer.inprocess import InProcessSigner
from satvault.signer.seed import create_seed_file, load_seed_file
from satvault.signing.base import Signer
from satvault.withdrawals.refused import InvoiceFollowUp
from satvault.workers import (
    LeasedServiceWorker,
    LeaseWorker,
    ServiceWorker,
    WakeListener,
    Worker,
    address_expiry_worker,
    approval_expiry_worker,
    audit_worker,
    chain_watcher_worker,
    custody_worker,
    event_relay_worker,
    hold_expiry_worker,
    idempotency_purge_worker,
    lightning_payer_worker,
    on_network,
    payout_worker,
    singleton,
    stream_consumer_worker,
    webhook_worker,
)

__all__ = ["Platform", "Runtime", "alerts_worker", "build_workers", "chain_height",
           "demo_audit_log", "ensure_dev_signer", "event_stream", "liabilities_secret",
           "make_lightning_backend", "open_database", "open_sessions", "open_signer",
           "passphrase_path", "rate_service", "reconcile_now", "register_signer_wallets",
           "seed_path"]

log = get_logger(__name__)


def seed_path(settings: Settings) -> Path:
    """The encrypted seed file the in-process signer opens (``signer_seed_file``, else
    ``$SATVAULT_HOME/signer.json``)."""
    return Path(settings.signer_seed_file) if settings.signer_seed_file \
        else settings.home / "signer.json"


def demo_audit_log(settings: Settings) -> Path:
    """The in-process signer's audit log (``$SATVAULT_HOME/signer-audit.jsonl``)."""
    return settings.home / "signer-audit.jsonl"


def passphrase_path(settings: Settings) -> Path:
    """The file the demo signer's seed passphrase is read from (``$SATVAULT_HOME/
    signer.passphrase`` unless the environment names another)."""
    from satvault.signer.seed import PASSPHRASE_FILE_ENV  # the key-holding side, on demand

    return Path(os.environ.get(PASSPHRASE_FILE_ENV, str(settings.home / "signer.passphrase")))


def _passphrase(settings: Settings) -> str:
    """The demo signer's seed passphrase, read exactly as ``satvault signer …`` reads it
    (found in a review: this path stripped all surrounding whitespace and the signer's only
    one trailing newline, so one file could give two passphrases); the file defaults to
    ``$SATVAULT_HOME/signer.passphrase``."""
    from satvault.signer.seed import PASSPHRASE_FILE_ENV, passphrase_from_env_or_file
    from satvault.signing.errors import NoPassphrase

    environ = {**os.environ, PASSPHRASE_FILE_ENV: str(passphrase_path(settings))}
    try:
        return passphrase_from_env_or_file(environ)
    except NoPassphrase as exc:
        raise RuntimeError(f"no signer passphrase: {exc}") from exc


def ensure_dev_signer(settings: Settings) -> bool:
    """For the embedded demo only: create an encrypted seed and a passphrase file under
    ``$SATVAULT_HOME`` if neither a socket nor a seed exists. Returns True if it created one."""
    if settings.signer_socket:
        return False
    seed = seed_path(settings)
    if seed.exists():
        return False
    settings.home.mkdir(parents=True, exist_ok=True)
    pass_file = settings.home / "signer.passphrase"
    if not os.environ.get("SATVAULT_SIGNER_PASSPHRASE") and not pass_file.exists():
        fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    create_seed_file(seed, _passphrase(settings), network=settings.network)
    log.warning("dev_signer_created", path=str(seed),
                note="demo only: production runs `satvault signer serve` as another user")
    return True


def open_signer(settings: Settings) -> Signer:
    if settings.signer_socket:
        from satvault.signing.client import UnixSocketSigner

        return UnixSocketSigner(settings.signer_socket)
    material = load_seed_file(seed_path(settings), _passphrase(settings))
    return InProcessSigner(HotSigner.from_material(
        material, audit_log=demo_audit_log(settings),
        cold_descriptor=settings.cold_descriptor or None,
        max_tx_sat=settings.signer_max_tx_sat, max_daily_sat=settings.signer_max_daily_sat))


async def register_signer_wallets(session: AsyncSession, signer: Signer,
                                  settings: Settings) -> dict[str, OnchainWallet]:
    """Register the watch-only deposit and hot wallets from the signer's public descriptors
    (or from the configured descriptors, which must then belong to the signer)."""
    descs = await signer.descriptors()
    wanted = {"deposit": settings.deposit_descriptor or descs["deposit"],
              "hot": settings.hot_descriptor or descs["hot"]}
    for role, configured in (("deposit", settings.deposit_descriptor),
                             ("hot", settings.hot_descriptor)):
        # Found from outside: a configured descriptor was taken as given, and one of another
        # key sent deposits to addresses the signer cannot spend (every batch `stuck`).
        if configured and not parse_wallet(configured, settings.network).derives_like(
                parse_wallet(descs[role], settings.network)):
            raise InvalidDescriptor(
                f"SATVAULT_{role.upper()}_DESCRIPTOR is not the signer's {role} wallet (it "
                f"derives other addresses than the signer's {descs[role]}); leave it empty "
                "to take the signer's")
    if settings.cold_descriptor:  # watch-only: its keys are with the cosigners
        wanted["cold"] = settings.cold_descriptor
    else:
        log.warning("no_cold_wallet", note="cold_descriptor is empty: sweeps move every "
                    "deposit coin to the semi-cold wallet, whose key is online")
    return {role: await register_wallet(session, role=role, descriptor=d,
                                        network=settings.network, gap_limit=settings.gap_limit)
            for role, d in wanted.items()}


def liabilities_secret(settings: Settings) -> bytes:
    """The key of the proof of liabilities' leaf nonces: ``liabilities_secret`` if set, else
    ``$SATVAULT_HOME/liabilities.secret``, created (random, mode 0600) on first use. Losing
    it only means past rounds' nonces cannot be derived again (their proofs are stored)."""
    if settings.liabilities_secret is not None and settings.liabilities_secret.get_secret_value():
        return settings.liabilities_secret.get_secret_value().encode()
    path = settings.home / "liabilities.secret"
    if not path.exists():
        settings.home.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass  # another process made it first: use theirs
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_hex(32))
    secret = path.read_text().strip()
    if not secret:
        raise RuntimeError(f"{path} is empty: delete it, or set SATVAULT_LIABILITIES_SECRET")
    return secret.encode()


async def chain_height(settings: Settings) -> int:
    """The configured chain backend's tip height (for a publication stamped with it)."""
    backend = make_chain_backend(settings)
    try:
        return (await backend.tip()).height
    finally:
        await backend.close()


def _network_guard(backend: ChainBackend, settings: Settings) -> NetworkGuard:
    """The guard a long-running process keeps in front of its chain workers."""
    return NetworkGuard(backend, settings.network,
                        recheck_seconds=settings.chain_network_recheck_seconds)


async def _network_if_known(guard: NetworkGuard) -> None:
    """Raise :class:`WrongChainNetwork` if the node answers with another network; let an
    unreachable node through (who asks reports that)."""
    with contextlib.suppress(BackendUnavailable):
        await guard.check()


async def reconcile_now(settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                        runtime: Runtime | None = None, deep: bool = True) -> RunReport:
    """One reconciliation run on demand (CLI, admin API): through the running runtime's node
    connections when there is one, else through backends made for this run and closed.
    Raises :class:`~satvault.backends.errors.WrongChainNetwork` before anything is compared
    when the chain node is on another network than the settings' (its coins are not ours:
    every one of ours would be reported missing). A node that does not answer is no reason
    not to run: the run reports it as a difference of its own."""
    if runtime is not None:
        await _network_if_known(runtime.network_guard
                                or _network_guard(runtime.backend, settings))
        return await reconcile_once(sessions, runtime.backend, runtime.lightning, deep=deep)
    backend = make_chain_backend(settings)
    lightning = make_lightning_backend(settings)
    try:
        await _network_if_known(NetworkGuard(backend, settings.network))
        return await reconcile_once(sessions, backend, lightning, deep=deep)
    finally:
        await backend.close()
        if lightning is not None:
            await lightning.close()


def rate_service(settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
                 ttl_seconds: float | None = None) -> RateService:
    """The rate service of the settings, remembering accepted rates in the database (the
    movement bounds hold over restarts and between processes)."""
    return build_rate_service(
        settings.rate_sources, dict(settings.fixed_rates),
        ttl_seconds=settings.rate_ttl_seconds if ttl_seconds is None else ttl_seconds,
        min_sources=settings.rate_min_sources, max_spread_bp=settings.rate_max_spread_bp,
        max_move_bp=settings.rate_max_move_bp,
        move_window_seconds=settings.rate_move_window_minutes * 60,
        max_drift_bp=settings.rate_max_drift_bp,
        drift_window_seconds=settings.rate_drift_window_minutes * 60,
        first_min_sources=settings.rate_first_min_sources, memory=DbRateMemory(sessions))


def make_lightning_backend(settings: Settings) -> LightningBackend | None:
    kind = settings.lightning_backend
    if kind in ("simnet", "lnd"):  # the simulator speaks LND's REST API
        macaroon = settings.lnd_macaroon_hex.get_secret_value() \
            if settings.lnd_macaroon_hex else None
        return LndBackend(settings.lnd_url, macaroon_hex=macaroon,
                          macaroon_path=settings.lnd_macaroon_path,
                          tls_cert=settings.lnd_tls_cert,
                          http_client=settings.lnd_http_client)
    if kind == "cln":
        from satvault.backends.cln import ClnBackend

        return ClnBackend(settings.cln_rpc_path)
    if kind in ("", "none"):
        return None
    if kind in plugin_names("lightning_backends"):
        backend = load_plugin("lightning_backends", kind)(settings)
        if not isinstance(backend, LightningBackend):
            raise PluginError(f"the Lightning backend plug-in {kind!r} made "
                              f"{type(backend).__name__}, which is not a LightningBackend")
        return backend
    known = ", ".join(("simnet", "lnd", "cln", "none", *plugin_names("lightning_backends")))
    raise ValueError(f"unknown lightning_backend {kind!r}: use {known}")


@dataclass
class Runtime:
    settings: Settings
    backend: ChainBackend
    signer: Signer
    watcher: Watcher
    payouts: PayoutJob
    sweeps: SweepPlanner
    refills: RefillPlanner
    reconciler: Reconciler
    lightning: LightningBackend | None = None
    listener: InvoiceListener | None = None
    payer: LightningPayer | None = None
    payer_wake: asyncio.Event | None = None
    rates: RateService | None = None
    # Brings a store invoice's status up to date in the transaction that credits a payment.
    on_store_invoice: StoreInvoiceHook | None = None
    # A store invoice's fresh BOLT11 for what is due once one of its BOLT11s was cancelled
    # (an internal payment refused after taking it off the node).
    invoice_follow_up: InvoiceFollowUp | None = None
    # Screens every deposit in the transaction that credits it (the risk rules; issue 12).
    deposit_screen: DepositScreen | None = None
    # Keeps the chain workers off a node of another network than the settings'.
    network_guard: NetworkGuard | None = None

    @classmethod
    def build(cls, settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
              backend: ChainBackend | None = None, signer: Signer | None = None,
              lightning: LightningBackend | bool | None = True,
              start_height: int | None = None) -> Runtime:
        """``lightning``: a backend, ``True`` to build one from the settings, ``None`` for none."""
        backend = backend or make_chain_backend(settings)
        signer = signer or open_signer(settings)
        on_store_invoice = partial(apply_payment, settings=settings)
        deposit_screen = RiskDepositScreen()
        watcher = Watcher(sessions, backend, zero_conf_max_sat=settings.zero_conf_max_sat,
                          initial_rescan=settings.watcher_initial_rescan,
                          start_height=start_height, invoice_fee_bp=settings.invoice_fee_bp,
                          on_store_invoice=on_store_invoice, deposit_screen=deposit_screen,
                          network=settings.network)
        ln = make_lightning_backend(settings) if lightning is True else lightning or None
        payouts = PayoutJob(sessions, backend, signer, settings)
        rt = cls(settings, backend, signer, watcher, payouts,
                 SweepPlanner(sessions, backend, settings, payouts),
                 RefillPlanner(sessions, backend, settings, payouts),
                 Reconciler(sessions, backend, ln), lightning=ln,
                 on_store_invoice=on_store_invoice, deposit_screen=deposit_screen,
                 network_guard=_network_guard(backend, settings))
        rt.rates = rate_service(settings, sessions)
        if ln is not None:
            rt.listener = InvoiceListener(sessions, ln, node=settings.lightning_backend,
                                          invoice_fee_bp=settings.invoice_fee_bp,
                                          on_store_invoice=on_store_invoice,
                                          deposit_screen=deposit_screen)
            rt.payer = LightningPayer(sessions, ln, settings)
            rt.invoice_follow_up = partial(lightning_follow_up, sessions, settings=settings,
                                           lightning=ln)
        return rt

    async def close(self) -> None:
        await self.backend.close()
        if self.lightning is not None:
            await self.lightning.close()
        if self.rates is not None:
            await self.rates.close()


# ----------------------------------------------------------------------------- database


def open_sessions(engine: AsyncEngine, *, public_url: str = "", event_stream: str = "outbox"
                  ) -> async_sessionmaker[AsyncSession]:
    """The session factory every part of a process shares, with the outbox's commit hooks
    (balance events, waking the webhook worker and the live streams) installed. With
    ``event_stream = "nats"`` an event's transaction queues no webhook deliveries: the
    ``webhook-fanout`` worker queues them from the stream."""
    return outbox.install(session_factory(engine, public_url=public_url),
                          webhook_fanout=event_stream != "nats")


def open_database(settings: Settings, *, pool_size: int | None = None, create: bool = False
                  ) -> tuple[AsyncEngine, async_sessionmaker[AsyncSession]]:
    """The configured database, which must be there unless ``create`` (a SQLite file that is
    not: :class:`~satvault.db.DatabaseMissing`, nothing made; ``init`` and ``db upgrade``
    make it; the app, whose start-up checks the schema, is given ``create``)."""
    engine = create_engine(settings.database_url, create=create,
                           pool_size=pool_size if pool_size is not None else settings.db_pool_size)
    return engine, open_sessions(engine, public_url=settings.public_url,
                                 event_stream=settings.event_stream)


# ----------------------------------------------------------------------------- workers


def _split(value: str) -> list[str]:
    return [v.strip() for v in value.split(",") if v.strip()]


def alerts_worker(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                  runtime: Runtime | None) -> Worker:
    """The critical alerts (satvault.metrics.alerts), told to the configured webhooks and
    e-mail recipients; with neither configured it still tracks the conditions (exported as
    ``satvault_alert_firing``)."""
    plugins: list[Channel] = []
    for name in _split(settings.alert_notifiers):  # first: a bad name fails before any I/O
        notifier = load_plugin("notifiers", name)(settings)
        if not callable(getattr(notifier, "notify", None)):
            raise PluginError(f"the notifier plug-in {name!r} made {type(notifier).__name__}, "
                              "which has no notify(alert)")
        plugins.append(PluginChannel(name, notifier))
    client = httpx.AsyncClient(timeout=10.0, follow_redirects=False,
                               verify=default_context())
    secret = settings.alert_webhook_secret.get_secret_value() \
        if settings.alert_webhook_secret else None
    channels: list[Channel] = [WebhookChannel(url, secret, client)
                               for url in _split(settings.alert_webhook_urls)]
    if settings.alert_smtp_host and _split(settings.alert_email_to):
        channels.append(EmailChannel(
            host=settings.alert_smtp_host, port=settings.alert_smtp_port,
            sender=settings.alert_email_from, recipients=_split(settings.alert_email_to),
            starttls=settings.alert_smtp_starttls, username=settings.alert_smtp_username,
            password=settings.alert_smtp_password.get_secret_value()
            if settings.alert_smtp_password else ""))
    channels += plugins
    monitor = AlertMonitor(
        sessions, channels, floor_sat=settings.semicold_floor_sat,
        lag_blocks=settings.alert_watcher_lag_blocks,
        refusal_seconds=settings.alert_signer_refusal_seconds,
        backend=runtime.backend if runtime is not None else None,
        lightning=runtime.lightning if runtime is not None else None)
    return Worker("alerts", settings.alert_interval, monitor.step, on_stop=client.aclose)


def event_stream(settings: Settings) -> JetStream:
    """A (not yet connected) NATS JetStream client for the configured event stream."""
    return JetStream(StreamSettings(
        url=settings.nats_url, stream=settings.nats_stream, prefix=settings.nats_subject_prefix,
        duplicate_window=float(settings.nats_duplicate_window_seconds),
        max_age=float(settings.nats_max_age_seconds)))


def build_workers(settings: Settings, sessions: async_sessionmaker[AsyncSession],
                  runtime: Runtime | None, lease: Lease | None = None) -> list[Worker]:
    """Every background worker of a process that runs them, in start order. The node-facing
    ones need a :class:`Runtime`; their wake-up events are wired here (``/admin/chain/notify``
    wakes the watcher, a withdrawal wakes the Lightning payer, a commit that queued webhook
    deliveries wakes the webhook worker, and with ``event_stream = "nats"`` every commit that
    wrote an event wakes the relay to NATS JetStream).

    ``lease`` (several instances, docs/operations.md): the singleton workers (chain watcher,
    payouts, custody, Lightning payer and listener, audit sealer, alerts, event relay) run
    only while this process holds it, and write through sessions fenced by its epoch (the
    runtime's, built by :class:`Platform` from ``lease.fenced``); a ``lease`` worker, last,
    takes and renews it. The others (expiries, webhooks, invoice refresher, webhook fan-out)
    claim their rows in the database and run in every process."""
    fenced = lease.fenced(sessions) if lease is not None else sessions
    singles: list[Worker] = []

    def single(w: Worker) -> Worker:
        if lease is not None:
            singles.append(singleton(w, lease))
        return w

    workers: list[Worker] = [
        hold_expiry_worker(sessions, settings.hold_expiry_interval),
        address_expiry_worker(sessions, 60.0),
        idempotency_purge_worker(sessions, 600.0,
                                 stale_seconds=settings.idempotency_stale_seconds),
        single(audit_worker(fenced, settings.audit_seal_interval)),
        approval_expiry_worker(sessions, settings.withdrawal_approval_expiry_interval),
        webhook_worker(WebhookDispatcher(sessions, environment=settings.environment,
                                         sealer=sealer_for(settings)), interval=2.0),
        single(alerts_worker(settings, fenced, runtime)),
    ]
    if settings.event_stream == "nats":  # the outbox stays the truth; the relay copies it
        # A singleton: it publishes only while this process holds the lease, and records its
        # cursor through sessions fenced by the lease's epoch.
        workers.append(single(event_relay_worker(EventRelay(
            sessions, event_stream(settings), lease=lease, batch=settings.event_relay_batch,
            fence_timeout=settings.event_relay_interval), settings.event_relay_interval)))
        # The webhook deliveries are queued from the stream (see open_sessions).
        workers.append(stream_consumer_worker("webhook-fanout", DurableConsumer(
            event_stream(settings), CONSUMER, WebhookFanout(sessions))))
    if runtime is not None:
        # What credits deposits, builds payouts and reconciles with the chain runs only
        # against a node on the configured network (asked on first contact, then again every
        # chain_network_recheck_seconds).
        guard = runtime.network_guard or _network_guard(runtime.backend, settings)

        def chained(w: Worker) -> Worker:
            return single(on_network(w, guard))

        watcher = chain_watcher_worker(runtime.watcher, settings.watcher_interval)
        runtime.watcher.wake = watcher.wake
        workers.append(chained(watcher))
        workers.append(chained(payout_worker(runtime.payouts, settings.payout_interval)))
        workers.append(chained(custody_worker(runtime.sweeps, runtime.refills,
                                              runtime.reconciler, settings.custody_interval)))
        workers.append(Worker("invoices", 1.0, InvoiceRefresher(
            sessions, settings, runtime.lightning).step))
        if runtime.payer is not None:
            payer = lightning_payer_worker(runtime.payer, settings.ln_payer_interval)
            runtime.payer_wake = payer.wake
            workers.append(single(payer))
        if runtime.listener is not None:
            workers.append(
                LeasedServiceWorker("lightning-listener", runtime.listener, lease)
                if lease is not None else ServiceWorker("lightning-listener", runtime.listener))
    engine = sessions.kw.get("bind")
    if engine is not None and engine.dialect.name == "postgresql":
        by_name = {w.name: w.wake for w in workers}
        targets = {"withdrawals": ["payouts", "lightning-payer"],
                   "ln_payments": ["lightning-payer"], "webhook_deliveries": ["webhooks"]}
        workers.append(ServiceWorker("wake-listener", WakeListener(engine, {
            table: [by_name[n] for n in names if n in by_name]
            for table, names in targets.items()})))
    if lease is not None:
        workers.append(LeaseWorker(lease, singles))
    return workers


# ----------------------------------------------------------------------------- one process


@dataclass
class Platform:
    """One process's satvault: database, runtime and workers, started and stopped together.

    ``Platform.wire`` builds what needs no I/O (engine, sessions) so an app can be created
    synchronously; :meth:`start` checks the schema, builds the runtime if the settings name a
    chain backend (unless one was given) and starts the workers; :meth:`stop` undoes it,
    closing only what it opened itself."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    runtime: Runtime | None = None
    workers: list[Worker] = field(default_factory=list)
    lease: Lease | None = None
    # With ``event_stream = "nats"``: the live updates' one subscriber to the stream (it
    # connects on the first stream opened); None: live updates read the outbox.
    live: LiveFeed | None = None
    own_engine: bool = False
    own_runtime: bool = False
    # The live updates' one reader of the outbox (event_stream = "outbox", and the streams
    # that cannot reach NATS): it reads only while a stream is open.
    outbox_feed: OutboxFeed = field(init=False)

    def __post_init__(self) -> None:
        self.outbox_feed = OutboxFeed(self.sessions)

    @classmethod
    def wire(cls, settings: Settings, *, engine: AsyncEngine | None = None,
             runtime: Runtime | None = None) -> Platform:
        if engine is None:
            engine, sessions = open_database(settings, create=True)
            return cls(settings, engine, sessions, runtime, own_engine=True)
        return cls(settings, engine, open_sessions(engine, public_url=settings.public_url,
                                                   event_stream=settings.event_stream),
                   runtime)

    async def start(self, *, workers: bool = True, runtime: bool = True) -> None:
        """``workers``: run the background workers here. ``runtime``: connect to the nodes
        even without workers (an API process beside one that runs them)."""
        await ensure_current(self.engine)
        if self.settings.event_stream == "nats":
            self.live = LiveFeed(event_stream(self.settings))
        if workers:
            # The singleton workers run in the one process holding the lease (PostgreSQL;
            # trivially this one on SQLite), their components writing through fenced sessions.
            self.lease = Lease(self.engine, holder=self.settings.instance_id or None,
                               ttl=self.settings.worker_lease_seconds)
            await self.lease.refresh()
        if self.runtime is None and (workers or runtime) and self.settings.chain_backend:
            self.runtime = Runtime.build(
                self.settings,
                self.lease.fenced(self.sessions) if self.lease is not None else self.sessions)
            self.own_runtime = True
        if workers:
            self.workers = build_workers(self.settings, self.sessions, self.runtime,
                                         self.lease)
            for w in self.workers:
                w.start()

    async def stop(self) -> None:
        for w in self.workers:  # the lease worker last: it releases the lease
            await w.stop()
        self.workers = []
        self.lease = None
        if self.live is not None:
            await self.live.close()
            self.live = None
        await self.outbox_feed.close()
        if self.runtime is not None and self.own_runtime:
            await self.runtime.close()
        if self.own_engine:
            await self.engine.dispose()
