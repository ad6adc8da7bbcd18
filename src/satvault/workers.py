"""The background workers' machinery: a :class:`Worker` is a loop around one step of a
domain service (one unit of work in its own transaction), a :class:`ServiceWorker` a
long-running service reported like one. A failure is logged and retried at the next tick; it
never kills the server. Which workers a process runs, and what wakes them, is decided in one
place: :func:`satvault.composition.build_workers`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.service import seal
from satvault.backends.errors import BackendUnavailable, WrongChainNetwork
from satvault.backends.networks import NetworkGuard
from satvault.custody.refill import RefillPlanner
from satvault.custody.sweeps import SweepPlanner
from satvault.events.delivery import WebhookDispatcher
from satvault.events.jetstream import DurableConsumer
from satvault.events.outbox import notifier
from satvault.events.relay import EventRelay
from satvault.idempotency_models import purge_expired
from satvault.kernel.clock import utcnow
from satvault.kernel.retrying import retrying
from satvault.leases import Lease, LeaseLost
from satvault.ledger.store import expire_due_holds
from satvault.lightning.payments import LightningPayer
from satvault.lightning.vouchers import expire_vouchers
from satvault.logs import get_logger
from satvault.onchain.service import expire_addresses
from satvault.onchain.watcher import Watcher
from satvault.payouts.job import PayoutJob
from satvault.reconcile import Reconciler
from satvault.withdrawals.policy.approvals import expire_due as expire_due_approvals

__all__ = ["EventRelayWorker", "LeaseWorker", "LeasedServiceWorker", "ServiceWorker",
           "StreamConsumerWorker", "WakeListener", "WebhookWorker",
           "Worker", "address_expiry_worker", "approval_expiry_worker", "audit_worker",
           "chain_watcher_worker", "event_relay_worker", "hold_expiry_worker",
           "lightning_payer_worker", "on_network", "payout_worker", "singleton",
           "stream_consumer_worker", "webhook_worker"]

log = get_logger(__name__)
# How long a stopping worker's tick has to end after its cancellation before it is logged.
STOP_GRACE_SECONDS = 10.0


class Worker:
    def __init__(self, name: str, interval: float,
                 tick: Callable[[], Awaitable[int]],
                 on_stop: Callable[[], Awaitable[None]] | None = None) -> None:
        self.name = name
        self._on_stop = on_stop
        self.interval = interval
        self._tick = tick
        self._task: asyncio.Task[None] | None = None
        self.wake = asyncio.Event()
        self.runs = 0
        self.last_error: str | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name=f"worker:{self.name}")

    async def stop(self) -> None:
        task = self._task
        if task is not None:
            task.cancel()
            await asyncio.wait({task}, timeout=STOP_GRACE_SECONDS)
            for _ in range(10):
                if task.done():
                    break
                # Something in the tick swallowed the cancellation (a library catching it):
                # say so and insist, rather than hang the shutdown behind it.
                log.error("worker_stop_slow", worker=self.name, seconds=STOP_GRACE_SECONDS)
                task.cancel()
                await asyncio.wait({task}, timeout=1.0)
            if task.done():
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._on_stop is not None:
            await self._on_stop()

    async def _loop(self) -> None:
        while True:
            try:
                done = await self._tick()
                self.runs += 1
                self.last_error = None
                if done:
                    log.info("worker_tick", worker=self.name, processed=done)
            except asyncio.CancelledError:
                raise
            except WrongChainNetwork as exc:  # explained once by the guard: no traceback
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.error("worker_refused", worker=self.name, error=str(exc))
            except Exception as exc:  # keep serving; report and try again next tick
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("worker_failed", worker=self.name)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.wake.wait(), timeout=self.interval)
            self.wake.clear()


class ServiceWorker(Worker):
    """A long-running service (the Lightning listener's subscription) started and stopped
    like the periodic workers and reported with them on /healthz: its ``runs`` and
    ``last_error`` are the service's own."""

    def __init__(self, name: str, service: Any) -> None:
        super().__init__(name, 0.0, self._never)
        self._service = service

    @staticmethod
    async def _never() -> int:
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._service.run(), name=f"worker:{self.name}")

    @property
    def runs(self) -> int:
        return int(self._service.runs)

    @runs.setter
    def runs(self, _value: int) -> None:
        pass

    @property
    def last_error(self) -> str | None:
        return self._service.last_error  # type: ignore[no-any-return]

    @last_error.setter
    def last_error(self, _value: str | None) -> None:
        pass


# ------------------------------------------------------------------ several instances


def singleton(worker: Worker, lease: Lease) -> Worker:
    """Run ``worker``'s ticks only while this process holds ``lease`` (standby otherwise).
    A tick refused by the fence (:class:`LeaseLost`: another process took the lease while
    this one was paused) wrote nothing; it is dropped and this process goes to standby."""
    tick = worker._tick

    async def gated() -> int:
        if not lease.held:
            return 0
        try:
            return await tick()
        except LeaseLost:
            lease.drop()
            log.warning("worker_fenced", worker=worker.name, lease=lease.name)
            return 0

    worker._tick = gated
    return worker


def on_network(worker: Worker, guard: NetworkGuard) -> Worker:
    """Run ``worker``'s ticks only against a chain node on the configured network: the
    guard asks the node on the first tick (again after the node was unreachable, and once its
    last answer is ``recheck_seconds`` old); a node of another network fails every tick with
    :class:`WrongChainNetwork`, reported as the worker's ``last_error`` (on /healthz) and
    asked again at the next tick."""
    tick = worker._tick

    async def checked() -> int:
        await guard.check()
        try:
            return await tick()
        except BackendUnavailable:
            guard.forget()
            raise

    worker._tick = checked
    return worker


class LeaseWorker(Worker):
    """Takes or renews the lease every third of its lifetime; when this process becomes the
    holder it wakes the singleton workers at once. Stopping releases the lease, so a clean
    shutdown hands over without waiting for the expiry."""

    def __init__(self, lease: Lease, followers: list[Worker]) -> None:
        super().__init__("lease", lease.ttl / 3, self._refresh, on_stop=lease.release)
        self.lease = lease
        self.followers = followers

    async def _refresh(self) -> int:
        before = self.lease.held
        held = await self.lease.refresh()
        if held and not before:
            for w in self.followers:
                w.wake.set()
        return 0


class LeasedServiceWorker(ServiceWorker):
    """A long-running service (the Lightning listener) run only while ``lease`` is held:
    started when this process becomes the holder, cancelled when it stops being it."""

    def __init__(self, name: str, service: Any, lease: Lease, poll: float = 0.5) -> None:
        super().__init__(name, service)
        self.lease = lease
        self._poll = poll

    def start(self) -> None:
        self._task = asyncio.create_task(self._guard(), name=f"worker:{self.name}")

    async def _guard(self) -> None:
        while True:
            while not self.lease.held:
                await asyncio.sleep(self._poll)
            run = asyncio.create_task(self._service.run(), name=f"service:{self.name}")
            try:
                while self.lease.held and not run.done():
                    await asyncio.wait({run}, timeout=self._poll)
            finally:
                run.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await run
            if not self.lease.held:
                log.warning("service_standby", worker=self.name, lease=self.lease.name)


WAKE_CHANNEL = "satvault_work"


class WakeListener:
    """``LISTEN satvault_work`` on a connection of its own (PostgreSQL): a statement inserting
    withdrawals, Lightning payments or webhook deliveries sends the table's name when it
    commits (triggers of migration 0027), in whichever process or host, and this sets the
    wake events registered for it. A missed notification (the connection dropped) only
    delays the work to the workers' next tick; after a reconnection every target is woken."""

    def __init__(self, engine: Any, targets: dict[str, list[asyncio.Event]]) -> None:
        self.engine = engine
        self.targets = targets
        self.runs = 0
        self.last_error: str | None = None

    def _on(self, _connection: Any, _pid: int, _channel: str, payload: str) -> None:
        for wake in self.targets.get(payload, ()):
            wake.set()

    async def run(self) -> None:
        delay = 0.5
        while True:
            try:
                async with self.engine.connect() as conn:
                    driver = (await conn.get_raw_connection()).driver_connection
                    await driver.add_listener(WAKE_CHANNEL, self._on)
                    try:
                        for wakes in self.targets.values():
                            for wake in wakes:
                                wake.set()
                        self.runs += 1
                        self.last_error = None
                        delay = 0.5
                        while not driver.is_closed():
                            await asyncio.sleep(1.0)
                    finally:
                        with contextlib.suppress(Exception):
                            await driver.remove_listener(WAKE_CHANNEL, self._on)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.last_error = f"{type(exc).__name__}: {exc}"
                log.warning("wake_listener_reconnect", error=type(exc).__name__,
                            in_seconds=delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 30.0)


def chain_watcher_worker(watcher: Watcher, interval: float) -> Worker:
    async def tick() -> int:
        r = await watcher.step()
        return r.new_payments + r.ledger_moves + r.conflicted + r.disconnected

    return Worker("chain-watcher", interval, tick)


def payout_worker(job: PayoutJob, interval: float) -> Worker:
    async def tick() -> int:
        r = await job.step()
        return r.batched + r.signed + r.broadcast + r.confirmed + r.abandoned + r.stuck \
            + r.rebroadcast

    return Worker("payouts", interval, tick)


def custody_worker(sweeps: SweepPlanner, refills: RefillPlanner, reconciler: Reconciler,
                   interval: float) -> Worker:
    """Plans sweeps of deposit coins into the semi-cold and cold wallets (the payout worker
    signs, broadcasts and books them), raises a refill for the cold cosigners when semi-cold
    is under its floor, and, on each new block, runs the three-way reconciliation
    (:mod:`satvault.reconcile`)."""
    async def tick() -> int:
        # Each step runs whatever the others did (found from outside: a refill pass that
        # raised skipped the on-block reconciliation, tick after tick); the first failure is
        # the tick's, the others are logged.
        done, failed = 0, list[Exception]()
        for name, step in (("sweeps", sweeps.step), ("refills", refills.step),
                           ("reconciliation", reconciler.step)):
            try:
                result = await step()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if failed:
                    log.exception("custody_step_failed", step=name)
                failed.append(exc)
                continue
            done += int(getattr(result, "batch_id", None) is not None)
        if failed:
            raise failed[0]
        return done

    return Worker("custody", interval, tick)


def lightning_payer_worker(payer: LightningPayer, interval: float) -> Worker:
    async def tick() -> int:
        # Starts the due sends as their own tasks and returns: a payment held by its
        # receiver never delays the next tick's payments.
        return (await payer.dispatch()).started

    return Worker("lightning-payer", interval, tick, on_stop=payer.close)


def address_expiry_worker(sessions: async_sessionmaker[AsyncSession], interval: float
                          ) -> Worker:
    return Worker("address-expiry", interval,
                  lambda: retrying(sessions, lambda s: expire_addresses(s)))


def idempotency_purge_worker(sessions: async_sessionmaker[AsyncSession], interval: float,
                             *, stale_seconds: float) -> Worker:
    """Deletes expired idempotency keys, a batch per transaction until none is left (every
    process runs it: two deleting the same rows is harmless)."""
    stale = timedelta(seconds=stale_seconds)

    async def tick() -> int:
        total = 0
        while done := await retrying(sessions, lambda s: purge_expired(
                s, now=utcnow(), stale=stale)):
            total += done
        return total

    return Worker("idempotency-purge", interval, tick)


def audit_worker(sessions: async_sessionmaker[AsyncSession], interval: float) -> Worker:
    """Seals new audit rows and ledger transfers into the hash chain (satvault.audit). The
    fence waits at most one interval for transactions still open; the next tick retries."""
    async def tick() -> int:
        done = await seal(sessions, fence_timeout=interval)
        return done.rows

    return Worker("audit", interval, tick)


def hold_expiry_worker(sessions: async_sessionmaker[AsyncSession], interval: float) -> Worker:
    """Expires ledger holds past their timeout, then withdraw vouchers past their expiry
    (releasing their holds, which have no timeout of their own)."""
    async def tick() -> int:
        holds = await retrying(sessions, lambda s: expire_due_holds(s))
        return holds + await retrying(sessions, lambda s: expire_vouchers(s))

    return Worker("hold-expiry", interval, tick)


def approval_expiry_worker(sessions: async_sessionmaker[AsyncSession], interval: float
                           ) -> Worker:
    """Cancels withdrawals whose approval window closed and releases their holds."""
    return Worker("withdrawal-approvals", interval,
                  lambda: retrying(sessions, lambda s: expire_due_approvals(s)))


class WebhookWorker(Worker):
    """:meth:`WebhookDispatcher.step` on a tick, woken as soon as a transaction that queued
    webhook deliveries (or asked for a redelivery) commits in this process; other processes'
    deliveries are found at the next tick. Events no webhook subscribed to do not wake it:
    under load that would be one scheduling query per commit for nothing."""

    def __init__(self, dispatcher: WebhookDispatcher, interval: float) -> None:
        super().__init__("webhooks", interval, dispatcher.step)
        self.dispatcher = dispatcher
        self._unsubscribe = notifier.subscribe(self.wake.set, deliveries_only=True)

    async def stop(self) -> None:
        self._unsubscribe()
        await super().stop()
        await self.dispatcher.aclose()


def webhook_worker(dispatcher: WebhookDispatcher, interval: float = 2.0) -> WebhookWorker:
    return WebhookWorker(dispatcher, interval)


class EventRelayWorker(Worker):
    """:meth:`EventRelay.tick` (outbox → NATS JetStream) on a tick, woken as soon as a
    transaction that wrote an event commits in this process; other processes' events are
    found at the next tick. A singleton (:func:`singleton`): it relays only while this
    process holds the workers' lease. Stopping closes its NATS connection."""

    def __init__(self, relay: EventRelay, interval: float) -> None:
        super().__init__("event-relay", interval, relay.tick, on_stop=relay.close)
        self.relay = relay
        self._unsubscribe = notifier.subscribe(self.wake.set)

    async def stop(self) -> None:
        self._unsubscribe()
        await super().stop()


def event_relay_worker(relay: EventRelay, interval: float = 1.0) -> EventRelayWorker:
    return EventRelayWorker(relay, interval)


class StreamConsumerWorker(Worker):
    """A :class:`DurableConsumer` driven as a worker: each tick long-polls the stream for up
    to ``poll`` seconds and handles what arrives, and comes straight back while there is more.
    After a failure (NATS unreachable, a handler's error) it waits ``retry`` seconds."""

    def __init__(self, name: str, consumer: DurableConsumer, *, poll: float = 1.0,
                 retry: float = 2.0, batch: int = 200) -> None:
        super().__init__(name, 0.01, self._step, on_stop=consumer.stop)
        self.consumer = consumer
        self._poll, self._retry, self._batch = poll, retry, batch

    async def _step(self) -> int:
        try:
            done = await self.consumer.step(batch=self._batch, timeout=self._poll)
        except Exception:
            await asyncio.sleep(self._retry)
            raise
        return done


def stream_consumer_worker(name: str, consumer: DurableConsumer, *, poll: float = 1.0
                           ) -> StreamConsumerWorker:
    return StreamConsumerWorker(name, consumer, poll=poll)
