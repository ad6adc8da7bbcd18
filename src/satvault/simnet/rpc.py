"""Bitcoin Core's JSON-RPC over HTTP, served from a simnet chain.

``SimnetServer`` listens on 127.0.0.1 (a ``ThreadingHTTPServer`` on a background thread;
it starts in a few milliseconds) and answers like bitcoind 28:

* ``POST /`` and ``POST /wallet/<name>``; other paths 404, other verbs 405.
* HTTP Basic auth with the configured user/password, or the cookie (``__cookie__:<hex>``)
  written to ``cookie_path``; otherwise 401 with ``WWW-Authenticate: Basic realm="jsonrpc"``.
* JSON-RPC 1.0 (no ``jsonrpc`` key, or ``"1.0"``): replies carry both ``result`` and
  ``error``; an error is HTTP 500, except method-not-found (404) and invalid request (400).
* JSON-RPC 2.0 (``"jsonrpc": "2.0"``): HTTP 200 with either ``result`` or ``error``; a
  request without ``id`` is a notification and gets 204. Batches (arrays) are always 200.
* Amounts are written as exact decimals (``0.00000001``), never through a float; request
  numbers with a fraction are read as ``Decimal``.

One lock serialises every call (reads included), so the chain is never seen half-changed.
``set_offline(True)`` closes the listening socket and every open connection (clients get
connection refused / reset), ``set_offline(False)`` listens again on the same port.
``set_warmup(seconds)`` makes every call answer -28 "Loading block index…" for a while.
The ``simnet_setsync`` control method makes ``getblockchaininfo`` report a node still in
initial block download, its best header some blocks past its tip; ``simnet_setchain`` makes
it name another chain than ``regtest`` (``main``, ``test``, ``testnet4``, ``signet``), a node
of another network as far as satvault can tell; ``simnet_settxindex`` a node without
``-txindex`` (``getindexinfo`` answers ``{}``, confirmed transactions are found only with
their block hash) or with an index still being built.
With ``data_path`` the chain is saved after every call that changed it.
"""

from __future__ import annotations

import base64
import contextlib
import hmac
import json
import logging
import math
import secrets
import socket
import socketserver
import sys
import threading
import time
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from satvault.simnet._methods import dispatch
from satvault.simnet._params import RPC_IN_WARMUP, RPC_MISC_ERROR, RpcContext, RpcError
from satvault.simnet.chain import Chain

__all__ = ["RpcError", "SimnetServer", "dumps"]

log = logging.getLogger(__name__)

RPC_INVALID_REQUEST = -32600
RPC_METHOD_NOT_FOUND = -32601
RPC_PARSE_ERROR = -32700
WARMUP_STATUS = "Loading block index…"


def _encode(obj: Any, out: list[str]) -> None:
    if obj is None:
        out.append("null")
    elif obj is True:
        out.append("true")
    elif obj is False:
        out.append("false")
    elif isinstance(obj, Decimal):
        out.append(format(obj, "f"))
    elif isinstance(obj, int):
        out.append(str(obj))
    elif isinstance(obj, float):
        out.append(repr(obj) if math.isfinite(obj) else "null")
    elif isinstance(obj, str):
        out.append(json.dumps(obj))
    elif isinstance(obj, dict):
        out.append("{")
        for i, (k, v) in enumerate(obj.items()):
            if i:
                out.append(",")
            out.append(json.dumps(str(k)))
            out.append(":")
            _encode(v, out)
        out.append("}")
    elif isinstance(obj, list | tuple):
        out.append("[")
        for i, v in enumerate(obj):
            if i:
                out.append(",")
            _encode(v, out)
        out.append("]")
    else:
        raise TypeError(f"cannot encode {type(obj).__name__} as JSON")


def dumps(obj: Any) -> str:
    """JSON text with ``Decimal`` written digit for digit (``Decimal("0.00000001")`` stays
    ``0.00000001``)."""
    out: list[str] = []
    _encode(obj, out)
    return "".join(out)


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def server_bind(self) -> None:
        # HTTPServer.server_bind resolves the host name (getfqdn), which can take seconds.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name, self.server_port = str(host), int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client went away, or set_offline() cut the connection
        super().handle_error(request, client_address)


class _Request:
    """One JSON-RPC request object; ``parse`` fills it in field by field, as Core does, so an
    error found half-way is still answered with the id and version read so far."""

    def __init__(self) -> None:
        self.id: Any = None
        self.has_id = False
        self.v2 = False
        self.method = ""
        self.params: Any = []

    def parse(self, obj: Any) -> _Request:
        if not isinstance(obj, dict):
            raise RpcError(RPC_INVALID_REQUEST, "Invalid Request object")
        if "id" in obj:
            self.id, self.has_id = obj["id"], True
        version = obj.get("jsonrpc")
        if version is not None:
            if not isinstance(version, str):
                raise RpcError(RPC_INVALID_REQUEST, "jsonrpc field must be a string")
            if version == "2.0":
                self.v2 = True
            elif version != "1.0":
                raise RpcError(RPC_INVALID_REQUEST, "JSON-RPC version not supported")
        method = obj.get("method")
        if method is None:
            raise RpcError(RPC_INVALID_REQUEST, "Missing method")
        if not isinstance(method, str):
            raise RpcError(RPC_INVALID_REQUEST, "Method must be a string")
        self.method = method
        params = obj.get("params")
        if params is None:
            params = []
        if not isinstance(params, list | dict):
            raise RpcError(RPC_INVALID_REQUEST, "Params must be an array or object")
        self.params = params
        return self

    @property
    def notification(self) -> bool:
        return self.v2 and not self.has_id

    def reply(self, result: Any = None, error: RpcError | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {"jsonrpc": "2.0"} if self.v2 else {}
        err = None if error is None else {"code": error.code, "message": error.message}
        if err is None:
            out["result"] = result
            if not self.v2:
                out["error"] = None
        else:
            if not self.v2:
                out["result"] = None
            out["error"] = err
        if self.has_id:
            out["id"] = self.id
        return out


DROP = -1  # handle()'s status for a call scripted to get no answer


class SimnetServer:
    """bitcoind's JSON-RPC for a ``Chain``, on a background thread."""

    def __init__(self, chain: Chain | None = None, host: str = "127.0.0.1", port: int = 0,
                 user: str = "simnet", password: str = "simnet", *,
                 cookie_path: str | Path | None = None,
                 data_path: str | Path | None = None) -> None:
        self.chain = chain if chain is not None else Chain()
        self.host = host
        self.port = port
        self.user = user
        self.password = password
        self.cookie_path = Path(cookie_path) if cookie_path else None
        self.data_path = Path(data_path) if data_path else None
        self.lock = threading.RLock()
        self.context = RpcContext(self.chain, set_warmup=self.set_warmup)
        self._credentials = {f"{user}:{password}".encode()}
        self._warmup_until = 0.0
        self._warmup_status = WARMUP_STATUS
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._connections: set[socket.socket] = set()
        self._conn_lock = threading.Lock()
        self._drops: dict[str, int] = {}

    # -- lifecycle ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://user:password@127.0.0.1:PORT/``."""
        return f"http://{self.user}:{self.password}@{self.host}:{self.port}/"

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/"

    @property
    def running(self) -> bool:
        return self._httpd is not None

    def start(self) -> SimnetServer:
        if self.cookie_path is not None:
            cookie = f"__cookie__:{secrets.token_hex(32)}"
            self.cookie_path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.cookie_path.with_name(self.cookie_path.name + ".tmp")
            tmp.write_text(cookie)
            tmp.chmod(0o600)
            tmp.replace(self.cookie_path)
            self._credentials.add(cookie.encode())
        self._listen()
        return self

    def stop(self) -> None:
        self._close()
        if self.cookie_path is not None:
            with contextlib.suppress(FileNotFoundError):
                self.cookie_path.unlink()

    def __enter__(self) -> SimnetServer:
        return self.start() if not self.running else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def set_offline(self, offline: bool) -> None:
        """Drop off the network (refuse and reset connections), or come back on the same port."""
        if offline:
            self._close()
        elif not self.running:
            self._listen()

    def drop_calls(self, method: str, times: int = 1) -> None:
        """Fault script: the next ``times`` calls of ``method`` get no answer, their connection
        is cut (a node that dies mid-request); other methods are served as usual."""
        with self._conn_lock:
            self._drops[method] = self._drops.get(method, 0) + times

    def clear_drops(self) -> None:
        with self._conn_lock:
            self._drops.clear()

    def _take_drop(self, method: str) -> bool:
        with self._conn_lock:
            left = self._drops.get(method, 0)
            if left <= 0:
                return False
            self._drops[method] = left - 1
            return True

    def set_warmup(self, seconds: float, status: str = WARMUP_STATUS) -> None:
        """Answer every call with -28 ``status`` for the next ``seconds``."""
        self._warmup_until = time.monotonic() + max(0.0, seconds)
        self._warmup_status = status

    def _listen(self) -> None:
        server = self

        class Handler(_Handler):
            simnet = server

        httpd = _HTTPServer((self.host, self.port), Handler)
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                        name=f"simnet-rpc-{self.port}", daemon=True)
        self._thread.start()

    def _close(self) -> None:
        httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        httpd.shutdown()
        httpd.server_close()
        with self._conn_lock:
            conns, self._connections = self._connections, set()
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
            with contextlib.suppress(OSError):
                conn.close()
        if self._thread is not None:
            self._thread.join(timeout=2)
            self._thread = None

    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._conn_lock:
            if add:
                self._connections.add(conn)
            else:
                self._connections.discard(conn)

    # -- requests ----------------------------------------------------------------------

    def authorized(self, header: str | None) -> bool:
        if not header or not header.startswith("Basic "):
            return False
        try:
            given = base64.b64decode(header[6:].strip(), validate=True)
        except ValueError:
            return False
        return any(hmac.compare_digest(given, c) for c in self._credentials)

    def call(self, method: str, params: Any) -> Any:
        """Run one method under the lock (also usable in-process, without HTTP)."""
        if time.monotonic() < self._warmup_until:
            raise RpcError(RPC_IN_WARMUP, self._warmup_status)
        with self.lock:
            try:
                result, mutated = dispatch(self.context, method, params)
                if mutated and self.data_path is not None:
                    self.chain.save(self.data_path)
            except RpcError:
                raise
            except Exception as exc:
                # bitcoind answers an unexpected failure inside a method with -1 and its text.
                log.exception("simnet RPC %s failed", method)
                raise RpcError(RPC_MISC_ERROR, str(exc)) from exc
            return result

    def handle(self, body: bytes) -> tuple[int, str | None]:
        """(HTTP status, JSON body or None) for one POSTed body."""
        try:
            request = json.loads(body, parse_float=Decimal)
        except ValueError:
            return 500, dumps(_Request().reply(error=RpcError(RPC_PARSE_ERROR, "Parse error")))
        if isinstance(request, list):
            replies = [r for r in (self._one_in_batch(item) for item in request) if r is not None]
            if not replies and request:
                return 204, None
            return 200, dumps(replies)
        if not isinstance(request, dict):
            return 500, dumps(_Request().reply(
                error=RpcError(RPC_PARSE_ERROR, "Top-level object parse error")))
        req = _Request()
        try:
            req.parse(request)
        except RpcError as exc:
            status = 400 if exc.code == RPC_INVALID_REQUEST else 500
            return status, dumps(req.reply(error=exc))
        if self._take_drop(req.method):
            return DROP, None
        try:
            reply = req.reply(self.call(req.method, req.params))
        except RpcError as exc:
            if not req.v2:
                status = {RPC_METHOD_NOT_FOUND: 404, RPC_INVALID_REQUEST: 400}.get(exc.code, 500)
                return status, dumps(req.reply(error=exc))
            reply = req.reply(error=exc)
        if req.notification:
            return 204, None
        return 200, dumps(reply)

    def _one_in_batch(self, item: Any) -> dict[str, Any] | None:
        req = _Request()
        try:
            req.parse(item)
        except RpcError as exc:
            return req.reply(error=exc)
        try:
            reply = req.reply(self.call(req.method, req.params))
        except RpcError as exc:
            reply = req.reply(error=exc)
        return None if req.notification else reply


class _Handler(BaseHTTPRequestHandler):
    simnet: SimnetServer
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        # Headers and body go out in separate writes; without NODELAY, Nagle plus delayed
        # ACKs would add ~40 ms to every keep-alive request.
        with contextlib.suppress(OSError):
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.simnet._track(self.connection, True)

    def finish(self) -> None:
        with contextlib.suppress(OSError):
            super().finish()
        self.simnet._track(self.connection, False)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, body: str | None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body + "\n").encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _not_post(self) -> None:
        self._read_body()
        self.send_response(405)
        msg = b"JSONRPC server handles only POST requests"
        self.send_header("Content-Length", str(len(msg)))
        self.end_headers()
        self.wfile.write(msg)

    do_GET = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _not_post

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_POST(self) -> None:
        body = self._read_body()
        path = self.path.split("?", 1)[0]
        if path != "/" and not path.startswith("/wallet/"):
            self._send(404, None)
            return
        if not self.simnet.authorized(self.headers.get("Authorization")):
            self._send(401, None, {"WWW-Authenticate": 'Basic realm="jsonrpc"'})
            return
        status, reply = self.simnet.handle(body)
        if status == DROP:  # scripted fault: cut the connection without an answer
            self.close_connection = True
            with contextlib.suppress(OSError):
                self.connection.shutdown(socket.SHUT_RDWR)
            return
        self._send(status, reply)
