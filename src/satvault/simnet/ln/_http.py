"""A small asyncio HTTP/1.1 server on its own event-loop thread, for the simulators.

Just what LND's REST gateway needs: keep-alive, request bodies by ``Content-Length`` or
chunked, JSON replies, and streaming replies (``Transfer-Encoding: chunked``, one JSON object
per line) that end when the client goes away. It starts in a few milliseconds, and
:meth:`HttpServer.close` drops the listening socket and every open connection at once, which is
how ``set_offline`` makes clients see refused and reset connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any, Self, TypeVar
from urllib.parse import parse_qsl, unquote

__all__ = ["Connections", "HttpServer", "LoopServer", "LoopThread", "Request", "Response", "Stream"]

log = logging.getLogger(__name__)
T = TypeVar("T")
MAX_HEAD = 64 * 1024
MAX_BODY = 8 * 1024 * 1024


class LoopThread:
    """An asyncio event loop running on a daemon thread."""

    def __init__(self, name: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = 10.0) -> T:
        """Run ``coro`` on the loop and wait for its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        if self.loop.is_closed():
            return

        async def drain() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self.loop.shutdown_asyncgens()

        with contextlib.suppress(Exception):
            self.run(drain(), timeout=5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()


class LoopServer:
    """The life cycle both simulated nodes share: they listen on their own event-loop thread,
    start and stop (also as a context manager), and can go offline and come back. A subclass
    says how to listen and close (``_listen``, ``_close``, ``running``) and names its thread
    in ``_thread_name``."""

    _loop: LoopThread | None = None
    _thread_name = "simnet-node"

    @property
    def running(self) -> bool:
        raise NotImplementedError

    def _listen(self) -> None:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        if self._loop is None:
            self._loop = LoopThread(self._thread_name)
        self._listen()
        return self

    def stop(self) -> None:
        self._close()
        if self._loop is not None:
            self._loop.stop()
            self._loop = None

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_offline(self, offline: bool) -> None:
        """Drop off the network (the listener and every connection gone), or come back."""
        if offline:
            self._close()
        elif not self.running:
            self._listen()


@dataclass(slots=True)
class Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]  # lower-case names
    body: bytes

    def json(self) -> Any:
        if not self.body.strip():
            return {}
        return json.loads(self.body)


@dataclass(slots=True)
class Response:
    status: int
    body: Any  # JSON-able
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(slots=True)
class Stream:
    """A streamed reply: every item of ``items`` goes out as one JSON line."""

    items: AsyncIterator[Any]
    status: int = 200


Handler = Callable[[Request], Awaitable[Response | Stream]]


def _reason(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Status"


def _line(obj: Any) -> bytes:
    return (json.dumps(obj, separators=(",", ":")) + "\n").encode()


Serve = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Coroutine[Any, Any, None]]


class Connections:
    """The open connections of one listener, each known from the moment it is accepted.

    ``accept`` is the listener's callback: it runs synchronously when the connection is made
    and hands asyncio the coroutine that serves it. A connection is registered there, not in
    its task, because a task may never run a step: ``LoopThread.stop`` cancels every task,
    and a task cancelled before its first step never reaches its ``finally``. ``close``
    therefore reaches every connection accepted so far, and a connection accepted after it
    (its socket taken from the backlog just before the listener closed) is dropped at once.
    """

    def __init__(self, serve: Serve) -> None:
        self._serve = serve
        self._open: dict[asyncio.StreamWriter, asyncio.Task[None] | None] = {}
        self._closed = False

    def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
               ) -> Coroutine[Any, Any, None] | None:
        if self._closed:
            writer.transport.abort()
            return None
        self._open[writer] = None
        return self._run(reader, writer)

    async def _run(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if writer in self._open:
            self._open[writer] = asyncio.current_task()
        try:
            await self._serve(reader, writer)
        except asyncio.CancelledError:
            pass  # closing: end quietly (asyncio logs a cancelled connection task)
        finally:
            self._open.pop(writer, None)
            writer.close()

    async def close(self) -> None:
        """Drop every connection (their clients see a reset) and refuse later ones."""
        self._closed = True
        conns, self._open = self._open, {}
        tasks = [task for task in conns.values() if task is not None]
        for writer, task in conns.items():
            writer.transport.abort()
            if task is not None:
                task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class HttpServer:
    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0,
                 tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.tls = tls
        self._server: asyncio.Server | None = None
        self._conns = Connections(self._serve)

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._conns.accept, self.host, self.port,
                                                  limit=MAX_HEAD, backlog=256, ssl=self.tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        await self._conns.close()
        if server is not None:
            await server.wait_closed()

    # ------------------------------------------------------------------------ connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await self._one(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError,
                ValueError):
            pass

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return False
        lines = head.decode("latin-1").split("\r\n")
        method, target, version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for raw in lines[1:]:
            if raw:
                name, _, value = raw.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await self._body(reader, headers)
        path, _, qs = target.partition("?")
        req = Request(method.upper(), unquote(path), dict(parse_qsl(qs)), headers, body)
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        try:
            reply = await self.handler(req)
        except Exception as exc:
            log.exception("simnet HTTP %s %s failed", req.method, req.path)
            reply = Response(500, {"code": 2, "message": str(exc), "details": []})
        if isinstance(reply, Stream):
            return await self._stream(reply, reader, writer, keep_alive)
        data = b"" if reply.body is None else _line(reply.body)
        extra = "".join(f"{k}: {v}\r\n" for k, v in reply.headers.items())
        writer.write(
            (f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"
             f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n{extra}"
             + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode() + data)
        await writer.drain()
        return keep_alive

    @staticmethod
    async def _body(reader: asyncio.StreamReader, headers: dict[str, str]) -> bytes:
        if headers.get("transfer-encoding", "").lower() == "chunked":
            parts: list[bytes] = []
            total = 0
            while True:
                size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    await reader.readuntil(b"\r\n")
                    return b"".join(parts)
                total += size
                if total > MAX_BODY:
                    raise ValueError("request body too large")
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
        length = int(headers.get("content-length") or 0)
        if length > MAX_BODY:
            raise ValueError("request body too large")
        return await reader.readexactly(length) if length else b""

    @staticmethod
    async def _stream(reply: Stream, reader: asyncio.StreamReader,
                      writer: asyncio.StreamWriter, keep_alive: bool) -> bool:
        writer.write((f"HTTP/1.1 {reply.status} {_reason(reply.status)}\r\n"
                      "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n"
                      + ("" if keep_alive else "Connection: close\r\n") + "\r\n").encode())
        await writer.drain()
        items = reply.items
        # A client that goes away shows up as EOF on the reader (HTTP/1.1 clients do not
        # send the next request before this reply ends).
        gone = asyncio.ensure_future(reader.read(1))
        try:
            while True:
                nxt = asyncio.ensure_future(anext(items))
                done, _ = await asyncio.wait({nxt, gone}, return_when=asyncio.FIRST_COMPLETED)
                if nxt not in done:
                    nxt.cancel()
                    with contextlib.suppress(BaseException):
                        await nxt
                    return False
                try:
                    item = nxt.result()
                except StopAsyncIteration:
                    break
                data = _line(item)
                writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return keep_alive and not gone.done()
        finally:
            gone.cancel()
            with contextlib.suppress(BaseException):
                await gone
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await aclose()
