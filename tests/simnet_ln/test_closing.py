"""A simulated node that goes offline or stops closes every connection it accepted, also one
whose serving task had not run a single step when the loop was drained (a connection accepted
just before ``stop``), and one accepted while the listener was closing.

Both races are made certain with a task factory: every connection task the streams layer
creates is cancelled at birth, as ``LoopThread.stop``'s drain does to a task that has not yet
started; the client must then see its connection end rather than stay open until garbage
collection finds an unclosed socket (the ``ResourceWarning`` a CI run once failed on)."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sys
import threading
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any

import pytest

from satvault.simnet.ln import ClnRpcServer, LnNetwork
from satvault.simnet.ln._http import HttpServer, Request, Response


async def _ok(_req: Request) -> Response:
    return Response(200, {})


def _from(co_name: str, filename: str) -> bool:
    frame = sys._getframe(2)
    for _ in range(4):
        if frame is None:
            return False
        if frame.f_code.co_name == co_name and frame.f_code.co_filename.endswith(filename):
            return True
        frame = frame.f_back
    return False


def _factory(on_accept: Callable[[], None] | None = None,
             born: threading.Event | None = None) -> Any:
    """A task factory cancelling every connection task before its first step (what the drain
    does to a task not yet started); ``on_accept`` runs when the loop starts accepting one."""

    def factory(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any],
                **kwargs: Any) -> asyncio.Task[Any]:
        connection = _from("connection_made", "streams.py")
        if not connection and on_accept is not None and _from("_accept_connection", "events.py"):
            on_accept()
        task = asyncio.Task(coro, loop=loop, **kwargs)
        if connection:
            task.cancel()
            if born is not None:
                born.set()
        return task

    return factory


async def _ended(sock: socket.socket) -> bool:
    """Whether the server ended this connection (EOF or reset) within two seconds."""
    loop = asyncio.get_running_loop()
    try:
        data = await asyncio.wait_for(loop.sock_recv(sock, 1), 2)
    except ConnectionError:
        return True
    except TimeoutError:
        return False
    return data == b""


def _client(port: int) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


@contextlib.asynccontextmanager
async def _connected(factory: Any) -> AsyncIterator[tuple[HttpServer, socket.socket]]:
    """A server on this test's loop, ``factory`` as the loop's task factory, one client."""
    loop = asyncio.get_running_loop()
    server = HttpServer(_ok)
    port = await server.start()
    loop.set_task_factory(factory)
    sock = _client(port)
    try:
        yield server, sock
    finally:
        loop.set_task_factory(None)
        sock.close()
        await server.close()


async def test_an_accepted_connection_whose_task_never_ran_is_closed() -> None:
    born = threading.Event()
    async with _connected(_factory(born=born)) as (server, sock):
        for _ in range(200):
            if born.is_set():
                break
            await asyncio.sleep(0.005)
        assert born.is_set(), "the connection was not accepted"
        await server.close()
        assert await _ended(sock), "the server left an accepted connection open"


async def test_a_connection_accepted_while_closing_is_closed() -> None:
    accepting = asyncio.Event()
    async with _connected(_factory(on_accept=accepting.set)) as (server, sock):
        await asyncio.wait_for(accepting.wait(), 2)
        # The socket is accepted; its transport and protocol come on later loop steps, after
        # the listener has closed.
        await server.close()
        assert await _ended(sock), "a connection accepted while closing was left open"


@pytest.fixture
def cln_server() -> Iterator[ClnRpcServer]:
    net = LnNetwork()
    with ClnRpcServer(net) as server:
        yield server
    net.close()


async def test_core_lightnings_socket_closes_a_connection_whose_task_never_ran(
        cln_server: ClnRpcServer) -> None:
    assert cln_server._loop is not None
    node_loop = cln_server._loop.loop
    born = threading.Event()
    node_loop.call_soon_threadsafe(node_loop.set_task_factory, _factory(born=born))
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(cln_server.path))
        sock.setblocking(False)
        assert await asyncio.to_thread(born.wait, 2), "the connection was not accepted"
        await asyncio.to_thread(cln_server.set_offline, True)
        assert await _ended(sock), "the node left an accepted connection open"
    finally:
        node_loop.call_soon_threadsafe(node_loop.set_task_factory, None)
        sock.close()
