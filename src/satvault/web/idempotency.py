"""``Idempotency-Key`` for POSTs that move money or create objects, stored in the database so
the guarantee holds across processes and restarts.

* same key, same body → the stored response is replayed (status and body);
* same key, different body → 422;
* same key while the first request is still running → 409;
* keys live ``TTL`` (24 h) at least.

The key is claimed in its own transaction first (so a concurrent twin sees it and gets 409),
then the work and the stored response commit *together*: a crash can never leave work done
without its response recorded. A claim left ``running`` by a crashed process is taken over
after ``STALE``; that is safe because the work itself never committed.
Domain errors (4xx) are stored and replayed like successes; unexpected errors release the
key so the client can retry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.accounts.errors import AccountsError, InvalidInput
from satvault.db import utcnow
from satvault.idempotency_models import IdempotencyKey

__all__ = ["STALE", "TTL", "IdempotencyConflict", "IdempotencyInProgress", "run_idempotent"]

TTL = timedelta(hours=24)
STALE = timedelta(seconds=60)


class IdempotencyConflict(AccountsError):
    """The key was used before with a different request body."""


class IdempotencyInProgress(AccountsError):
    """The first request with this key is still running."""


async def _claim(sessions: async_sessionmaker[AsyncSession], owner: str, key: str,
                 digest: str) -> JSONResponse | None:
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
                                     status="running", created_at=now, expires_at=now + TTL))
                return None
            if row.request_hash != digest:
                raise IdempotencyConflict(
                    "this Idempotency-Key was used with a different request body")
            if row.status == "done":
                resp = JSONResponse(json.loads(row.response_body or "null"),
                                    status_code=row.response_status or 200)
                resp.headers["Idempotent-Replayed"] = "true"
                if (row.response_status or 200) >= 400:
                    resp.media_type = "application/problem+json"
                    resp.headers["content-type"] = "application/problem+json"
                return resp
            if row.created_at > now - STALE:
                raise IdempotencyInProgress(
                    "a request with this Idempotency-Key is still being processed")
            row.created_at = now  # take over a claim abandoned by a crashed process
            return None
    except IntegrityError as exc:  # a concurrent twin inserted the claim first
        raise IdempotencyInProgress(
            "a request with this Idempotency-Key is still being processed") from exc


async def _finish(session: AsyncSession, owner: str, key: str, status: int, body: Any) -> None:
    done = await session.execute(update(IdempotencyKey).where(
        IdempotencyKey.owner == owner, IdempotencyKey.key == key
    ).values(status="done", response_status=status,
             response_body=json.dumps(jsonable_encoder(body))))
    if done.rowcount != 1:  # type: ignore[attr-defined]
        raise RuntimeError(f"the claim of Idempotency-Key {key!r} vanished")


async def run_idempotent(
    request: Request, *, owner: str, key: str | None,
    work: Callable[[AsyncSession], Awaitable[tuple[int, Any]]],
) -> JSONResponse:
    from satvault.web.problems import problem_for

    if not key:
        raise InvalidInput("this endpoint requires an Idempotency-Key header")
    if len(key) > 200:
        raise InvalidInput("an Idempotency-Key is at most 200 characters")
    body = await request.body()
    digest = hashlib.sha256(request.method.encode() + b" " + request.url.path.encode()
                            + b"\n" + body).hexdigest()
    sessions: async_sessionmaker[AsyncSession] = request.app.state.sessions
    replay = await _claim(sessions, owner, key, digest)
    if replay is not None:
        return replay
    try:
        async with sessions() as s, s.begin():
            status, payload = await work(s)
            await _finish(s, owner, key, status, payload)
        return JSONResponse(jsonable_encoder(payload), status_code=status)
    except Exception as exc:
        mapped = problem_for(exc)
        async with sessions() as s, s.begin():
            if mapped is not None and mapped.status_code < 500:
                await _finish(s, owner, key, mapped.status_code, json.loads(bytes(mapped.body)))
            else:
                await s.execute(delete(IdempotencyKey).where(
                    IdempotencyKey.owner == owner, IdempotencyKey.key == key))
        raise
