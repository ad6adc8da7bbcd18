"""Leader election for the singleton workers, and the fence on their writes (issue 13 §4).

Any number of ``satvault serve`` processes share one PostgreSQL database. The API is
stateless; the workers that must run once (chain watcher, Lightning listener and payer,
payouts, custody, audit sealer, alerts) run in the one process holding a **lease**: a row of
``worker_leases`` with a ``holder``, an ``expires_at`` and an ``epoch``.

* **Acquire / renew** (:meth:`Lease.refresh`): one short transaction. A holder extends its
  own row (same holder, same epoch, not yet expired); anyone else takes the row only once it
  has expired, and taking it adds one to the epoch. Times are the *database's* clock
  (``clock_timestamp()``), so clock skew between hosts does not matter.
* **Fence** (:meth:`Lease.fenced`): the singleton workers' components get sessions whose
  every transaction starts with ``SELECT … FOR KEY SHARE`` of the lease row, matching this
  process's holder and epoch and not expired. No row: :class:`LeaseLost`, and nothing of the
  transaction is written. The key-share lock lasts until the transaction ends. The holder's
  renewals (a plain ``UPDATE``) do not conflict with it, but a takeover first locks the row
  ``FOR UPDATE``, which does: it waits for the old leader's transactions in flight, so none
  of them can commit after the epoch moved.
* **Cut-off.** A transaction of an expired epoch that keeps the row locked (its process
  paused: SIGSTOP, a VM frozen, a stall) would block the takeover for ever. Each fenced
  transaction sets ``idle_in_transaction_session_timeout`` to the lease time, so PostgreSQL
  ends one left idle; and the process taking over, when its wait for the row times out on a
  lease already expired by the database's clock, ends the sessions still inside a
  transaction of that epoch (each fenced transaction names itself in ``application_name``).
  Their transactions roll back; an expired epoch can never be renewed, so nothing valid is
  cut. Hence a leader's transaction must not outlast the lease (they are short: network
  calls happen outside transactions).
* On SQLite (one process by construction) the lease is always held and nothing is fenced.

Advisory locks are not used: they belong to a connection, so a leader whose connection
dropped and came back (or whose pool handed the lock's connection to someone else) cannot
tell it lost them, and they carry no epoch to refuse a deposed leader's late write.
"""

from __future__ import annotations

import os
import secrets
import socket
import time
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session, SessionTransaction

from satvault.logs import get_logger

__all__ = ["LEADER", "Lease", "LeaseLost", "default_holder"]

log = get_logger(__name__)

LEADER = "leader"  # the one lease the singleton workers of a platform share

_INSERT = text(
    "INSERT INTO worker_leases (name, holder, epoch, expires_at, renewed_at) "
    "VALUES (:name, :holder, 1, clock_timestamp() + make_interval(secs => :ttl), "
    "clock_timestamp()) ON CONFLICT (name) DO NOTHING RETURNING epoch")
_RENEW = text(
    "UPDATE worker_leases SET expires_at = clock_timestamp() + make_interval(secs => :ttl), "
    "renewed_at = clock_timestamp() WHERE name = :name AND holder = :holder "
    "AND epoch = :epoch AND expires_at > clock_timestamp() RETURNING epoch")
_LOCK = text("SELECT 1 FROM worker_leases WHERE name = :name FOR UPDATE")
_TAKE = text(
    "UPDATE worker_leases SET holder = :holder, epoch = epoch + 1, "
    "expires_at = clock_timestamp() + make_interval(secs => :ttl), "
    "renewed_at = clock_timestamp() WHERE name = :name "
    "AND (expires_at <= clock_timestamp() OR holder = :holder) RETURNING epoch")
_RELEASE = text(
    "UPDATE worker_leases SET expires_at = clock_timestamp() "
    "WHERE name = :name AND holder = :holder AND epoch = :epoch")
_BOUND = text(  # SET LOCAL both, as set_config(..., is_local => true)
    "SELECT set_config('lock_timeout', :ms, true), "
    "set_config('idle_in_transaction_session_timeout', :ms, true)")
_CHECK = text(
    "SELECT 1 FROM worker_leases WHERE name = :name AND holder = :holder AND epoch = :epoch "
    "AND expires_at > clock_timestamp() FOR KEY SHARE")


class LeaseLost(RuntimeError):
    """This process no longer holds the lease: the transaction was refused before it wrote."""


def default_holder() -> str:
    """Host name, process id and a random suffix: unique per process start."""
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{secrets.token_hex(4)}"


class Lease:
    """The lease ``name`` as seen by ``holder``. :attr:`held` is this process's belief (the
    epoch it won, and until when, by its monotonic clock measured from before the renewal
    was sent); the database's row is the truth, which the fence checks."""

    def __init__(self, engine: AsyncEngine, name: str = LEADER, *, holder: str | None = None,
                 ttl: float = 15.0) -> None:
        self.engine = engine
        self.name = name
        self.holder = holder or default_holder()
        self.ttl = float(ttl)
        # SQLite: one process owns the database file, the lease is trivially held.
        self.enforced = engine.dialect.name == "postgresql"
        self.epoch: int | None = None if self.enforced else 1
        self._valid_until = 0.0

    @property
    def held(self) -> bool:
        if not self.enforced:
            return True
        return self.epoch is not None and time.monotonic() < self._valid_until

    def drop(self) -> None:
        """Forget the lease locally (after :class:`LeaseLost`): standby until re-acquired."""
        if self.enforced and self.epoch is not None:
            log.warning("lease_lost", lease=self.name, holder=self.holder, epoch=self.epoch)
            self.epoch = None

    async def refresh(self) -> bool:
        """Renew the lease if held, else take it if free or expired. Returns :attr:`held`.
        A refresh that cannot get the row within a third of the lease time (a takeover
        waiting for a transaction of the holder) leaves the belief as it was until the next
        try."""
        if not self.enforced:
            return True
        started = time.monotonic()
        params: dict[str, Any] = {"name": self.name, "holder": self.holder, "ttl": self.ttl}
        try:
            async with self.engine.begin() as conn:
                await self._bounded(conn)
                epoch: int | None = None
                if self.epoch is not None:
                    epoch = (await conn.execute(
                        _RENEW, {**params, "epoch": self.epoch})).scalar_one_or_none()
                if epoch is None:
                    epoch = (await conn.execute(_INSERT, params)).scalar_one_or_none()
                if epoch is None:
                    # FOR UPDATE waits for the holder's transactions in flight (KEY SHARE)
                    await conn.execute(_LOCK, {"name": self.name})
                    epoch = (await conn.execute(_TAKE, params)).scalar_one_or_none()
        except Exception as exc:  # lock timeout, connection trouble: try again next time
            detail = str(getattr(exc, "orig", exc))
            log.warning("lease_refresh_failed", lease=self.name, error=type(exc).__name__,
                        detail=detail[:200])
            if "lock timeout" in detail:
                await self._cut_off_expired()
            return self.held
        previous = self.epoch
        if epoch is None:
            if previous is not None:
                self.drop()
            return False
        self.epoch = int(epoch)
        self._valid_until = started + self.ttl
        if previous != self.epoch:
            log.info("lease_acquired", lease=self.name, holder=self.holder, epoch=self.epoch)
        return True

    def _app_name(self, epoch: int) -> str:
        return f"satvault-lease {self.name} {epoch}"

    async def _cut_off_expired(self) -> None:
        """The row is expired by the database's clock but still locked by a transaction of
        the expired epoch: its process is stopped somewhere the idle timeout does not reach
        (halfway through a statement's messages). End those sessions (their transactions
        roll back), found by the ``application_name`` each fenced transaction sets; the next
        refresh takes the lease over. An expired epoch can never be renewed, so nothing
        valid is cut. Needs the right to signal the database role's own sessions."""
        try:
            async with self.engine.connect() as conn:
                epoch = (await conn.execute(text(
                    "SELECT epoch FROM worker_leases WHERE name = :name AND holder <> :holder "
                    "AND expires_at <= clock_timestamp()"),
                    {"name": self.name, "holder": self.holder})).scalar_one_or_none()
                if epoch is None:
                    return
                cut = (await conn.execute(text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND application_name = :app "
                    "AND pid <> pg_backend_pid()"), {"app": self._app_name(int(epoch))})
                ).scalar_one()
            log.warning("lease_holder_cut_off", lease=self.name, epoch=int(epoch),
                        sessions=int(cut))
        except Exception as exc:
            log.warning("lease_cut_off_failed", lease=self.name, error=type(exc).__name__)

    async def _bounded(self, conn: Any) -> None:
        """Bound a lease transaction: wait at most a third of the lease time for the row, and
        if this process is stopped halfway (its UPDATE done, its COMMIT not sent), have
        PostgreSQL end the transaction after as long, so the row is not locked for ever."""
        third = str(max(100, int(self.ttl * 1000 / 3)))
        await conn.execute(_BOUND, {"ms": third})  # one round trip: one idle gap fewer

    async def release(self) -> None:
        """Let the lease expire now (a clean shutdown): another process takes over at once."""
        if not self.enforced or self.epoch is None:
            return
        epoch, self.epoch = self.epoch, None
        try:
            async with self.engine.begin() as conn:
                await self._bounded(conn)
                await conn.execute(_RELEASE, {"name": self.name, "holder": self.holder,
                                              "epoch": epoch})
        except Exception as exc:  # it expires by itself anyway
            log.warning("lease_release_failed", lease=self.name, error=type(exc).__name__)

    # ------------------------------------------------------------------------- the fence

    def fenced(self, sessions: async_sessionmaker[AsyncSession]
               ) -> async_sessionmaker[AsyncSession]:
        """A session factory like ``sessions`` (same engine, same commit hooks) whose every
        transaction first checks, and key-share-locks, this lease's row as held by this process
        at its current epoch; else :class:`LeaseLost`. On SQLite: ``sessions`` itself."""
        if not self.enforced:
            return sessions
        base: type[Session] = sessions.kw.get("sync_session_class", Session)
        fenced_cls = type(f"Fenced{base.__name__}", (base,), {})
        event.listen(fenced_cls, "after_begin", self._check)
        kw = dict(sessions.kw)
        kw["sync_session_class"] = fenced_cls
        kw["info"] = {**kw.get("info", {}), "lease": self.name}
        return async_sessionmaker(class_=sessions.class_, **kw)

    def _check(self, session: Session, transaction: SessionTransaction,
               connection: Connection) -> None:
        epoch = self.epoch
        if epoch is None:
            raise LeaseLost(f"lease {self.name!r} is not held by {self.holder}")
        # A leader stopped inside this transaction must not keep the row locked for ever:
        # idle, PostgreSQL ends it after a lease time; stopped halfway through a statement,
        # the next holder finds it by this name (:meth:`_cut_off_expired`).
        connection.execute(text("SET LOCAL idle_in_transaction_session_timeout = "
                                f"{int(self.ttl * 1000)}"))
        connection.execute(text("SELECT set_config('application_name', :app, true)"),
                           {"app": self._app_name(epoch)})
        row = connection.execute(_CHECK, {"name": self.name, "holder": self.holder,
                                          "epoch": epoch}).first()
        if row is None:
            self.drop()
            raise LeaseLost(f"lease {self.name!r} epoch {epoch} is no longer "
                            f"{self.holder}'s")
