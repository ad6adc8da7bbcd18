"""What every ``satvault`` sub-command shares: one JSON object on stdout, a failure as
``{"ok": false, "error": …}`` with an exit code, a unit of work on the configured
database (refused, exit 2, when the schema is not current), and the network check of the
commands that act on the chain node (refused, exit 1, against a node of another network)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import Awaitable, Callable, Coroutine, Iterator
from pathlib import Path
from typing import IO, Annotated, Any, NoReturn, TypeVar

import typer
from sqlalchemy import select
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.models import User
from satvault.backends.base import ChainBackend
from satvault.backends.errors import WrongChainNetwork
from satvault.backends.networks import NetworkGuard
from satvault.config import Settings, get_settings
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.kernel.retrying import retrying
from satvault.migrate import SchemaNotCurrent, ensure_current
from satvault.signing.errors import SignerError

__all__ = ["DemoSignerFlag", "admin_actor", "admin_user", "demo_signer_chosen",
           "demo_signer_refusal", "demo_signer_refused", "demo_signer_warning", "emit",
           "fail", "in_transaction", "on_network", "output", "refuse_demo_signer",
           "refuse_network", "run", "unreachable", "with_database"]

T = TypeVar("T")


def emit(obj: Any) -> None:
    sys.stdout.write(json.dumps(obj, default=str) + "\n")
    sys.stdout.flush()


def fail(message: str, code: int = 1) -> NoReturn:
    emit({"ok": False, "error": message})
    raise typer.Exit(code)


@contextlib.contextmanager
def output(path: Path, *, binary: bool = False) -> Iterator[IO[Any]]:
    """``path`` opened for writing before a command does its work, so a path that cannot be
    written is one JSON error line (exit 1) before anything changed, and the file is removed
    if the work then fails (found from outside: ``risk cases sar --pdf`` to a missing
    directory filed the SAR and then reported failure; other commands printed a traceback)."""
    try:
        handle = path.open("wb" if binary else "w")
    except OSError as exc:
        fail(f"cannot write {path}: {exc.strerror}")
    try:
        with handle:
            yield handle
    except BaseException:
        path.unlink(missing_ok=True)
        raise


def unreachable(exc: BaseException) -> str:
    """What a command says of a database or service it could not reach, or a file it could
    not use: the error's kind and text, never a URL (which may hold a password)."""
    if isinstance(exc, DBAPIError):
        orig = exc.orig or exc
        return f"the database refused or could not be reached: {type(orig).__name__}: {orig}"
    if isinstance(exc, ConnectionError | TimeoutError):
        return f"cannot connect: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


# Without a signer socket, the in-process demo signer runs unasked only in development on
# regtest (`make run`); anywhere else (production, mainnet, testnet, signet) every command
# that opens a signer (init, serve, payouts bump and resolve, reserves prove) asks this one
# check, and needs `--demo-signer`.
DemoSignerFlag = Annotated[bool, typer.Option(
    "--demo-signer", help="Without SATVAULT_SIGNER_SOCKET, anywhere but development on "
                          "regtest: use the in-process demo signer all the same (its keys "
                          "live in this process; refused otherwise).")]


def _why(settings: Settings) -> str:
    return ("SATVAULT_ENVIRONMENT is production" if settings.environment == "production"
            else f"SATVAULT_NETWORK is {settings.network}")


def demo_signer_chosen(settings: Settings) -> bool:
    """No signer socket where the demo signer needs ``--demo-signer``: anywhere but
    development on regtest (:attr:`Settings.demo_signer_unasked`)."""
    return not settings.signer_socket and not settings.demo_signer_unasked


def demo_signer_refusal(settings: Settings) -> str:
    """Why the demo signer is refused here, and the ways out."""
    return (f"{_why(settings)} and SATVAULT_SIGNER_SOCKET is empty, which would use the "
            "in-process demo signer: the web process would hold the hot keys (without "
            "--demo-signer it runs only in development on regtest). Run `satvault signer "
            "serve` as its own user and set SATVAULT_SIGNER_SOCKET to its socket "
            "(docs/operations.md, the signer), or pass --demo-signer to take the demo signer "
            "knowingly")


def demo_signer_warning(settings: Settings, what: str) -> str:
    """The stderr line of a command that takes the demo signer with ``--demo-signer``."""
    return (f"satvault: warning: the demo signer ({_why(settings)}, --demo-signer): {what}; "
            "move to `satvault signer serve`\n")


def demo_signer_refused(settings: Settings, demo_signer: bool) -> bool:
    return demo_signer_chosen(settings) and not demo_signer


def refuse_demo_signer(settings: Settings, demo_signer: bool, *,
                       nothing: str = "nothing was done") -> None:
    """Before a command opens a signer: refuse (exit 1) the demo signer where it needs
    ``--demo-signer`` (:func:`demo_signer_chosen`) unless that was given."""
    if demo_signer_refused(settings, demo_signer):
        fail(f"{demo_signer_refusal(settings)}; {nothing}")


async def on_network(backend: ChainBackend, settings: Settings,
                     guard: NetworkGuard | None = None) -> None:
    """Before a command acts on the chain node: raise :class:`WrongChainNetwork` if the node
    is on another network than ``SATVAULT_NETWORK``, as the chain workers stay stopped then
    (``guard``: the runtime's, else one for ``backend``)."""
    await (guard or NetworkGuard(backend, settings.network)).check()


def refuse_network(exc: WrongChainNetwork) -> NoReturn:
    fail(f"{exc}; nothing was done: point the chain backend at a {exc.configured} node, or "
         f"set SATVAULT_NETWORK to the node's network if it is the right one")


def run(go: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run a command's coroutine, its failures answered as every command answers them: a
    schema that is not current exits 2; a chain node of another network, a domain error (an
    unreachable node, a refusal) or the signer's error is one JSON error line, exit 1."""
    try:
        return asyncio.run(go())
    except SchemaNotCurrent as exc:
        fail(str(exc), 2)
    except WrongChainNetwork as exc:
        refuse_network(exc)
    except (SatvaultError, SignerError) as exc:
        fail(str(exc))
    except (OSError, DBAPIError) as exc:  # the database down or refusing, an unknown host
        fail(unreachable(exc))


def with_database(work: Callable[[async_sessionmaker[AsyncSession]], Awaitable[T]],
                  settings: Settings | None = None) -> T:
    """Run ``work`` with the configured database's session factory (refused, exit 2, when
    the schema is not current); a domain error is printed and exits 1."""
    settings = settings or get_settings()

    async def runner() -> T:
        from satvault.composition import open_database  # the whole platform: only when used

        engine, sessions = open_database(settings, pool_size=2)
        try:
            await ensure_current(engine)
            return await work(sessions)
        finally:
            await engine.dispose()

    return run(runner)


def in_transaction(work: Callable[[AsyncSession], Awaitable[T]],
                   settings: Settings | None = None) -> T:
    """Run ``work`` in one transaction (see :func:`with_database`), again from scratch on a
    deadlock or a serialisation failure (:func:`~satvault.kernel.retrying.retrying`): a
    command deciding on held money meets the server's own transactions on the same rows."""
    async def one(sessions: async_sessionmaker[AsyncSession]) -> T:
        return await retrying(sessions, work)

    return with_database(one, settings)


async def admin_user(session: AsyncSession, who: str) -> User:
    """The admin a command acts as (``--as``): by e-mail address or id; refused otherwise."""
    key = who.strip()
    user = (await session.execute(select(User).where(
        (User.email == key.lower()) | (User.id == key)))).scalar_one_or_none()
    if user is None or not user.is_admin:
        raise InvalidInput(f"{who!r} is not an admin user")
    return user


async def admin_actor(session: AsyncSession, who: str) -> str:
    """The audit log's name for that admin: ``user:<id>``."""
    return f"user:{(await admin_user(session, who)).id}"
