"""LND's REST API (the grpc-gateway) for one node of an :class:`LnNetwork`.

Serves exactly what ``satvault.backends.lnd`` uses, with LND's shapes and errors:

* ``GET /v1/getinfo``, ``GET /v1/balance/channels``, ``GET /v1/balance/blockchain``
* ``POST /v1/invoices``, ``GET /v2/invoices/lookup?payment_hash=<base64>`` (also
  ``GET /v1/invoice/<hex>``), ``POST /v2/invoices/cancel``, ``GET /v1/payreq/<bolt11>``
* streams, one ``{"result": …}`` per line: ``GET /v1/invoices/subscribe`` (catch-up by
  ``add_index``/``settle_index``, then live add and settle events),
  ``POST /v2/router/send`` and ``GET /v2/router/track/<base64url hash>``.

Errors look like the gateway's: a unary call answers ``{"code", "message", "details"}`` with
the HTTP status of the gRPC code (2 Unknown -> 500, 5 NotFound -> 404, 6 AlreadyExists ->
409 …); a stream that fails before its first message answers that status with one
``{"error": {"code", "message", "details"}}`` line. With ``macaroon_hex`` set, a request
without the ``Grpc-Metadata-macaroon`` header gets LND's 500 "expected 1 macaroon, got 0",
a wrong one 500 "verification failed: signature mismatch after caveat verification".

``/simnet/…`` is the simulator's own control API (no macaroon), see ``_control``.

::

    net = LnNetwork()
    with LndRestServer(net, macaroon_hex="ab" * 32) as lnd:
        backend = LndBackend(lnd.url, macaroon_hex="ab" * 32)
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import ssl
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from satvault.simnet.ln import _lnd_json as J
from satvault.simnet.ln._control import control
from satvault.simnet.ln._http import HttpServer, LoopServer, Request, Response, Stream
from satvault.simnet.ln._model import Invoice, Payment, PaymentStatus
from satvault.simnet.ln.errors import (
    DuplicateInvoice,
    InvalidPaymentRequest,
    LnSimError,
    PaymentRefused,
)
from satvault.simnet.ln.network import MAX_MEMO, LnNetwork

__all__ = ["DEFAULT_CLTV_EXPIRY", "DEFAULT_EXPIRY", "LndRestServer"]

DEFAULT_EXPIRY = 86400  # LND's invoice expiry when none is given
DEFAULT_CLTV_EXPIRY = 80
DEFAULT_PAYMENT_TIMEOUT = 60
MAX_EXPIRY = 365 * 24 * 3600


class _Fail(Exception):
    """A gRPC status to answer with."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _int(body: dict[str, Any], name: str, default: int = 0) -> int:
    value = body.get(name, default)
    if value in (None, ""):
        return default
    try:
        return int(value)
    except (TypeError, ValueError):
        raise _Fail(3, f"invalid value for {name}: {value!r}") from None


def _amount(body: dict[str, Any], sat: str, msat: str) -> int:
    """LND's UnmarshallAmt."""
    a, m = _int(body, sat), _int(body, msat)
    if a and m:
        raise _Fail(2, "sat and msat arguments are mutually exclusive")
    if a < 0 or m < 0:
        raise _Fail(2, "amount cannot be negative")
    return a * 1000 if a else m


def _bytes_field(value: Any, name: str, size: int | None = None) -> bytes | None:
    if value in (None, ""):
        return None
    try:
        raw = J.b64_to_bytes(str(value))
    except ValueError as exc:
        raise _Fail(3, f"invalid value for {name}: {exc}") from None
    if size is not None and len(raw) != size:
        raise _Fail(3, f"unable to parse {name}: invalid hash length of {len(raw)}, "
                       f"want {size}")
    return raw


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "t", "yes")


class LndRestServer(LoopServer):
    """An LND REST endpoint for ``node`` of ``network`` on a background event loop; over
    TLS with ``tls`` (a server context holding the node's certificate), as LND always is."""

    def __init__(self, network: LnNetwork, node: str = "platform", host: str = "127.0.0.1",
                 port: int = 0, macaroon_hex: str | None = None,
                 tls: ssl.SSLContext | None = None) -> None:
        network.pubkey(node)  # fail early on an unknown node
        self.network = network
        self.node = node
        self.host = host
        self.port = port
        self.macaroon_hex = macaroon_hex.lower() if macaroon_hex else None
        self.tls = tls
        self._thread_name = f"simnet-lnd-{node}"
        self._http: HttpServer | None = None
        self._routes: dict[tuple[str, str], Callable[[Request], Awaitable[Response | Stream]]]
        self._routes = {
            ("GET", "/v1/getinfo"): self._getinfo,
            ("POST", "/v1/invoices"): self._add_invoice,
            ("GET", "/v2/invoices/lookup"): self._lookup_v2,
            ("POST", "/v2/invoices/cancel"): self._cancel,
            ("GET", "/v1/invoices/subscribe"): self._subscribe,
            ("POST", "/v2/router/send"): self._send,
            ("GET", "/v1/balance/channels"): self._channel_balance,
            ("GET", "/v1/balance/blockchain"): self._wallet_balance,
            ("GET", "/v1/payments"): self._list_payments,
        }
        self._gates: dict[tuple[str, str], threading.Event] = {}
        self.held = threading.Semaphore(0)  # released once per call a gate holds

    # ------------------------------------------------------------------------- lifecycle
    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._http is not None

    def _listen(self) -> None:
        assert self._loop is not None
        http = HttpServer(self._handle, self.host, self.port, self.tls)
        self.port = self._loop.run(http.start())
        self._http = http

    def _close(self) -> None:
        http, self._http = self._http, None
        if http is not None and self._loop is not None:
            self._loop.run(http.close())

    def hold(self, method: str, path: str) -> threading.Event:
        """Fault script: calls of ``method path`` wait (a slow node) until the returned event
        is set; each held call releases :attr:`held` once, so a test can wait for it."""
        gate = self._gates[(method, path)] = threading.Event()
        return gate

    # --------------------------------------------------------------------------- routing
    async def _handle(self, req: Request) -> Response | Stream:
        if req.path.startswith("/simnet/"):
            return await control(self.network, self.node, req)
        gate = self._gates.get((req.method, req.path))
        if gate is not None and not gate.is_set():
            self.held.release()
            await asyncio.to_thread(gate.wait, 30)
        handler = self._routes.get((req.method, req.path))
        if handler is None:
            if req.method == "GET" and req.path.startswith("/v2/router/track/"):
                handler = self._track
            elif req.method == "GET" and req.path.startswith("/v1/payreq/"):
                handler = self._decode
            elif req.method == "GET" and req.path.startswith("/v1/invoice/"):
                handler = self._lookup_v1
        if handler is None:
            known = {p for (_, p) in self._routes}
            if req.path in known:
                return Response(405, J.error_body(12, "Method Not Allowed"))
            return Response(404, J.error_body(5, "Not Found"))
        denied = self._check_macaroon(req)
        if denied is not None:
            return denied
        try:
            return await handler(req)
        except _Fail as exc:
            return self._error(exc.code, exc.message)
        except ValueError as exc:  # a body that is not JSON
            return self._error(3, str(exc))

    def _check_macaroon(self, req: Request) -> Response | None:
        if self.macaroon_hex is None:
            return None
        given = req.headers.get("grpc-metadata-macaroon")
        if not given:
            return self._error(2, "expected 1 macaroon, got 0")
        if not hmac.compare_digest(given.strip().lower(), self.macaroon_hex):
            return self._error(2, "verification failed: signature mismatch after caveat "
                                  "verification")
        return None

    @staticmethod
    def _error(code: int, message: str) -> Response:
        return Response(J.GRPC_HTTP_STATUS.get(code, 500), J.error_body(code, message))

    @staticmethod
    def _stream_error(code: int, message: str) -> Stream:
        async def one() -> AsyncIterator[Any]:
            yield {"error": J.error_body(code, message)}

        return Stream(one(), J.GRPC_HTTP_STATUS.get(code, 500))

    def _invoice_json(self, inv: Invoice) -> dict[str, Any]:
        return J.invoice(inv, now=self.network.now(), block_height=self.network.block_height)

    def _payment_json(self, p: Payment, *, initial: bool = False) -> dict[str, Any]:
        net = self.network
        pubkeys = {name: net.pubkey(name) for name in net.node_names}
        channels = {c.chan_id: c for c in net.channels()}
        return J.payment(p, pubkeys=pubkeys, channels=channels,
                         block_height=net.block_height, initial=initial)

    # ------------------------------------------------------------------------------ info
    async def _getinfo(self, req: Request) -> Response:
        net = self.network
        peers = net.peers(self.node)
        return Response(200, J.getinfo(
            pubkey=net.pubkey(self.node), alias=net.alias(self.node), network=net.network,
            block_height=net.block_height, peers=len(peers),
            channels=len(net.channels(self.node)), now=net.now(),
            synced=net.synced(self.node)))

    async def _channel_balance(self, req: Request) -> Response:
        return Response(200, J.channel_balance(self.network.balance(self.node)))

    async def _wallet_balance(self, req: Request) -> Response:
        return Response(200, J.wallet_balance(self.network.balance(self.node)))

    async def _list_payments(self, req: Request) -> Response:
        """``ListPayments``: this node's payments after ``index_offset`` (exclusive), oldest
        first, at most ``max_payments``; only the succeeded ones unless
        ``include_incomplete``."""
        query = dict(req.query)
        offset, most = _int(query, "index_offset"), _int(query, "max_payments", 100)
        if _truthy(query.get("reversed")):
            raise _Fail(12, "reversed listing is not simulated")
        pays = [p for p in self.network.payments(self.node) if p.payment_index > offset
                and (_truthy(query.get("include_incomplete"))
                     or p.status is PaymentStatus.SUCCEEDED)][:most]
        return Response(200, {
            "payments": [self._payment_json(p) for p in pays],
            "first_index_offset": str(pays[0].payment_index if pays else 0),
            "last_index_offset": str(pays[-1].payment_index if pays else 0),
            "total_num_payments": "0"})

    # -------------------------------------------------------------------------- invoices
    async def _add_invoice(self, req: Request) -> Response:
        body = req.json()
        if not isinstance(body, dict):
            raise _Fail(3, "request body must be a JSON object")
        amount = _amount(body, "value", "value_msat")
        memo = str(body.get("memo") or "")
        if len(memo.encode()) > MAX_MEMO:
            raise _Fail(2, f"memo too large: {len(memo.encode())} bytes "
                           f"(maxsize={MAX_MEMO})")
        desc_hash = _bytes_field(body.get("description_hash"), "description_hash")
        if desc_hash is not None and len(desc_hash) != 32:
            raise _Fail(2, f"description hash is {len(desc_hash)} bytes, must be 32")
        preimage = _bytes_field(body.get("r_preimage"), "r_preimage")
        if preimage is not None and len(preimage) != 32:
            raise _Fail(2, f"payment preimage must be exactly 32 bytes, is {len(preimage)}")
        expiry = _int(body, "expiry") or DEFAULT_EXPIRY
        if expiry < 0:
            raise _Fail(2, "expiry must be positive")
        if expiry > MAX_EXPIRY:
            raise _Fail(2, f"expiry of {expiry} seconds greater than max allowed "
                           f"{MAX_EXPIRY} seconds")
        cltv = _int(body, "cltv_expiry") or DEFAULT_CLTV_EXPIRY
        try:
            inv = self.network.create_invoice(
                self.node, amount or None, memo=memo, description_hash=desc_hash,
                expiry=expiry, cltv_expiry=cltv,
                fallback_addr=str(body.get("fallback_addr") or "") or None, preimage=preimage)
        except DuplicateInvoice as exc:
            raise _Fail(6, exc.message) from None
        except LnSimError as exc:
            raise _Fail(2, exc.message) from None
        return Response(200, {"r_hash": J.b64(inv.payment_hash),
                              "payment_request": inv.bolt11,
                              "add_index": str(inv.add_index),
                              "payment_addr": J.b64(inv.payment_addr)})

    def _lookup(self, payment_hash: bytes | None) -> Response:
        if payment_hash is None:
            raise _Fail(3, "invoice ref must be set")
        if len(payment_hash) != 32:
            raise _Fail(3, f"unable to parse pay hash: invalid hash length of "
                           f"{len(payment_hash)}, want 32")
        inv = self.network.lookup_invoice(self.node, payment_hash.hex())
        if inv is None:
            raise _Fail(5, "unable to locate invoice")
        return Response(200, self._invoice_json(inv))

    async def _lookup_v2(self, req: Request) -> Response:
        return self._lookup(_bytes_field(req.query.get("payment_hash"), "payment_hash"))

    async def _lookup_v1(self, req: Request) -> Response:
        text = req.path.removeprefix("/v1/invoice/")
        try:
            raw = bytes.fromhex(text)
        except ValueError:
            raise _Fail(2, f"unable to decode payment hash {text!r}") from None
        inv = self.network.lookup_invoice(self.node, raw.hex()) if len(raw) == 32 else None
        if inv is None:  # the v1 call answers with Unknown, not NotFound
            raise _Fail(2, "unable to locate invoice")
        return Response(200, self._invoice_json(inv))

    async def _cancel(self, req: Request) -> Response:
        body = req.json()
        h = _bytes_field(body.get("payment_hash") if isinstance(body, dict) else None,
                         "payment_hash", 32)
        if h is None:
            raise _Fail(2, "invalid hash length of 0, want 32")
        try:
            self.network.cancel_invoice(self.node, h.hex())
        except LnSimError as exc:  # unknown, or already settled: plain errors in LND
            raise _Fail(2, exc.message) from None
        return Response(200, {})

    async def _decode(self, req: Request) -> Response:
        text = req.path.removeprefix("/v1/payreq/")
        try:
            parsed = self.network.require_valid_request(text)
        except InvalidPaymentRequest as exc:
            raise _Fail(2, exc.message) from None
        return Response(200, J.payreq(parsed))

    async def _subscribe(self, req: Request) -> Stream:
        add_index = _int(dict(req.query), "add_index")
        settle_index = _int(dict(req.query), "settle_index")
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Invoice] = asyncio.Queue()

        def listener(kind: str, inv: Invoice) -> None:
            # SubscribeInvoices carries adds and settles only (LND skips cancel/accept).
            if kind in ("added", "settled"):
                with contextlib.suppress(RuntimeError):  # the loop is gone
                    loop.call_soon_threadsafe(queue.put_nowait, inv)

        backlog, unsubscribe = self.network.subscribe_invoices(
            self.node, listener, add_index=add_index, settle_index=settle_index)

        async def items() -> AsyncIterator[Any]:
            try:
                for _, inv in backlog:
                    yield {"result": self._invoice_json(inv)}
                while True:
                    yield {"result": self._invoice_json(await queue.get())}
            finally:
                unsubscribe()

        return Stream(items())

    # -------------------------------------------------------------------------- payments
    async def _send(self, req: Request) -> Stream:
        try:
            body = req.json()
            if not isinstance(body, dict):
                raise _Fail(3, "request body must be a JSON object")
            pay_req = str(body.get("payment_request") or "")
            amount = _amount(body, "amt", "amt_msat")
            fee_limit = _amount(body, "fee_limit_sat", "fee_limit_msat")
            if _int(body, "timeout_seconds") < 0:
                raise _Fail(2, "timeout_seconds must be positive")
            if not pay_req:
                raise _Fail(2, "invalid vertex length of 0, want 33")
            try:
                parsed = self.network.require_valid_request(pay_req)
            except InvalidPaymentRequest as exc:
                raise _Fail(2, exc.message) from None
            if parsed.amount_msat is not None and amount:
                raise _Fail(2, "amount must not be specified when paying a non-zero amount "
                               "invoice")
            try:
                payment = self.network.pay(self.node, pay_req, amount_msat=amount or None,
                                           fee_limit_msat=fee_limit)
            except PaymentRefused as exc:
                code = 6 if exc.kind in ("already_paid", "in_transition") else 2
                raise _Fail(code, exc.message) from None
        except _Fail as exc:
            return self._stream_error(exc.code, exc.message)
        except ValueError as exc:
            return self._stream_error(3, str(exc))
        no_inflight = bool(body.get("no_inflight_updates"))
        return Stream(self._updates(payment, no_inflight=no_inflight, initial=True))

    async def _track(self, req: Request) -> Stream:
        text = req.path.removeprefix("/v2/router/track/")
        try:
            h = _bytes_field(text, "payment_hash", 32)
        except _Fail as exc:
            return self._stream_error(exc.code, exc.message)
        payment = self.network.payment(self.node, h.hex()) if h else None
        if payment is None:
            return self._stream_error(5, "payment isn't initiated")
        no_inflight = _truthy(req.query.get("no_inflight_updates"))
        return Stream(self._updates(payment, no_inflight=no_inflight, initial=False,
                                    tracking=True))

    async def _updates(self, payment: Payment, *, no_inflight: bool, initial: bool,
                       tracking: bool = False) -> AsyncIterator[Any]:
        """IN_FLIGHT (unless ``no_inflight``) then the final state; a stalled send (the
        hang_then_succeed outcome) says IN_FLIGHT and then nothing more."""
        if initial and not no_inflight:
            yield {"result": self._payment_json(payment, initial=True)}
        if payment.stalled and not tracking:
            await asyncio.Event().wait()  # until the client or the server goes away
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Payment] = asyncio.Queue()

        def listener(p: Payment) -> None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(queue.put_nowait, p)

        current, unsubscribe = self.network.watch_payment(self.node, payment.payment_hash,
                                                          listener)
        try:
            p = current or payment
            while True:
                if p.final or not no_inflight:
                    if not (initial and not p.final):  # the first IN_FLIGHT went out already
                        yield {"result": self._payment_json(p)}
                    initial = False
                if p.final:
                    return
                p = await queue.get()
                if p.payment_index != payment.payment_index:
                    return  # a retry replaced this payment
        finally:
            unsubscribe()
