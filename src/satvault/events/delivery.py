"""Webhook delivery: from ``webhook_deliveries`` rows to signed HTTP POSTs, with retries.

Every state lives in the database, so a restart (or a second server) picks up where the last
one stopped. :meth:`WebhookDispatcher.step` looks for endpoints whose next delivery is due and
starts one *drain* task per endpoint; a drain sends that endpoint's deliveries one at a time in
outbox order (strictly: a delivery waiting for its retry holds back the later ones, so a
receiver never sees ``invoice.settled`` before the ``invoice.processing`` it follows). Drains
of different endpoints run concurrently and ``step`` never waits for them, so one slow or
failing endpoint never delays another's events. A merchant's endpoints (all its stores') hold
at most ``max_endpoints_per_merchant`` of the process's ``max_endpoints`` drains at once (found
from outside: one merchant with 220 webhooks answering after 9.5 s took every drain, and
another tenant's events waited 75 s).

One attempt:

1. *claim* (its own short transaction): ``attempts + 1`` and ``next_attempt_at`` pushed
   forward by a lease, on condition that it is still due; a concurrent dispatcher's claim
   fails the condition, and if this process dies mid-send the delivery is simply due again
   when the lease runs out (at-least-once; receivers dedupe on ``Satvault-Event-Id``);
2. the URL is checked again by the SSRF guard and the POST goes to the address just checked
   (no transaction is open meanwhile), redirects not followed, under an overall deadline;
3. *record*: a 2xx is ``succeeded``; anything else (3xx included) is ``failed`` with the next
   attempt at ``base * 2^(n-1)`` seconds (±10 % jitter, capped at an hour), or ``dead`` once
   the schedule has run for about a day; one ``webhook_attempts`` row logs the exchange.

The POST carries the delivery's body snapshot (the event envelope) and the headers
``Satvault-Signature`` (:mod:`satvault.events.signing`), ``Satvault-Event-Id``,
``Satvault-Event-Type`` and ``Satvault-Delivery-Id``.

The signature is made with the webhook's secret and, until its overlap ends, the one a rotation
replaced (two ``v1=`` entries). Sealed secrets are opened just before signing, outside any
transaction, and kept in no log. The claim also tidies the webhook row: a previous secret past
its overlap is dropped, and with a key set a secret still stored in clear is sealed.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Sequence
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta
from functools import partial
from itertools import takewhile
from typing import Any, cast

import httpx
from sqlalchemy import CursorResult, Table, and_, func, insert, literal_column, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault import __version__
from satvault.accounts.models import Store
from satvault.db import utcnow
from satvault.events.errors import InvalidWebhook
from satvault.events.models import (
    SECRET_PURPOSE,
    WAITING,
    DeliveryStatus,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from satvault.events.outbox import mark_changed
from satvault.events.signing import SIGNATURE_HEADER, sign
from satvault.events.ssrf import RESOLVE_TIMEOUT, CheckedUrl, check
from satvault.kernel.errors import NotFound
from satvault.kernel.retrying import retrying
from satvault.kernel.sealing import SealedSecretUnavailable, Sealer
from satvault.kernel.tls import default_context
from satvault.logs import get_logger

__all__ = ["USER_AGENT", "WebhookDispatcher", "attempts_within", "backoff_delay",
           "redeliver"]

log = get_logger(__name__)
deliveries_t = cast(Table, WebhookDelivery.__table__)
attempts_t = cast(Table, WebhookAttempt.__table__)
webhooks_t = cast(Table, Webhook.__table__)
stores_t = cast(Table, Store.__table__)
USER_AGENT = f"satvault-webhooks/{__version__}"
EXCERPT_BYTES = 1024
_MAX_EXPONENT = 40  # 2**40 times any sane base is far past any cap; avoids float overflow


def _waiting(table: Any) -> Any:
    # models.WAITING_SQL with literal values, not bound parameters, so that both planners can
    # use the partial index on it.
    return table.c.status.in_([literal_column(f"'{s}'") for s in WAITING])


def backoff_delay(attempt: int, *, base: float = 10.0, cap: float = 3600.0,
                  jitter: float = 0.1, rng: random.Random | None = None) -> float:
    """Seconds to wait after the ``attempt``-th failed attempt (1-based): ``base * 2^(n-1)``
    capped at ``cap``, times a random factor in ``[1 - jitter, 1 + jitter]`` so that many
    deliveries failing together do not all come back at the same instant."""
    raw = min(cap, base * 2 ** min(max(attempt - 1, 0), _MAX_EXPONENT))
    factor = (rng or random).uniform(1 - jitter, 1 + jitter) if jitter else 1.0
    return float(raw * factor)


def attempts_within(span: timedelta, *, base: float = 10.0, cap: float = 3600.0) -> int:
    """How many attempts the (unjittered) schedule makes before ``span`` has passed since the
    first: with the defaults and 24 h, 33 attempts, the last about 24.4 h after the first."""
    elapsed, attempts = 0.0, 1
    while elapsed < span.total_seconds():
        elapsed += backoff_delay(attempts, base=base, cap=cap, jitter=0)
        attempts += 1
    return attempts


@dataclass(frozen=True, slots=True)
class _Claim:
    delivery_id: str
    webhook_id: str
    event_id: int
    event_type: str
    attempt: int
    url: str
    secret: str  # as stored: sealed when a key is set
    previous_secret: str | None  # as stored, while its overlap lasts
    body: str


@dataclass(frozen=True, slots=True)
class _Outcome:
    claim: _Claim
    started_at: datetime
    duration_ms: int
    request_headers: dict[str, str]
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status_code is not None \
            and 200 <= self.status_code < 300


@dataclass
class _Exchange:
    status_code: int | None = None
    excerpt: str | None = None
    error: str | None = None


@dataclass
class WebhookDispatcher:
    """Sends due webhook deliveries; call :meth:`step` periodically (see
    :func:`satvault.workers.webhook_worker`) and :meth:`aclose` at shutdown.

    ``rng`` is a seam for tests (time comes from the process clock,
    :mod:`satvault.kernel.clock`); ``max_concurrency_per_endpoint`` above 1 sends
    that many of an endpoint's due deliveries at once, which gives up the ordering guarantee.
    """

    sessions: async_sessionmaker[AsyncSession]
    _: KW_ONLY
    environment: str
    http: httpx.AsyncClient | None = None
    max_concurrency_per_endpoint: int = 1
    timeout: float = 10.0
    backoff_base: float = 10.0
    backoff_cap: float = 3600.0
    jitter: float = 0.1
    give_up_after: timedelta = timedelta(hours=24)
    max_attempts: int | None = None
    max_endpoints: int = 200
    max_endpoints_per_merchant: int = 20
    rng: random.Random = field(default_factory=random.Random)
    sealer: Sealer = field(default_factory=Sealer)  # opens sealed webhook secrets
    attempted: int = field(default=0, init=False)  # attempts made by this instance
    _tasks: dict[str, asyncio.Task[None]] = field(default_factory=dict, init=False)
    _merchant_of: dict[str, str] = field(default_factory=dict, init=False)  # running drains
    _own_http: bool = field(default=False, init=False)
    _closed: bool = field(default=False, init=False)

    def __post_init__(self) -> None:
        if self.max_concurrency_per_endpoint < 1:
            raise ValueError("max_concurrency_per_endpoint must be at least 1")
        if self.max_endpoints_per_merchant < 1:
            raise ValueError("max_endpoints_per_merchant must be at least 1")
        if self.max_attempts is None:
            self.max_attempts = attempts_within(self.give_up_after, base=self.backoff_base,
                                                cap=self.backoff_cap)
        if self.http is None:
            # No keep-alive: connections are made to a pinned address with a per-webhook SNI,
            # and a pooled connection must never be reused for another webhook's host name.
            self.http = httpx.AsyncClient(
                follow_redirects=False, trust_env=False, timeout=self.timeout,
                verify=default_context(trust_env=False),
                limits=httpx.Limits(max_keepalive_connections=0))
            self._own_http = True

    @property
    def lease(self) -> timedelta:
        """How long a claimed delivery stays invisible to other dispatchers."""
        return timedelta(seconds=self.timeout + RESOLVE_TIMEOUT + 60)

    @property
    def busy_endpoints(self) -> int:
        return len(self._tasks)

    # ------------------------------------------------------------------------ scheduling

    async def step(self) -> int:
        """Start draining every endpoint with a due delivery that is not being drained
        already; returns how many drains it started (it does not wait for them)."""
        if self._closed:
            return 0
        free = self.max_endpoints - len(self._tasks)
        if free <= 0:
            return 0
        busy = set(self._tasks)
        running: dict[str, int] = {}
        for merchant in self._merchant_of.values():
            running[merchant] = running.get(merchant, 0) + 1
        full = {m for m, n in running.items() if n >= self.max_endpoints_per_merchant}
        due = await retrying(self.sessions,
                             lambda s: self._due_endpoints(s, busy, free, full))
        started = 0
        for webhook_id, merchant in due:
            if started >= free or running.get(merchant, 0) >= self.max_endpoints_per_merchant:
                continue  # its merchant's share is taken: a later step, once one ends
            running[merchant] = running.get(merchant, 0) + 1
            task = asyncio.create_task(self._drain(webhook_id), name=f"webhook:{webhook_id}")
            self._tasks[webhook_id] = task
            self._merchant_of[webhook_id] = merchant
            task.add_done_callback(partial(self._finished, webhook_id))
            started += 1
        return started

    async def wait_idle(self) -> None:
        """Wait until no drain is running."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def run_once(self) -> int:
        """:meth:`step`, then wait for the drains; returns the attempts made meanwhile."""
        before = self.attempted
        await self.step()
        await self.wait_idle()
        return self.attempted - before

    async def aclose(self) -> None:
        """Stop: cancel running drains (their claims expire and are retried) and close."""
        self._closed = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._own_http and self.http is not None:
            await self.http.aclose()

    def _finished(self, webhook_id: str, task: asyncio.Task[None]) -> None:
        if self._tasks.get(webhook_id) is task:
            del self._tasks[webhook_id]
            self._merchant_of.pop(webhook_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("webhook_drain_failed", webhook_id=webhook_id, exc_info=task.exception())

    async def _due_endpoints(self, session: AsyncSession, busy: set[str], limit: int,
                             full: set[str]) -> list[tuple[str, str]]:
        """(webhook, merchant) of up to ``limit`` endpoints with a due delivery at the head of
        their queue, oldest first, none of a merchant in ``full`` nor being drained."""
        now = utcnow()
        head = deliveries_t.alias("head")
        earliest = (select(func.min(head.c.event_id))
                    .where(head.c.webhook_id == deliveries_t.c.webhook_id, _waiting(head))
                    .scalar_subquery())
        # Each merchant's oldest few only (its share), so the limit is spent across tenants.
        rank = func.row_number().over(partition_by=stores_t.c.merchant_id,
                                      order_by=deliveries_t.c.next_attempt_at)
        heads = (
            select(deliveries_t.c.webhook_id, stores_t.c.merchant_id,
                   deliveries_t.c.next_attempt_at, rank.label("rank"))
            .join(webhooks_t, and_(webhooks_t.c.id == deliveries_t.c.webhook_id,
                                   webhooks_t.c.enabled.is_(True)))
            .join(stores_t, stores_t.c.id == webhooks_t.c.store_id)
            .where(_waiting(deliveries_t), deliveries_t.c.next_attempt_at <= now,
                   deliveries_t.c.event_id == earliest)
        )
        if busy:
            heads = heads.where(deliveries_t.c.webhook_id.not_in(sorted(busy)))
        if full:
            heads = heads.where(stores_t.c.merchant_id.not_in(sorted(full)))
        h = heads.subquery("heads")
        stmt = (select(h.c.webhook_id, h.c.merchant_id)
                .where(h.c.rank <= self.max_endpoints_per_merchant)
                .order_by(h.c.next_attempt_at).limit(limit))
        rows = (await session.execute(stmt)).all()
        return list(dict.fromkeys((str(r.webhook_id), str(r.merchant_id)) for r in rows))

    async def _drain(self, webhook_id: str) -> None:
        while not self._closed:
            claims = await retrying(self.sessions, lambda s: self._claim(s, webhook_id))
            if not claims:
                return
            outcomes = await asyncio.gather(*(self._attempt(c) for c in claims))
            await retrying(self.sessions, partial(self._record, outcomes=outcomes))
            self.attempted += len(outcomes)

    async def _claim(self, session: AsyncSession, webhook_id: str) -> list[_Claim]:
        now = utcnow()
        hook = (await session.execute(
            select(webhooks_t.c.url, webhooks_t.c.secret, webhooks_t.c.enabled,
                   webhooks_t.c.previous_secret, webhooks_t.c.previous_secret_expires_at)
            .where(webhooks_t.c.id == webhook_id)
        )).first()
        if hook is None or not hook.enabled:
            return []
        secret, previous = await self._tidy(session, webhook_id, hook, now)
        window = (await session.execute(
            select(deliveries_t.c.id, deliveries_t.c.event_id, deliveries_t.c.event_type,
                   deliveries_t.c.next_attempt_at, deliveries_t.c.request_body)
            .where(deliveries_t.c.webhook_id == webhook_id, _waiting(deliveries_t))
            .order_by(deliveries_t.c.event_id)
            .limit(self.max_concurrency_per_endpoint)
        )).all()
        claims: list[_Claim] = []
        for row in takewhile(lambda r: r.next_attempt_at <= now, window):
            attempt = (await session.execute(
                update(deliveries_t)
                .where(deliveries_t.c.id == row.id, _waiting(deliveries_t),
                       deliveries_t.c.next_attempt_at <= now)
                .values(attempts=deliveries_t.c.attempts + 1,
                        next_attempt_at=now + self.lease, updated_at=now)
                .returning(deliveries_t.c.attempts)
            )).scalar_one_or_none()
            if attempt is None:
                break  # someone else holds it; never overtake it
            claims.append(_Claim(row.id, webhook_id, row.event_id, row.event_type, attempt,
                                 hook.url, secret, previous, row.request_body))
        return claims

    async def _tidy(self, session: AsyncSession, webhook_id: str, hook: Any,
                    now: datetime) -> tuple[str, str | None]:
        """The secrets to sign with (as stored); drops an expired previous secret and seals
        a plain one when a key is set, in the claim's transaction."""
        changes: dict[str, Any] = {}
        previous = hook.previous_secret
        expires = hook.previous_secret_expires_at
        if previous is not None and (expires is None or expires <= now):
            previous = changes["previous_secret"] = None
            changes["previous_secret_expires_at"] = None
        secret = hook.secret
        if self.sealer.sealing:
            if not self.sealer.is_sealed(secret):
                secret = changes["secret"] = self.sealer.seal(
                    secret, purpose=SECRET_PURPOSE, row=webhook_id)
            if previous is not None and not self.sealer.is_sealed(previous):
                previous = changes["previous_secret"] = self.sealer.seal(
                    previous, purpose=SECRET_PURPOSE, row=webhook_id)
        if changes:
            # On condition that nobody rotated meanwhile (then the next claim tidies).
            await session.execute(update(webhooks_t).where(
                webhooks_t.c.id == webhook_id, webhooks_t.c.secret == hook.secret
            ).values(**changes))
        return secret, previous

    def _signature(self, claim: _Claim, timestamp: int, body: bytes) -> str:
        def opened(stored: str) -> str:
            return self.sealer.open(stored, purpose=SECRET_PURPOSE, row=claim.webhook_id)

        also = () if claim.previous_secret is None else (opened(claim.previous_secret),)
        return sign(opened(claim.secret), timestamp, body, also=also)

    # --------------------------------------------------------------------------- sending

    async def _attempt(self, claim: _Claim) -> _Outcome:
        started_at = utcnow()
        started = time.monotonic()
        body = claim.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            # The answer is only logged (its first KiB): never inflated first.
            "Accept-Encoding": "identity",
            "User-Agent": USER_AGENT,
            "Satvault-Event-Id": str(claim.event_id),
            "Satvault-Event-Type": claim.event_type,
            "Satvault-Delivery-Id": claim.delivery_id,
        }
        try:
            headers[SIGNATURE_HEADER] = self._signature(claim, int(started_at.timestamp()),
                                                        body)
            checked = await check(claim.url, environment=self.environment)
        except SealedSecretUnavailable as exc:
            exchange = _Exchange(error=f"not sent, cannot sign: {exc}")
        except InvalidWebhook as exc:
            exchange = _Exchange(error=f"refused before sending: {exc}")
        else:
            exchange = await self._post(checked, headers, body)
        code = exchange.status_code
        if exchange.error is None and code is not None and 300 <= code < 400:
            exchange.error = f"HTTP {code}: redirects are not followed"
        return _Outcome(claim, started_at, int((time.monotonic() - started) * 1000), headers,
                        code, exchange.excerpt, exchange.error)

    async def _post(self, checked: CheckedUrl, headers: dict[str, str],
                    body: bytes) -> _Exchange:
        assert self.http is not None
        extensions: dict[str, Any] = {}
        if checked.url.scheme == "https":
            extensions["sni_hostname"] = checked.hostname  # also the certificate's name
        failure = _Exchange(error="no address to connect to")
        try:
            async with asyncio.timeout(self.timeout):
                for address in checked.addresses:
                    request = self.http.build_request(
                        "POST", checked.pinned(address), content=body,
                        headers={**headers, "Host": checked.host_header},
                        extensions=extensions)
                    try:
                        response = await self.http.send(request, stream=True,
                                                        follow_redirects=False)
                    except httpx.ConnectError as exc:
                        failure = _Exchange(error=f"cannot connect to {address}: {exc}")
                        continue  # the next checked address, if any
                    try:
                        return _Exchange(response.status_code, await _excerpt(response))
                    finally:
                        await response.aclose()
        except (TimeoutError, httpx.TimeoutException):
            return _Exchange(error=f"no answer within {self.timeout:g} s")
        except httpx.HTTPError as exc:
            return _Exchange(error=f"{type(exc).__name__}: {exc}"[:500])
        return failure

    # ------------------------------------------------------------------------- recording

    async def _record(self, session: AsyncSession, *, outcomes: Sequence[_Outcome]) -> None:
        now = utcnow()
        assert self.max_attempts is not None
        for outcome in outcomes:
            claim = outcome.claim
            next_at: datetime | None = None
            if outcome.ok:
                status = DeliveryStatus.SUCCEEDED
            elif claim.attempt >= self.max_attempts:
                status = DeliveryStatus.DEAD
            else:
                status = DeliveryStatus.FAILED
                next_at = now + timedelta(seconds=backoff_delay(
                    claim.attempt, base=self.backoff_base, cap=self.backoff_cap,
                    jitter=self.jitter, rng=self.rng))
            result = cast(CursorResult[Any], await session.execute(
                update(deliveries_t)
                # A redelivery requested meanwhile reset the count: leave its reset alone.
                .where(deliveries_t.c.id == claim.delivery_id,
                       deliveries_t.c.attempts == claim.attempt)
                .values(status=status, next_attempt_at=next_at,
                        last_status_code=outcome.status_code, last_error=outcome.error,
                        last_duration_ms=outcome.duration_ms, updated_at=now)
            ))
            changed = result.rowcount == 1
            if not changed and (await session.execute(
                    select(deliveries_t.c.id).where(deliveries_t.c.id == claim.delivery_id)
            )).first() is None:
                continue  # the webhook was deleted meanwhile, its log with it
            await session.execute(insert(attempts_t), {
                "delivery_id": claim.delivery_id, "attempt": claim.attempt,
                "started_at": outcome.started_at, "duration_ms": outcome.duration_ms,
                "url": claim.url,
                "request_headers": json.dumps(_as_logged(outcome.request_headers)),
                "status_code": outcome.status_code, "response_excerpt": outcome.excerpt,
                "error": outcome.error, "next_attempt_at": next_at if changed else None,
            })
            if status == DeliveryStatus.DEAD and changed:
                log.warning("webhook_delivery_dead", delivery_id=claim.delivery_id,
                            webhook_id=claim.webhook_id, attempts=claim.attempt)


def _as_logged(headers: dict[str, str]) -> dict[str, str]:
    """The request's headers as the attempt log keeps them: the signature's ``v1=`` values
    left out, its time kept (found from outside: a key that may only read a store saw valid
    signatures in the log, and could send a delivery again within the receiver's 5 minutes)."""
    signature = headers.get(SIGNATURE_HEADER)
    if signature is None:
        return headers
    parts = [p if not p.startswith("v1=") else "v1=(not logged)" for p in signature.split(",")]
    return {**headers, SIGNATURE_HEADER: ",".join(parts)}


async def _excerpt(response: httpx.Response) -> str | None:
    """The first KiB of the answer, for the log; the rest is not read. Read as it came
    (a compressed answer, though it was not asked for, is not inflated: a few KiB can
    become megabytes), and made text a database can store (no NUL; invalid UTF-8 replaced),
    whatever the endpoint sent."""
    data = bytearray()
    try:
        async for chunk in response.aiter_raw():
            data += chunk
            if len(data) >= EXCERPT_BYTES:
                break
    except httpx.StreamConsumed:  # a transport that hands over answers already read
        data = bytearray(response.content[:EXCERPT_BYTES])
    text = bytes(data[:EXCERPT_BYTES]).decode("utf-8", errors="replace")
    return text.replace("\0", "\ufffd") or None


async def redeliver(session: AsyncSession, delivery_id: str, *,
                    now: datetime | None = None) -> WebhookDelivery:
    """Queue a delivery again, now, with a fresh retry schedule (whatever its status; the
    attempt log keeps its history). Does not commit."""
    delivery = await session.get(WebhookDelivery, delivery_id, with_for_update=True)
    if delivery is None:
        raise NotFound(f"webhook delivery {delivery_id!r} not found")
    now = now or utcnow()
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = now
    delivery.updated_at = now
    await session.flush()
    mark_changed(session)
    return delivery

