"""The ``satvault`` command. Every command that reports prints JSON on stdout (one object);
progress and logs go to stderr, so ``satvault … | jq`` always works."""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import Annotated, Any, TypeVar

import typer
from pydantic import ValidationError
from pydantic_settings import SettingsError
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession

from satvault import __version__
from satvault.accounts import service as accounts
from satvault.accounts.models import User
from satvault.config import ConfigError, Settings, get_settings, redact_url
from satvault.db import DatabaseInUse, create_engine, hold_sqlite_in_use
from satvault.ledger.check import check_ledger
from satvault.ledger.platform import ensure_platform_accounts
from satvault.logs import configure_logging
from satvault.migrate import SchemaNotCurrent, ensure_current, head_revision, upgrade
from satvault.signing.errors import AuditLogError

__all__ = ["app", "main"]

T = TypeVar("T")


class OutputFormat(StrEnum):
    JSON = "json"
    TEXT = "text"


class ServeRole(StrEnum):
    ALL = "all"
    API = "api"
    WORKERS = "workers"


app = typer.Typer(help="satvault: custodial Bitcoin and Lightning payments.",
                  no_args_is_help=True, add_completion=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
user_app = typer.Typer(help="Users (customers and operators).", no_args_is_help=True)
merchant_app = typer.Typer(help="Merchants.", no_args_is_help=True)
store_app = typer.Typer(help="Stores of a merchant.", no_args_is_help=True)
apikey_app = typer.Typer(help="API keys.", no_args_is_help=True)
ledger_app = typer.Typer(help="The double-entry ledger.", no_args_is_help=True)
from satvault.cli._common import (  # noqa: E402
    demo_signer_chosen,
    demo_signer_refusal,
    demo_signer_refused,
    demo_signer_warning,
    emit,
    fail,
    in_transaction,
    refuse_demo_signer,
    unreachable,
)
from satvault.cli._common import run as run_command  # noqa: E402
from satvault.cli.audit import app as audit_app  # noqa: E402
from satvault.cli.auth import app as auth_app  # noqa: E402
from satvault.cli.backup import backup_cmd, restore_cmd  # noqa: E402
from satvault.cli.cold import app as cold_app  # noqa: E402
from satvault.cli.custody import app as custody_app  # noqa: E402
from satvault.cli.doctor import app as doctor_app  # noqa: E402
from satvault.cli.events import app as events_app  # noqa: E402
from satvault.cli.kyc import kyc_app, screening_app, wallet_app  # noqa: E402
from satvault.cli.liabilities import app as liabilities_app  # noqa: E402
from satvault.cli.onchain import app as onchain_app  # noqa: E402
from satvault.cli.payouts import app as payouts_app  # noqa: E402
from satvault.cli.policy import policy_app, withdrawals_app  # noqa: E402
from satvault.cli.rates import app as rates_app  # noqa: E402
from satvault.cli.reconcile import reconcile as reconcile_command  # noqa: E402
from satvault.cli.report import app as report_app  # noqa: E402
from satvault.cli.reserves import app as reserves_app  # noqa: E402
from satvault.cli.review import app as review_app  # noqa: E402
from satvault.signer.cli import app as signer_app  # noqa: E402
from satvault.simnet.cli import app as simnet_app  # noqa: E402

app.add_typer(onchain_app, name="onchain")
app.command("reconcile")(reconcile_command)
app.add_typer(signer_app, name="signer")
app.add_typer(payouts_app, name="payouts")
app.add_typer(custody_app, name="custody")
app.add_typer(report_app, name="report")
app.add_typer(rates_app, name="rates")
app.add_typer(liabilities_app, name="liabilities")
app.add_typer(cold_app, name="cold")
app.add_typer(reserves_app, name="reserves")
app.add_typer(audit_app, name="audit")
app.add_typer(review_app, name="review")
app.add_typer(auth_app, name="auth")
app.add_typer(doctor_app, name="doctor")
app.add_typer(events_app, name="events")
app.add_typer(kyc_app, name="kyc")
app.add_typer(wallet_app, name="wallet")
app.add_typer(policy_app, name="policy")
app.add_typer(withdrawals_app, name="withdrawals")
app.command("backup")(backup_cmd)
app.command("restore")(restore_cmd)
from satvault.cli.risk import app as risk_app  # noqa: E402

risk_app.add_typer(screening_app, name="screening")  # satvault risk screening …
app.add_typer(risk_app, name="risk")
from satvault.simnet.ln.cli import app as simnet_ln_app  # noqa: E402

simnet_app.add_typer(simnet_ln_app)  # satvault simnet ln-pay / ln-invoice / ln-serve
app.add_typer(simnet_app, name="simnet")
for sub, name in ((db_app, "db"), (user_app, "user"), (merchant_app, "merchant"),
                  (store_app, "store"), (apikey_app, "apikey"), (ledger_app, "ledger")):
    app.add_typer(sub, name=name)


_in_transaction = in_transaction


@app.callback()
def _setup() -> None:
    try:
        settings = get_settings()
    except ValidationError as exc:  # the messages only: the input may hold a password
        problems = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False))
        sys.stderr.write(f"satvault: invalid settings: {problems}\n")
        raise typer.Exit(2) from None
    except (ConfigError, SettingsError) as exc:  # a file or a JSON value that cannot be read
        sys.stderr.write(f"satvault: invalid settings: {exc}\n")
        raise typer.Exit(2) from None
    configure_logging("warning" if settings.log_level == "info" else settings.log_level,
                      settings.log_format)


@app.command()
def version() -> None:
    """Print the version."""
    emit({"version": __version__, "schema": head_revision()})


# --------------------------------------------------------------------------------- database

@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the newest revision."""
    settings = get_settings()

    async def go() -> None:
        await asyncio.to_thread(upgrade, settings.database_url)

    run_command(go)
    emit({"ok": True, "revision": head_revision()})


@db_app.command("status")
def db_status() -> None:
    """Show whether the schema is current."""
    from satvault.migrate import current_revision

    settings = get_settings()

    async def go() -> str | None:
        engine = create_engine(settings.database_url, pool_size=1, create=False)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    current = run_command(go)  # a SQLite file that is not there: said (exit 2), not made
    emit({"current": current, "head": head_revision(), "up_to_date": current == head_revision()})


# ------------------------------------------------------------------------------ init, serve

@app.command()
def init(
    if_needed: Annotated[bool, typer.Option(help="Do nothing if already initialised.")] = False,
    admin_email: Annotated[str, typer.Option(help="The admin's e-mail.")] = "admin@localhost.dev",
    output: Annotated[OutputFormat, typer.Option(
        "--format", help="json (one object on stdout) or text (a box for humans).")
    ] = OutputFormat.JSON,
    demo_signer: Annotated[bool, typer.Option(
        "--demo-signer", help="Without SATVAULT_SIGNER_SOCKET, anywhere but development "
                              "on regtest: create and use the in-process demo signer all the "
                              "same (its keys live in the web process; refused otherwise)."
                              )] = False,
) -> None:
    """First-time setup: migrate, create platform accounts, an admin and an admin API key.

    The admin password and API key are printed once, here, and stored only as hashes."""
    settings = get_settings()
    refuse_demo_signer(settings, demo_signer, nothing="nothing was created")
    _preflight(settings)
    settings.home.mkdir(parents=True, exist_ok=True)

    async def migrate() -> None:  # a database that does not answer: one JSON line, exit 1
        await asyncio.to_thread(upgrade, settings.database_url)

    run_command(migrate)

    async def work(session: AsyncSession) -> dict[str, Any] | None:
        existing = (await session.execute(select(User).where(User.is_admin.is_(True)))).first()
        if existing is not None:
            return None
        await ensure_platform_accounts(session, "BTC")
        password = secrets.token_urlsafe(12)
        admin = await accounts.create_user(session, email=admin_email, password=password,
                                           display_name="Administrator", is_admin=True,
                                           actor="cli:init")
        key, token = await accounts.create_api_key(session, owner_id=admin.id, scopes=["admin"],
                                                   label="created by satvault init",
                                                   actor="cli:init")
        return {"admin_id": admin.id, "email": admin.email, "password": password,
                "api_key_id": key.id, "api_key": token}

    # The signer's wallets first: a configured descriptor that is not the signer's stops
    # init before an admin exists whose one-time credentials would not be shown.
    signer_created = _provision_signer(settings)
    if demo_signer_chosen(settings):
        sys.stderr.write(demo_signer_warning(settings, "its keys are in this process"))
    created = _in_transaction(work, settings)
    if created is None:
        if not if_needed:
            fail("already initialised (an admin exists); use --if-needed to skip quietly")
        sys.stderr.write(f"satvault: already initialised ({settings.home})\n")
        return
    if output is OutputFormat.TEXT:
        sys.stdout.write(
            "\n  satvault is initialised. These credentials are shown ONCE; store them now.\n"
            f"    admin e-mail   {created['email']}\n"
            f"    admin password {created['password']}\n"
            f"    admin API key  {created['api_key']}\n"
            f"    data           {settings.home}\n"
            + (f"    signer seed    {settings.home / 'signer.json'} (demo signer, encrypted; "
               "production: `satvault signer serve`)\n" if signer_created else "")
            + "\n"
        )
        return
    sys.stderr.write("satvault: initialised; the credentials below are shown ONCE\n")
    emit({"ok": True, **created})


def _preflight(settings: Settings) -> None:
    """What init can tell before it writes anything (found from outside: a descriptor it
    could not read was refused after a demo seed was made, an unreachable signer after the
    database was created and migrated): the configured descriptors parse, a signer socket
    answers."""
    from satvault.onchain.descriptors import parse_wallet
    from satvault.onchain.errors import InvalidDescriptor
    from satvault.signing.client import UnixSocketSigner
    from satvault.signing.errors import SignerError

    for role, text in (("deposit", settings.deposit_descriptor),
                       ("hot", settings.hot_descriptor)):
        if text:
            try:
                parse_wallet(text, settings.network)
            except (InvalidDescriptor, ValueError) as exc:
                fail(f"the configured {role} descriptor cannot be read ({exc}); nothing was "
                     "created")
    if settings.signer_socket:
        async def ask() -> None:
            await UnixSocketSigner(settings.signer_socket, timeout=10).descriptors()

        try:
            asyncio.run(ask())
        except SignerError as exc:
            fail(f"{exc}; nothing was created")


def _provision_signer(settings: Settings) -> bool:
    """Create the demo signer if needed and register the watch-only deposit and hot wallets
    from its public descriptors. Returns True when a new demo seed was created."""
    from satvault.composition import ensure_dev_signer, open_signer, register_signer_wallets
    from satvault.onchain.errors import InvalidDescriptor

    created = ensure_dev_signer(settings)
    signer = open_signer(settings)

    async def work(session: AsyncSession) -> None:
        await register_signer_wallets(session, signer, settings)

    try:
        _in_transaction(work, settings)
    except InvalidDescriptor as exc:
        fail(str(exc))
    return created


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Bind address.")] = None,
    port: Annotated[int | None, typer.Option(help="Port.")] = None,
    workers: Annotated[int, typer.Option(
        min=1, max=64, help="API processes. 1: everything in one process. More (PostgreSQL "
                            "only): that many API processes on one port, and the background "
                            "workers in this process.")] = 1,
    role: Annotated[ServeRole, typer.Option(
        help="all: the API and the background workers. api: the API and pages only (one of "
             "several replicas beside one `--role workers`). workers: the background workers, "
             "with the API on the port only for /healthz (exactly one; one process).")
    ] = ServeRole.ALL,
    demo_signer: Annotated[bool, typer.Option(
        "--demo-signer", help="Without SATVAULT_SIGNER_SOCKET, anywhere but development "
                              "on regtest: start with the in-process demo signer all the "
                              "same (refused otherwise).")
    ] = False,
) -> None:
    """Run the API, the background workers and the pages."""
    import uvicorn

    from satvault.web.app import create_app
    from satvault.web.http_head import protocol_for

    settings = get_settings()
    overrides: dict[str, Any] = {}
    if host:
        overrides["host"] = host
    if port:
        overrides["port"] = port
    if overrides:
        settings = Settings(**{**settings.model_dump(exclude={"public_url"}), **overrides})
    configure_logging(settings.log_level, settings.log_format)
    if demo_signer_refused(settings, demo_signer):
        sys.stderr.write(f"satvault: {demo_signer_refusal(settings)}\n")
        raise typer.Exit(2)

    async def check() -> None:
        engine = create_engine(settings.database_url, pool_size=1, create=False)
        try:
            await ensure_current(engine)
        finally:
            await engine.dispose()

    try:
        asyncio.run(check())
    except SchemaNotCurrent as exc:
        sys.stderr.write(f"satvault: {exc}\n")
        raise typer.Exit(2) from None
    except (OSError, DBAPIError) as exc:  # found from outside: a traceback
        sys.stderr.write(f"satvault: {unreachable(exc)}\n")
        raise typer.Exit(2) from None
    if not asyncio.run(_rate_limit_storage_answers(settings)):
        sys.stderr.write(f"satvault: the rate-limit storage "
                         f"{redact_url(settings.rate_limit_storage)} does not answer\n")
        raise typer.Exit(2)
    if role is not ServeRole.ALL and settings.database_url.startswith("sqlite"):
        sys.stderr.write(f"satvault: --role {role.value} needs PostgreSQL: on SQLite one "
                         "process serves everything\n")
        raise typer.Exit(2)
    if role is ServeRole.WORKERS and workers > 1:
        sys.stderr.write("satvault: --role workers runs in one process (one set of workers)\n")
        raise typer.Exit(2)
    if workers > 1 and settings.database_url.startswith("sqlite"):
        sys.stderr.write("satvault: --workers > 1 needs PostgreSQL: SQLite has one writer, "
                         "and processes would only queue for it\n")
        raise typer.Exit(2)
    if workers > 1 and settings.rate_limit_enabled and settings.rate_limit_storage == "memory":
        sys.stderr.write(f"satvault: note: rate limits are kept in each process's memory, so "
                         f"every one of the {workers} processes allows the full budget; set "
                         "SATVAULT_RATE_LIMIT_STORAGE=redis://… to share them\n")
    if workers > 1 and settings.metrics_enabled and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        sys.stderr.write("satvault: note: PROMETHEUS_MULTIPROC_DIR is not set, so each scrape "
                         "of /metrics shows one process's counters; set it to an empty "
                         "directory to add every process's up (docs/operations.md)\n")
    # The embedded simulators belong to the process that runs the workers.
    embedded = role is not ServeRole.API
    node = _listening("chain simulator", settings.bitcoind_url, "SATVAULT_BITCOIND_URL",
                      lambda: _start_simnet(settings)) \
        if embedded and settings.chain_backend == "simnet" else None
    try:
        ln_node = _listening("Lightning simulator", settings.lnd_url, "SATVAULT_LND_URL",
                             lambda: _start_ln_simnet(settings)) \
            if embedded and settings.lightning_backend == "simnet" else None
    except typer.Exit:
        if node is not None:
            node.stop()
        raise
    url = f"http://{settings.host}:{settings.port}"
    chain_url = settings.esplora_url if settings.chain_backend == "esplora" \
        else settings.bitcoind_url
    if demo_signer_chosen(settings):
        sys.stderr.write(demo_signer_warning(
            settings, "it runs inside this process, the web side holds the hot keys"))
    sys.stderr.write(
        f"\n  satvault {__version__} is starting\n"
        f"    sign in         {url}/login  (dashboard and admin console; the admin's\n"
        f"                    password was printed by `satvault init`)\n"
        f"    API and pages   {url}/\n"
        f"    API reference   {url}/docs\n"
        f"    health          {url}/healthz\n"
        f"    database        {redact_url(settings.database_url)}\n"
        f"    chain           {settings.chain_backend} ({redact_url(chain_url)})\n"
        + ("    try it          satvault simnet pay <address> 50000 && satvault simnet mine\n"
           if node else "")
        + (f"    lightning       simnet (LND REST at {redact_url(settings.lnd_url)}); pay an "
           "invoice with `satvault simnet ln-pay <bolt11>`\n" if ln_node else "")
        + "\n"
    )
    held: list[int] = []
    try:
        # Held while this serves: a restore --force over the SQLite file refuses meanwhile
        # (as does a second serve on it), and a `signer serve` on the in-process signer's
        # seed or audit log refuses, and is refused (found from outside: one ran beside the
        # serve, each with a day's cap). Serves of one PostgreSQL platform share them.
        _hold_serving(settings, held)
        if workers == 1:
            api_only = role is ServeRole.API
            # proxy_headers=False: the client address is the socket peer; X-Forwarded-For
            # is read only by the rate limiter, from rate_limit_trusted_proxies.
            uvicorn.run(create_app(settings, start_workers=not api_only, api_only=api_only,
                                   serving=True),
                        host=settings.host, port=settings.port,
                        log_config=None, access_log=False, proxy_headers=False,
                        loop=settings.server_loop, http=protocol_for(settings.server_http),
                        h11_max_incomplete_event_size=settings.server_max_head_bytes,
                        timeout_graceful_shutdown=settings.shutdown_grace_seconds)
        else:
            _serve_processes(settings, workers, background=role is ServeRole.ALL)
    finally:
        for fd in held:
            os.close(fd)
        if node is not None:
            node.stop()
        if ln_node is not None:
            ln_node.stop()


def _hold_serving(settings: Settings, held: list[int]) -> None:
    """The locks ``serve`` holds (see above), added to ``held`` as they are taken; exit 2,
    saying why, when another process holds one."""
    from satvault.composition import demo_audit_log, seed_path

    try:
        fd = hold_sqlite_in_use(settings.database_url)
        if fd is not None:
            held.append(fd)
        if not settings.signer_socket and seed_path(settings).exists():
            from satvault.signer.audit import AuditLog, hold_file_lock

            audit = demo_audit_log(settings)
            AuditLog(audit).touch()
            held.append(hold_file_lock(seed_path(settings), "seed file", shared=True))
            held.append(hold_file_lock(audit, "audit log", shared=True))
    except (DatabaseInUse, AuditLogError) as exc:
        sys.stderr.write(f"satvault: {exc}\n")
        raise typer.Exit(2) from None


async def _rate_limit_storage_answers(settings: Settings) -> bool:
    """Whether the shared rate-limit storage (Redis) is there; memory always is."""
    if not settings.rate_limit_enabled or settings.rate_limit_storage == "memory":
        return True
    from satvault.web.ratelimit import EdgeLimiter

    limiter = EdgeLimiter(settings)
    try:
        return await limiter.check()
    finally:
        await limiter.close()


def _serve_processes(settings: Settings, workers: int, *, background: bool = True) -> None:
    """``workers`` API processes (uvicorn's supervisor, all on one port) and, in a thread of
    this process, the app's background workers (one set for the whole platform: they claim
    their work in the database, but one set is enough and keeps the logs readable). The
    processes share nothing but the database; a worker started in this process is woken by
    the API processes only through it (each polls on its interval)."""
    import threading

    import uvicorn

    from satvault.web.app import create_app
    from satvault.web.http_head import protocol_for

    # The API processes read their settings from the environment, as any satvault process.
    os.environ["SATVAULT_HOST"], os.environ["SATVAULT_PORT"] = settings.host, str(settings.port)
    stop = threading.Event()

    def run_workers() -> None:
        async def run() -> None:
            app = create_app(settings)
            async with app.router.lifespan_context(app):
                while not stop.is_set():
                    await asyncio.sleep(0.2)

        asyncio.run(run())

    thread = threading.Thread(target=run_workers, name="satvault-workers", daemon=True)
    if background:  # --role api: the workers run in another container
        thread.start()
    try:
        uvicorn.run("satvault.web.app:api_app", factory=True, workers=workers,
                    host=settings.host, port=settings.port, log_config=None, access_log=False,
                    proxy_headers=False, loop=settings.server_loop,
                    http=protocol_for(settings.server_http),
                    h11_max_incomplete_event_size=settings.server_max_head_bytes,
                    timeout_graceful_shutdown=settings.shutdown_grace_seconds)
    finally:
        stop.set()
        if thread.is_alive():
            thread.join(timeout=30)


def _start_ln_simnet(settings: Settings) -> Any:
    """The built-in Lightning simulator (LND's REST API) where ``lnd_url`` points."""
    from urllib.parse import urlsplit

    from satvault.simnet.ln.lnd_rest import LndRestServer
    from satvault.simnet.ln.network import LnNetwork

    parts = urlsplit(settings.lnd_url)
    # A fresh seed per run: the simulator keeps no state, and a fixed seed would hand out the
    # same payment hashes again after a restart.
    return LndRestServer(LnNetwork(seed=secrets.token_hex(16)), node="platform",
                         host=parts.hostname or "127.0.0.1", port=parts.port or 18080).start()


def _listening(what: str, url: str, variable: str, start: Callable[[], Any]) -> Any:
    """``start()``'s simulator, or one line and exit 2 when its address is taken or not ours
    to listen on (found from outside: a traceback when another process held the port)."""
    try:
        return start()
    except OSError as exc:
        sys.stderr.write(f"satvault: the {what} cannot listen where {variable} points "
                         f"({redact_url(url)}): {exc.strerror or exc}. Another process may "
                         f"hold the port: stop it, or set {variable} to a free one\n")
        raise typer.Exit(2) from None


def _start_simnet(settings: Settings) -> Any:
    """The built-in regtest simulator, served where ``bitcoind_url`` points, its chain kept in
    ``$SATVAULT_HOME/simnet.json`` so restarts do not rewrite history under the watcher."""
    from urllib.parse import urlsplit

    from satvault.simnet.chain import Chain
    from satvault.simnet.rpc import SimnetServer

    parts = urlsplit(settings.bitcoind_url)
    data = settings.home / "simnet.json"
    chain = Chain.load(data) if data.exists() else Chain()
    server = SimnetServer(chain, host=parts.hostname or "127.0.0.1", port=parts.port or 18443,
                          user=parts.username or "simnet", password=parts.password or "simnet",
                          data_path=data)
    server.start()
    return server



# ------------------------------------------------------------------- users, merchants, keys

@user_app.command("create")
def user_create(
    email: Annotated[str, typer.Option(help="E-mail address (the login).")],
    password: Annotated[str | None, typer.Option(
        envvar="SATVAULT_NEW_PASSWORD", help="Password (or env SATVAULT_NEW_PASSWORD); "
        "without one the user can only use API keys.")] = None,
    name: Annotated[str, typer.Option(help="Display name.")] = "",
    admin: Annotated[bool, typer.Option(help="Make the user an administrator.")] = False,
) -> None:
    """Create a user and their BTC wallet."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        user = await accounts.create_user(session, email=email, password=password,
                                          display_name=name, is_admin=admin, actor="cli")
        wallet = await accounts.ensure_wallet(session, owner_type="user", owner_id=user.id)
        return {"id": user.id, "email": user.email, "is_admin": user.is_admin,
                "wallet_id": wallet.id}

    emit(_in_transaction(work))


@merchant_app.command("create")
def merchant_create(
    name: Annotated[str, typer.Option(help="Merchant name.")],
    owner: Annotated[str | None, typer.Option(help="Owning user id (usr_…).")] = None,
) -> None:
    """Create a merchant and its BTC wallet."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        m = await accounts.create_merchant(session, name=name, owner_user_id=owner, actor="cli")
        wallet = await accounts.ensure_wallet(session, owner_type="merchant", owner_id=m.id)
        return {"id": m.id, "name": m.name, "wallet_id": wallet.id}

    emit(_in_transaction(work))


@store_app.command("create")
def store_create(
    merchant: Annotated[str, typer.Option(help="Merchant id (mer_…).")],
    name: Annotated[str, typer.Option(help="Store name.")],
    speed_policy: Annotated[int, typer.Option(help="Confirmations required: 0, 1, 2 or 6.")] = 1,
) -> None:
    """Create a store for a merchant."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        s = await accounts.create_store(session, merchant_id=merchant, name=name,
                                        speed_policy=speed_policy, actor="cli")
        return {"id": s.id, "merchant_id": s.merchant_id, "name": s.name,
                "speed_policy": s.speed_policy}

    emit(_in_transaction(work))


@apikey_app.command("create")
def apikey_create(
    owner: Annotated[str, typer.Option(help="Owner id: usr_…, mer_… or sto_….")],
    scopes: Annotated[str, typer.Option(help="Comma-separated scopes, e.g. "
                                             "wallet:read,invoices:write.")],
    label: Annotated[str, typer.Option(help="A note to recognise the key by.")] = "",
) -> None:
    """Create an API key. The key is printed once and stored only as a hash."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        key, token = await accounts.create_api_key(
            session, owner_id=owner, scopes=scopes.split(","), label=label, actor="cli")
        return {"id": key.id, "owner_id": key.owner_id, "scopes": key.scopes.split(),
                "api_key": token}

    emit(_in_transaction(work))


@apikey_app.command("revoke")
def apikey_revoke(key_id: Annotated[str, typer.Argument(help="Key id (key_…).")]) -> None:
    """Revoke an API key at once."""
    async def work(session: AsyncSession) -> dict[str, Any]:
        await accounts.revoke_api_key(session, key_id=key_id, actor="cli")
        return {"ok": True, "id": key_id, "revoked": True}

    emit(_in_transaction(work))


# ----------------------------------------------------------------------------------- ledger

@ledger_app.command("check")
def ledger_check() -> None:
    """Verify the books; exits 1 naming the offending rows if anything is wrong."""
    report = _in_transaction(lambda s: check_ledger(s))
    emit(report.as_dict())
    if not report.ok:
        raise typer.Exit(1)


@app.command()
def demo() -> None:
    """A scripted walkthrough of the platform on a fresh, temporary embedded database."""
    from satvault.demo import run_demo

    summary = run_demo()
    emit(summary)
    if not summary.get("ok"):
        raise typer.Exit(1)


def main() -> None:
    # Found from outside: an argument that is not UTF-8 (``$'\xff'``) reached a command as
    # lone surrogates and ended in a traceback where the database refused it. Said here, once
    # for every command, before anything runs.
    for number, arg in enumerate(sys.argv[1:], start=1):
        try:
            arg.encode("utf-8")
        except UnicodeEncodeError:
            sys.stderr.write(f"satvault: argument {number} is not valid UTF-8 text; nothing "
                             "was done\n")
            raise SystemExit(2) from None
    app()


if __name__ == "__main__":
    main()
