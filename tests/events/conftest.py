"""Fixtures for the events tests: a store world with API keys, a fake resolver, a local webhook
receiver served by uvicorn on 127.0.0.1 in the test's own event loop, and the real app (the
clock is the root conftest's ``clock``)."""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import socket
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import httpx
import pytest
from fastapi import FastAPI

from satvault.accounts import service as acc
from satvault.config import Settings
from satvault.events.delivery import WebhookDispatcher
from satvault.events.jetstream import JetStream, StreamSettings
from satvault.events.service import create_webhook
from satvault.events.ssrf import check
from satvault.web.app import create_app
from tests.liveserver import serve

# ------------------------------------------------------------------------------ the world

@dataclass
class World:
    merchant: str
    other_merchant: str
    store: str
    sibling_store: str  # same merchant
    foreign_store: str  # other merchant
    keys: dict[str, str]

    def auth(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
async def world(sessions) -> World:
    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        m1 = await acc.create_merchant(s, name="Acme")
        m2 = await acc.create_merchant(s, name="Globex")
        s1 = await acc.create_store(s, merchant_id=m1.id, name="Acme shop")
        s2 = await acc.create_store(s, merchant_id=m1.id, name="Acme outlet")
        s3 = await acc.create_store(s, merchant_id=m2.id, name="Globex shop")
        keys = {}
        for name, owner, scopes in [
            ("admin", admin.id, ["admin"]),
            ("store", s1.id, ["webhooks:write"]),
            ("store_reader", s1.id, ["stores:read"]),
            ("store_weak", s1.id, ["wallet:read"]),
            ("sibling", s2.id, ["stores:write"]),
            ("merchant", m1.id, ["stores:write"]),
            ("foreign", s3.id, ["stores:write", "webhooks:write"]),
            ("foreign_merchant", m2.id, ["stores:write"]),
        ]:
            _, keys[name] = await acc.create_api_key(s, owner_id=owner, scopes=scopes)
    return World(m1.id, m2.id, s1.id, s2.id, s3.id, keys)


# ------------------------------------------------------------------------------ resolving

@pytest.fixture
async def fake_dns(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str] | None]:
    """Names → addresses for the event loop's getaddrinfo; other names resolve for real."""
    table: dict[str, list[str] | None] = {}  # None: the name does not exist
    loop = asyncio.get_running_loop()
    real = loop.getaddrinfo

    async def getaddrinfo(host: Any, port: Any, *args: Any, **kwargs: Any) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else host
        if name in table:
            if table[name] is None:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            out = []
            for address in table[name]:
                family = socket.AF_INET6 if ":" in address else socket.AF_INET
                sockaddr = (address, int(port or 0), 0, 0) if ":" in address \
                    else (address, int(port or 0))
                out.append((family, socket.SOCK_STREAM, 6, "", sockaddr))
            return out
        return await real(host, port, *args, **kwargs)

    monkeypatch.setattr(loop, "getaddrinfo", getaddrinfo)
    return table


# ---------------------------------------------------------------------- a local receiver

@dataclass
class Call:
    path: str
    headers: dict[str, str]
    body: bytes
    arrived: float
    finished: float = 0.0

    @property
    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """Answers POSTs; ``script[path]`` holds (status, gate, headers, body) answers, used in
    turn (the body ``answer <status>`` unless given); when it is empty the answer is 200 at
    once. A gate (an ``asyncio.Event``) holds the
    answer until the test sets it: a slow or silent endpoint, for exactly as long as the
    test needs, never a guessed number of seconds."""

    base_url: str = ""
    calls: dict[str, list[Call]] = field(default_factory=lambda: defaultdict(list))
    script: dict[str, deque[tuple[int, asyncio.Event | None, dict[str, str], bytes | None]]] \
        = field(default_factory=lambda: defaultdict(deque))

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def answer(self, path: str,
               *answers: tuple[int, asyncio.Event | None]
               | tuple[int, asyncio.Event | None, dict[str, str]]
               | tuple[int, asyncio.Event | None, dict[str, str], bytes]) -> None:
        for a in answers:
            self.script[path].append((a[0], a[1], a[2] if len(a) > 2 else {},  # type: ignore[misc]
                                      a[3] if len(a) > 3 else None))  # type: ignore[misc]

    def event_ids(self, path: str) -> list[int]:
        return [c.json["id"] for c in self.calls[path]]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        assert scope["type"] == "http"
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        call = Call(path, {k.decode().lower(): v.decode() for k, v in scope["headers"]}, body,
                    time.monotonic())
        self.calls[path].append(call)
        status, gate, headers, answer = (self.script[path].popleft() if self.script[path]
                                         else (200, None, {}, None))
        if gate is not None:
            await gate.wait()
        call.finished = time.monotonic()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(k.encode(), v.encode()) for k, v in
                                {"content-type": "text/plain", **headers}.items()]})
        await send({"type": "http.response.body",
                    "body": f"answer {status}".encode() if answer is None else answer})


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    r = Receiver()
    async with serve(r) as base_url:
        r.base_url = base_url
        yield r


# ----------------------------------------------------------------------------- helpers

async def add_webhook(sessions, store_id: str, url: str, events: Iterable[str] = ("invoice.*",),
                      *, secret: str | None = "whsec_test_secret_0123456789",
                      environment: str = "development") -> tuple[str, str]:
    checked = await check(url, environment=environment)
    async with sessions() as s, s.begin():
        created = await create_webhook(s, store_id=store_id, url=checked,
                                       events=list(events), secret=secret)
    return created.webhook.id, created.secret


@pytest.fixture
async def dispatchers(sessions, clock) -> AsyncIterator[Any]:
    """A factory of dispatchers (development, seeded jitter), all closed at the end; they read
    the test's ``clock`` (the process clock)."""
    made: list[WebhookDispatcher] = []

    def make(**kwargs: Any) -> WebhookDispatcher:
        options: dict[str, Any] = {"environment": "development",
                                   "rng": random.Random(7), "timeout": 5.0}
        options.update(kwargs)
        d = WebhookDispatcher(sessions, **options)
        made.append(d)
        return d

    yield make
    for d in made:
        await d.aclose()


# ----------------------------------------------------------------------------- the app

@pytest.fixture
def make_app(engine, db_url, tmp_path):
    """The app exactly as ``satvault serve`` builds it (its routers, its problem mapping),
    without background workers, over the test's engine."""
    def make(environment: str = "development") -> FastAPI:
        settings = Settings(database_url=db_url, home=tmp_path, environment=environment)
        return create_app(settings, engine=engine, start_workers=False)

    return make


@asynccontextmanager
async def api_client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


# ------------------------------------------------------------------------------ NATS

NATS_URL = os.environ.get("SATVAULT_TEST_NATS_URL", "nats://127.0.0.1:4222")


def _reachable(url: str) -> bool:
    u = urlparse(url)
    try:
        socket.create_connection((u.hostname or "127.0.0.1", u.port or 4222), 2).close()
    except OSError:
        return False
    return True


@pytest.fixture
async def stream() -> AsyncIterator[JetStream]:
    """A JetStream stream and subject prefix of the test's own, deleted at the end. When NATS
    cannot be reached the test fails if ``SATVAULT_TEST_REQUIRE_POSTGRES`` is set (CI: every
    service is required there), and is skipped otherwise (a laptop without NATS)."""
    if not _reachable(NATS_URL):
        message = f"NATS JetStream is not reachable at {NATS_URL}"
        if os.environ.get("SATVAULT_TEST_REQUIRE_POSTGRES"):
            pytest.fail(f"{message}, and SATVAULT_TEST_REQUIRE_POSTGRES requires the services")
        pytest.skip(message)
    tag = secrets.token_hex(4)
    js = JetStream(StreamSettings(url=NATS_URL, stream=f"T_{tag}", prefix=f"t{tag}.ev",
                                  duplicate_window=60.0, max_age=600.0))
    await js.connect()
    yield js
    try:
        await js.js.delete_stream(js.settings.stream)
    finally:
        await js.close()
