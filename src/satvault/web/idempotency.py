"""``Idempotency-Key`` for POSTs that move money or create objects, stored in the database so
the guarantee holds across processes and restarts.

* same key, same body → the stored response is replayed (status and body);
* same key, different body → 422;
* same key while the first request is still running → 409;
* keys live ``TTL`` (24 h) at least.

The key is claimed in its own transaction first (so a concurrent twin sees it and gets 409).
A claim is *owned*: it carries a random token, and the request holding it refreshes a
heartbeat while it runs. Only a claim whose heartbeat stopped for ``idempotency_stale_seconds``
(its process is gone, not merely slow) may be taken over, and the finishing UPDATE checks the
token, so an owner that lost its claim anyway (a process frozen past the stale window) rolls
its whole transaction back instead of committing a second time.

Remote work (resolving an LNURL, asking a node for an invoice, fetching a rate) runs in
``prepare``, after the claim and *before* the unit of work opens: no database lock or SQLite's
one writer is held across a network call. Then the work and the stored response commit
together, retried from scratch on a serialisation conflict: a crash can never leave work done
without its response recorded. Domain errors (4xx) are stored and replayed like successes;
unexpected errors release the key so the client can retry.

*One transaction* (``repeatable_prepare=True``), for requests whose remote preparation is
harmless to repeat (a store invoice: a BOLT11 nobody pays simply expires; an internal
payment: cancelling our own invoice on our node twice changes nothing). There is no claim:
``prepare`` runs first, then the work and the key row, inserted complete with its response,
commit together in one transaction. The unique constraint on (owner, key) decides between
twins: a concurrent twin's INSERT waits for the first (PostgreSQL) or for the one writer
(SQLite), conflicts, rolls its whole work back and replays the stored response. A key used
with another body still gets 422 and a replay still carries ``Idempotent-Replayed: true``;
domain errors are stored too (in a transaction of their own). What is lost is only that a
replay repeats ``prepare`` before it finds the stored response (and a twin racing the first
answer waits instead of getting 409). Requests whose remote work must not run twice (paying a
node, refunding through LNURL) keep the owned claim.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import math
import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import ColumnElement, bindparam, delete, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.db import utcnow
from satvault.idempotency_models import IdempotencyKey, IdempotencyStatus
from satvault.kernel.errors import InvalidInput, SatvaultError
from satvault.kernel.grouped import GroupedUnits
from satvault.kernel.retrying import is_retryable, retrying
from satvault.logs import get_logger

__all__ = ["TTL", "IdempotencyClaimLost", "IdempotencyConflict", "IdempotencyInProgress",
           "PrepareAgain", "key_used", "run_idempotent"]

log = get_logger(__name__)
TTL = timedelta(hours=24)


class IdempotencyConflict(SatvaultError):
    """The key was used before with a different request body."""


class IdempotencyInProgress(SatvaultError):
    """The first request with this key is still running; ``retry_after``: the seconds until
    a claim whose process stopped may be taken over (``Retry-After`` on the 409)."""

    def __init__(self, message: str, *, retry_after: int = 1) -> None:
        super().__init__(message)
        self.retry_after = max(1, retry_after)


class IdempotencyClaimLost(SatvaultError):
    """This request's claim was taken over while it ran; its work was rolled back."""


class PrepareAgain(Exception):
    """Raised by ``work`` (one-transaction mode) when something ``prepare`` relied on has
    changed since: the transaction rolls back and ``prepare`` runs again."""


class _KeyTaken(Exception):
    """The key row exists already (one-transaction mode): the work must not commit."""


def key_used(owner: str | ColumnElement[str], key: str | ColumnElement[str]
             ) -> ColumnElement[bool]:
    """Whether a row for this key exists, as a column a route can fold into its first read
    (to choose the one-transaction mode only for a key never seen: a replay then finds its
    stored response without running ``prepare`` again). Owner and key as values, or as
    bound parameters (a read built once)."""
    return select(IdempotencyKey.id).where(IdempotencyKey.owner == owner,
                                           IdempotencyKey.key == key).exists()


def _encode(body: Any) -> str:
    """The response body as JSON text, encoded once: stored with the key and sent as it is
    (Starlette's own settings, so a replay is byte for byte the first answer)."""
    return json.dumps(body, ensure_ascii=False, allow_nan=False, separators=(",", ":"),
                      default=jsonable_encoder)


class _Encoded(JSONResponse):
    """A JSON response whose body is text encoded already (by :func:`_encode`)."""

    def render(self, content: Any) -> bytes:
        return str(content).encode("utf-8")


def _replay(row: IdempotencyKey) -> JSONResponse:
    resp = _Encoded(row.response_body or "null", status_code=row.response_status or 200)
    resp.headers["Idempotent-Replayed"] = "true"
    if (row.response_status or 200) >= 400:
        resp.media_type = "application/problem+json"
        resp.headers["content-type"] = "application/problem+json"
    return resp


async def _claim(sessions: async_sessionmaker[AsyncSession], owner: str, key: str,
                 digest: str, token: str, stale: timedelta) -> JSONResponse | None:
    now = utcnow()
    try:
        async with sessions() as s, s.begin():
            row = (await s.execute(select(IdempotencyKey).where(
                IdempotencyKey.owner == owner, IdempotencyKey.key == key
            ).with_for_update())).scalar_one_or_none()
            if row is not None and row.expires_at < now:
                await s.delete(row)
                await s.flush()
                row = None
            if row is None:
                s.add(IdempotencyKey(owner=owner, key=key, request_hash=digest,
                                     status=IdempotencyStatus.RUNNING, created_at=now,
                                     expires_at=now + TTL,
                                     claim_token=token, heartbeat_at=now))
                return None
            if row.request_hash != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body")
            if row.status == IdempotencyStatus.DONE:
                return _replay(row)
            alive_at = row.heartbeat_at or row.created_at
            if alive_at > now - stale:
                # Found from outside: after a crash mid-request the retry met this for a
                # minute with nothing saying when to come back.
                wait = math.ceil((alive_at + stale - now).total_seconds())
                raise IdempotencyInProgress(
                    "a request with this Idempotency-Key is still being processed (if the "
                    f"process that took it stopped, it can be taken over within {wait} s)",
                    retry_after=wait)
            # The owner stopped beating: its process is gone and its work never committed.
            row.claim_token, row.heartbeat_at = token, now
            return None
    except IntegrityError as exc:  # a concurrent twin inserted the claim first
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still being processed") from exc


def _ours(owner: str, key: str, token: str) -> Any:
    return ((IdempotencyKey.owner == owner) & (IdempotencyKey.key == key)
            & (IdempotencyKey.claim_token == token)
            & (IdempotencyKey.status == IdempotencyStatus.RUNNING))


async def _finish(session: AsyncSession, owner: str, key: str, token: str, status: int,
                  text: str) -> None:
    """Store the response (``text``: the body as :func:`_encode` gives it)."""
    done = await session.execute(update(IdempotencyKey).where(_ours(owner, key, token)).values(
        status=IdempotencyStatus.DONE, response_status=status, response_body=text))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise IdempotencyClaimLost(
            "this request's Idempotency-Key claim was taken over while it ran; nothing was "
            "done by it")


async def _heartbeat(sessions: async_sessionmaker[AsyncSession], owner: str, key: str,
                     token: str, every: float) -> None:
    while True:
        await asyncio.sleep(every)
        try:
            async with sessions() as s, s.begin():
                await s.execute(update(IdempotencyKey).where(_ours(owner, key, token))
                                .values(heartbeat_at=utcnow()))
        except Exception as exc:  # a missed beat is retried at the next one
            log.warning("idempotency_heartbeat_failed", error=type(exc).__name__)


# :func:`_record`'s INSERT, built once with bound parameters (every internal payment
# writes one).
_RECORD = insert(IdempotencyKey).values(**{
    name: bindparam(f"r_{name}", type_=IdempotencyKey.__table__.c[name].type)
    for name in ("owner", "key", "request_hash", "status", "response_status",
                 "response_body", "created_at", "expires_at")})


async def _record(session: AsyncSession, owner: str, key: str, digest: str, status: int,
                  text: str) -> None:
    """Insert the key row complete with its response (one-transaction mode; ``text`` as for
    :func:`_finish`)."""
    now = utcnow()
    try:
        await session.execute(_RECORD, {
            "r_owner": owner, "r_key": key, "r_request_hash": digest,
            "r_status": IdempotencyStatus.DONE, "r_response_status": status,
            "r_response_body": text, "r_created_at": now, "r_expires_at": now + TTL})
    except IntegrityError as exc:
        raise _KeyTaken from exc


async def _answer_for_taken(sessions: async_sessionmaker[AsyncSession], owner: str, key: str,
                            digest: str) -> JSONResponse | None:
    """What a request whose key row exists answers: the stored response, 422 for another
    body, 409 while an owned claim runs; None if the row expired (and is now gone) or went
    away meanwhile, so the request may run."""
    now = utcnow()
    async with sessions() as s, s.begin():
        row = (await s.execute(select(IdempotencyKey).where(
            IdempotencyKey.owner == owner, IdempotencyKey.key == key))).scalar_one_or_none()
        if row is None:
            return None
        if row.expires_at < now:
            await s.execute(delete(IdempotencyKey).where(
                IdempotencyKey.id == row.id, IdempotencyKey.expires_at < now))
            return None
        if row.request_hash != digest:
            raise IdempotencyConflict(
                "this Idempotency-Key was used with a different request body")
        if row.status == IdempotencyStatus.DONE:
            return _replay(row)
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still being processed")


async def _commit(sessions: async_sessionmaker[AsyncSession],
                  work: Callable[..., Awaitable[tuple[int, Any]]], prepared: Any, *,
                  with_prepared: bool,
                  record: Callable[[AsyncSession, int, str], Awaitable[None]],
                  group: tuple[GroupedUnits, str] | None = None) -> JSONResponse:
    """``work`` and its response, stored by ``record``, in one transaction (run again from
    scratch on a conflict); the answer is the stored bytes. ``group``: run it with the other
    units of that key waiting in this process, in one transaction (:mod:`satvault.kernel.
    grouped`)."""
    async def unit(s: AsyncSession) -> tuple[int, str]:
        status, payload = await (work(s, prepared) if with_prepared else work(s))
        text = _encode(payload)
        await record(s, status, text)
        return status, text

    if group is not None:
        units, key = group
        status, text = await units.run(key, unit)
    else:
        status, text = await retrying(sessions, unit)
    return _Encoded(text, status_code=status)


async def _after_rollback(session: AsyncSession, exc: Exception) -> None:
    """What a refusal must leave behind although its transaction rolled back (a risk
    rejection's decision and case), written with the stored refusal."""
    write = getattr(exc, "record_after_rollback", None)
    if write is not None:
        await write(session)


async def _run_in_one_transaction(
    sessions: async_sessionmaker[AsyncSession], *, owner: str, key: str, digest: str,
    work: Callable[..., Awaitable[tuple[int, Any]]],
    prepare: Callable[[], Awaitable[Any]] | None,
    group: tuple[GroupedUnits, str] | None = None,
) -> JSONResponse:
    from satvault.web.problems import problem_for

    for _ in range(4):
        try:
            prepared = await prepare() if prepare is not None else None
            return await _commit(
                sessions, work, prepared, with_prepared=prepare is not None,
                record=lambda s, status, text: _record(s, owner, key, digest, status, text),
                group=group)
        except PrepareAgain:
            continue
        except _KeyTaken:
            answer = await _answer_for_taken(sessions, owner, key, digest)
            if answer is not None:
                return answer
            continue  # an expired row was removed: run again
        except Exception as exc:
            # A replay that fails where the first request succeeded still gets the stored
            # answer; otherwise a domain error is stored (and replayed) like a success.
            answer = await _answer_for_taken(sessions, owner, key, digest)
            if answer is not None:
                return answer
            mapped = problem_for(exc)
            # An answer saying "try again in a moment" (``retry_after``: another payment of
            # this key or of the person still in flight) is not the key's answer: stored, it
            # was the answer of the first request still running too (found from outside).
            if mapped is not None and mapped.status_code < 500 and not is_retryable(exc) \
                    and getattr(exc, "retry_after", None) is None:
                try:
                    async with sessions() as s, s.begin():
                        await _after_rollback(s, exc)
                        await _record(s, owner, key, digest, mapped.status_code,
                                      bytes(mapped.body).decode("utf-8"))
                except _KeyTaken:
                    answer = await _answer_for_taken(sessions, owner, key, digest)
                    if answer is not None:
                        return answer
            raise
    raise IdempotencyInProgress("this request kept meeting concurrent changes; try again")


async def run_idempotent(
    request: Request, *, owner: str, key: str | None,
    work: Callable[..., Awaitable[tuple[int, Any]]],
    prepare: Callable[[], Awaitable[Any]] | None = None,
    repeatable_prepare: bool = False,
    group_key: str | None = None,
) -> JSONResponse:
    """Claim ``key``, run ``prepare()`` (remote calls, no transaction open), then
    ``work(session)`` — or ``work(session, prepared)`` when there is a ``prepare`` — in one
    transaction that also stores the response. With ``repeatable_prepare`` (``prepare`` is
    harmless to run twice), no claim: the key row is inserted with the work (see above).
    ``group_key`` (with ``repeatable_prepare``): the work is group-committed with the other
    requests of that key waiting in this process (the payments of one payer), when the app
    has a :class:`~satvault.kernel.grouped.GroupedUnits`."""
    from satvault.web.problems import problem_for

    if not key:
        raise InvalidInput("this endpoint requires an Idempotency-Key header")
    if len(key) > 200:
        raise InvalidInput("an Idempotency-Key is at most 200 characters")
    body = await request.body()
    digest = hashlib.sha256(request.method.encode() + b" " + request.url.path.encode()
                            + b"\n" + body).hexdigest()
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    if repeatable_prepare:
        units: GroupedUnits | None = getattr(request.app.state, "grouped_units", None)
        group = (units, group_key) if units is not None and group_key is not None else None
        return await _run_in_one_transaction(sessions, owner=owner, key=key, digest=digest,
                                             work=work, prepare=prepare, group=group)
    settings = request.app.state.settings
    token = secrets.token_hex(16)
    replay = await _claim(sessions, owner, key, digest, token,
                          timedelta(seconds=settings.idempotency_stale_seconds))
    if replay is not None:
        return replay
    beat = asyncio.create_task(_heartbeat(sessions, owner, key, token,
                                          settings.idempotency_heartbeat_seconds))
    try:
        prepared = await prepare() if prepare is not None else None
        return await _commit(
            sessions, work, prepared, with_prepared=prepare is not None,
            record=lambda s, status, text: _finish(s, owner, key, token, status, text))
    except IdempotencyClaimLost:
        raise  # the new owner answers for the key
    except Exception as exc:
        mapped = problem_for(exc)
        async with sessions() as s, s.begin():
            # A conflict (retryable: nothing was done) is not the key's answer: the same
            # request may run again.
            if mapped is not None and mapped.status_code < 500 and not is_retryable(exc):
                await _after_rollback(s, exc)
                with contextlib.suppress(IdempotencyClaimLost):
                    await _finish(s, owner, key, token, mapped.status_code,
                                  bytes(mapped.body).decode("utf-8"))
            else:
                await s.execute(delete(IdempotencyKey).where(_ours(owner, key, token)))
        raise
    finally:
        beat.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await beat
