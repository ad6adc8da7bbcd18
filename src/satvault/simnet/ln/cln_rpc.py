"""Core Lightning's JSON-RPC 2.0 over a unix socket, for one node of an :class:`LnNetwork`.

Framed the way ``lightningd`` and ``pyln.client.LightningRpc`` talk: requests are bare JSON
objects written back to back, each reply is a JSON object followed by a blank line
(``\\n\\n``); pyln opens one connection per call and may first send ``notifications``.
Params are an object or an array in the documented order.

Methods: ``getinfo``, ``invoice``, ``listinvoices``, ``delinvoice``, ``waitanyinvoice``,
``waitinvoice``, ``pay``, ``xpay``, ``listpays``, ``listsendpays``, ``decode``,
``decodepay``, ``listfunds``, with CLN's field names and error codes (900 duplicate label,
904 wait timed out, 905 unknown invoice, 906 wrong status, 203/205/206/207/209/210/219
payment failures, -32602 bad parameters, -32601 unknown command). ``pay`` and ``xpay``
block until the payment is final; a ``hang_then_succeed`` payment never answers (the socket
stays open), like a node that stopped talking.

::

    with ClnRpcServer(LnNetwork(), path=tmp / "lightning-rpc") as cln:
        rpc = pyln.client.LightningRpc(str(cln.path))
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from satvault.simnet.ln import _cln_json as C
from satvault.simnet.ln._cln_params import (
    INVALID_PARAMS,
    METHOD_NOT_FOUND,
    RpcError,
    msat,
    parse_params,
    required,
    u64,
)
from satvault.simnet.ln._http import Connections, LoopServer
from satvault.simnet.ln._model import FailureReason, Invoice, Payment, PaymentStatus
from satvault.simnet.ln.errors import (
    DuplicateInvoice,
    InvalidPaymentRequest,
    PaymentRefused,
)
from satvault.simnet.ln.network import LnNetwork

__all__ = ["ClnRpcServer", "RpcError"]

DEFAULT_EXPIRY = 604800
DEFAULT_CLTV = 18


class ClnRpcServer(LoopServer):
    """``lightningd``'s RPC socket for ``node`` of ``network``, on a background loop."""

    def __init__(self, network: LnNetwork, node: str = "platform",
                 path: str | Path | None = None) -> None:
        network.pubkey(node)
        self.network = network
        self.node = node
        self._own_dir: str | None = None
        if path is None:
            self._own_dir = tempfile.mkdtemp(prefix="simnet-cln-")
            path = Path(self._own_dir) / "lightning-rpc"
        self.path = Path(path)
        self._thread_name = f"simnet-cln-{node}"
        self._server: asyncio.AbstractServer | None = None
        self._conns = Connections(self._serve)  # a fresh one each time it listens
        self._methods: dict[str, Callable[[dict[str, Any]], Awaitable[Any]]] = {
            "getinfo": self._getinfo, "invoice": self._invoice,
            "listinvoices": self._listinvoices, "delinvoice": self._delinvoice,
            "waitanyinvoice": self._waitanyinvoice, "waitinvoice": self._waitinvoice,
            "pay": self._pay, "xpay": self._xpay, "listpays": self._listpays,
            "listsendpays": self._listsendpays, "decode": self._decode,
            "decodepay": self._decode, "listfunds": self._listfunds,
            "notifications": self._notifications,
        }

    # ------------------------------------------------------------------------- lifecycle
    @property
    def running(self) -> bool:
        return self._server is not None

    def stop(self) -> None:
        super().stop()
        if self._own_dir is not None:
            with contextlib.suppress(OSError):
                os.rmdir(self._own_dir)

    def _listen(self) -> None:
        assert self._loop is not None
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)

        conns = self._conns = Connections(self._serve)

        async def start() -> asyncio.AbstractServer:
            return await asyncio.start_unix_server(conns.accept, path=str(self.path),
                                                   limit=1 << 20)

        self._server = self._loop.run(start())

    def _close(self) -> None:
        server, self._server = self._server, None
        if server is None or self._loop is None:
            return
        conns = self._conns

        async def close() -> None:
            server.close()
            await conns.close()

        self._loop.run(close())
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    # ------------------------------------------------------------------------ connection
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = json.JSONDecoder()
        buf = ""
        try:
            while True:
                chunk = await reader.read(65536)
                if not chunk:
                    return
                buf += chunk.decode()
                while True:
                    buf = buf.lstrip()
                    if not buf:
                        break
                    try:
                        request, end = decoder.raw_decode(buf)
                    except json.JSONDecodeError:
                        break  # incomplete: wait for more
                    buf = buf[end:]
                    reply = await self._call(request)
                    writer.write((json.dumps(reply) + "\n\n").encode())
                    await writer.drain()
        except (ConnectionError, UnicodeDecodeError):
            pass

    async def _call(self, request: Any) -> dict[str, Any]:
        rid = request.get("id") if isinstance(request, dict) else None
        try:
            if not isinstance(request, dict) or not isinstance(request.get("method"), str):
                raise RpcError(-32600, "Expected this to be an object with a method")
            method = request["method"]
            handler = self._methods.get(method)
            if handler is None:
                raise RpcError(METHOD_NOT_FOUND, f"Unknown command '{method}'")
            result = await handler(parse_params(method, request.get("params")))
            return {"jsonrpc": "2.0", "id": rid, "result": result}
        except RpcError as exc:
            error: dict[str, Any] = {"code": exc.code, "message": exc.message}
            if exc.data is not None:
                error["data"] = exc.data
            return {"jsonrpc": "2.0", "id": rid, "error": error}

    # ---------------------------------------------------------------------------- basics
    async def _notifications(self, params: dict[str, Any]) -> dict[str, Any]:
        return {}

    async def _getinfo(self, params: dict[str, Any]) -> dict[str, Any]:
        net = self.network
        return {"id": net.pubkey(self.node), "alias": net.alias(self.node), "color": "02bf81",
                "num_peers": len(net.peers(self.node)), "num_pending_channels": 0,
                "num_active_channels": len(net.channels(self.node)),
                "num_inactive_channels": 0, "address": [],
                "binding": [{"type": "local socket", "socket": str(self.path)}],
                "version": "v25.02-satvault-simnet", "blockheight": net.block_height,
                "network": C.CLN_NETWORK[net.network], "fees_collected_msat": 0,
                "lightning-dir": str(self.path.parent),
                "our_features": {"init": "08a0000a8a5961", "node": "88a0000a8a5961",
                                 "channel": "", "invoice": "02000002024100"},
                **({} if net.synced(self.node) else {
                    "warning_lightningd_sync": "Still loading latest blocks from bitcoind."})}

    async def _listfunds(self, params: dict[str, Any]) -> dict[str, Any]:
        net = self.network
        bal = net.balance(self.node)
        return C.listfunds(node=self.node, pubkey=bal.pubkey, onchain_sat=bal.onchain_sat,
                           network=net.network, block_height=net.block_height,
                           channels=net.channels(self.node),
                           pubkeys={n: net.pubkey(n) for n in net.node_names})

    async def _decode(self, params: dict[str, Any]) -> dict[str, Any]:
        text = str(params.get("string") or params.get("bolt11") or "")
        if not text:
            raise RpcError(INVALID_PARAMS, "missing required parameter: string")
        try:
            req = self.network.require_valid_request(text)
        except InvalidPaymentRequest as exc:
            raise RpcError(INVALID_PARAMS, f"Invalid bolt11: {exc.message}") from None
        return C.decode(req, self.network.network)

    # -------------------------------------------------------------------------- invoices
    def _entry(self, inv: Invoice) -> dict[str, Any]:
        return C.invoice(inv, self.network.now())

    async def _invoice(self, params: dict[str, Any]) -> dict[str, Any]:
        amount = msat({"amount_msat": required(params, "amount_msat")}, "amount_msat",
                       allow_any=True)
        if amount == 0:
            raise RpcError(INVALID_PARAMS, "amount_msat: should be positive msat or 'any'")
        label = required(params, "label")
        if isinstance(label, bool) or not isinstance(label, str | int):
            raise RpcError(INVALID_PARAMS, "label: should be a string or number")
        description = required(params, "description")
        if not isinstance(description, str):
            raise RpcError(INVALID_PARAMS, "description: should be a string")
        expiry = u64(params, "expiry") or DEFAULT_EXPIRY
        cltv = u64(params, "cltv") or DEFAULT_CLTV
        fallbacks = params.get("fallbacks") or []
        if not isinstance(fallbacks, list) or len(fallbacks) > 1:
            raise RpcError(INVALID_PARAMS, "fallbacks: the simulator takes at most one "
                                           "fallback address")
        preimage = None
        if "preimage" in params:
            try:
                preimage = bytes.fromhex(str(params["preimage"]))
            except ValueError:
                preimage = b""
            if len(preimage) != 32:
                raise RpcError(INVALID_PARAMS, "preimage: should be a 32 byte hex value")
        deschash = bool(params.get("deschashonly"))
        try:
            inv = self.network.create_invoice(
                self.node, amount, memo=description,
                description_hash=hashlib.sha256(description.encode()).digest()
                if deschash else None,
                expiry=expiry, cltv_expiry=cltv,
                fallback_addr=str(fallbacks[0]) if fallbacks else None,
                label=str(label), preimage=preimage)
        except DuplicateInvoice as exc:
            if "label" in exc.message:
                raise RpcError(900, exc.message) from None
            raise RpcError(901, "preimage already used") from None
        except InvalidPaymentRequest as exc:
            raise RpcError(INVALID_PARAMS, f"fallbacks: {exc.message}") from None
        out: dict[str, Any] = {"payment_hash": inv.payment_hash, "expires_at": inv.expires_at,
                               "bolt11": inv.bolt11, "payment_secret": inv.payment_addr,
                               "created_index": inv.add_index}
        if amount and amount > self.network.balance(self.node).remote_msat:
            out["warning_capacity"] = ("Insufficient incoming channel capacity to pay "
                                       "invoice")
        return out

    async def _listinvoices(self, params: dict[str, Any]) -> dict[str, Any]:
        net = self.network
        invoices = net.invoices(self.node)
        if "label" in params:
            invoices = [i for i in invoices if i.label == str(params["label"])]
        if "payment_hash" in params:
            invoices = [i for i in invoices
                        if i.payment_hash == str(params["payment_hash"]).lower()]
        if "invstring" in params:
            invoices = [i for i in invoices
                        if i.bolt11 == str(params["invstring"]).strip().lower()]
        start = u64(params, "start")
        if start is not None:
            invoices = [i for i in invoices if i.add_index >= start]
        limit = u64(params, "limit")
        if limit is not None:
            invoices = invoices[:limit]
        return {"invoices": [self._entry(i) for i in invoices]}

    async def _delinvoice(self, params: dict[str, Any]) -> dict[str, Any]:
        label = str(required(params, "label"))
        status = str(required(params, "status"))
        if status not in ("paid", "expired", "unpaid"):
            raise RpcError(INVALID_PARAMS, "status: should be paid, expired or unpaid")
        inv = self.network.invoice_by_label(self.node, label)
        if inv is None:
            raise RpcError(905, "Unknown invoice")
        current = C.invoice_status(inv, self.network.now())
        if current != status:
            raise RpcError(906, f"Invoice status is {current} not {status}",
                           {"current_status": current, "expected_status": status})
        entry = self._entry(inv)
        self.network.delete_invoice(self.node, inv.payment_hash)
        return entry

    async def _wait_settled(self, after: int, timeout: float | None,
                            match: Callable[[Invoice], bool]) -> Invoice:
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Invoice] = loop.create_future()

        def listener(kind: str, inv: Invoice) -> None:
            if kind == "settled" and inv.settle_index > after and match(inv):
                def settle() -> None:
                    if not done.done():
                        done.set_result(inv)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(settle)

        _, unsubscribe = self.network.subscribe_invoices(self.node, listener)
        try:
            index = after
            while True:
                found = self.network.settled_after(self.node, index)
                if found is None:
                    break
                if match(found):
                    return found
                index = found.settle_index
            if timeout == 0:
                raise RpcError(904, "Timed out while waiting for invoice to be paid")
            try:
                return await asyncio.wait_for(done, timeout)
            except TimeoutError:
                raise RpcError(904, "Timed out while waiting for invoice to be paid"
                               ) from None
        finally:
            unsubscribe()

    async def _waitanyinvoice(self, params: dict[str, Any]) -> dict[str, Any]:
        after = u64(params, "lastpay_index") or 0
        timeout = u64(params, "timeout")
        inv = await self._wait_settled(after, None if timeout is None else float(timeout),
                                       lambda _inv: True)
        return self._entry(inv)

    async def _waitinvoice(self, params: dict[str, Any]) -> dict[str, Any]:
        label = str(required(params, "label"))
        inv = self.network.invoice_by_label(self.node, label)
        if inv is None:
            raise RpcError(-1, "Unknown invoice")
        if C.invoice_status(inv, self.network.now()) != "unpaid":
            return self._entry(inv)
        found = await self._wait_settled(0, None, lambda i: i.label == label)
        return self._entry(found)

    # -------------------------------------------------------------------------- payments
    async def _send(self, bolt11: str, params: dict[str, Any], *, xpay: bool) -> Payment:
        try:
            req = self.network.require_valid_request(bolt11)
        except InvalidPaymentRequest as exc:
            raise RpcError(INVALID_PARAMS, f"Invalid bolt11: {exc.message}") from None
        amount = msat(params, "amount_msat")
        if req.amount_msat is not None and amount is not None:
            raise RpcError(INVALID_PARAMS, "amount_msat parameter unnecessary")
        if req.amount_msat is None and not amount:
            raise RpcError(INVALID_PARAMS, "amount_msat parameter required")
        total = req.amount_msat or amount or 0
        maxfee = msat(params, "maxfee")
        if maxfee is None:
            if xpay:
                maxfee = max(5000, total // 100)
            else:
                percent = float(params.get("maxfeepercent", 0.5))
                exempt = msat(params, "exemptfee")
                maxfee = max(5000 if exempt is None else exempt, int(total * percent / 100))
        existing = self.network.payment(self.node, req.payment_hash)
        if existing is not None and existing.status is PaymentStatus.SUCCEEDED and not xpay:
            return existing  # pay answers a repeat with the earlier success
        try:
            payment = self.network.pay(self.node, bolt11, amount_msat=amount,
                                       fee_limit_msat=maxfee,
                                       label=str(params.get("label") or ""))
        except PaymentRefused as exc:
            if exc.kind == "expired":
                raise RpcError(207, "Invoice expired") from None
            if exc.kind == "already_paid":
                raise RpcError(219, "Already paid") from None
            if exc.kind == "in_transition":
                raise RpcError(209 if xpay else 200,
                               "There is a pending payment for this invoice") from None
            raise RpcError(-1, exc.message) from None
        return await self._final(payment)

    async def _final(self, payment: Payment) -> Payment:
        if payment.final:
            return payment
        if payment.stalled:
            await asyncio.Event().wait()  # never answers; the caller's timeout decides
        loop = asyncio.get_running_loop()
        done: asyncio.Future[Payment] = loop.create_future()

        def listener(p: Payment) -> None:
            if p.final:
                def settle() -> None:
                    if not done.done():
                        done.set_result(p)
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(settle)

        current, unsubscribe = self.network.watch_payment(self.node, payment.payment_hash,
                                                          listener)
        try:
            if current is not None and current.final:
                return current
            return await done
        finally:
            unsubscribe()

    @staticmethod
    def _failure(p: Payment, *, xpay: bool) -> RpcError:
        reason = p.failure_reason
        if reason is FailureReason.INCORRECT_PAYMENT_DETAILS:
            return RpcError(203, "Destination said it doesn't know invoice: "
                                 "incorrect_or_unknown_payment_details")
        if reason in (FailureReason.NO_ROUTE, FailureReason.INSUFFICIENT_BALANCE):
            text = ("insufficient local balance"
                    if reason is FailureReason.INSUFFICIENT_BALANCE else "no route")
            return RpcError(205, f"Ran out of routes to try after 1 attempt: {text}")
        if reason is FailureReason.TIMEOUT:
            return RpcError(209 if xpay else 210, "Timed out: payment did not complete")
        return RpcError(209, "Payment failed: " + reason.short)

    async def _pay(self, params: dict[str, Any]) -> dict[str, Any]:
        p = await self._send(str(required(params, "bolt11")), params, xpay=False)
        if p.status is not PaymentStatus.SUCCEEDED:
            raise self._failure(p, xpay=False)
        return {"destination": p.destination, "payment_hash": p.payment_hash,
                "created_at": p.created_ns / 1e9, "parts": 1, "amount_msat": p.value_msat,
                "amount_sent_msat": p.amount_sent_msat, "payment_preimage": p.preimage,
                "status": "complete"}

    async def _xpay(self, params: dict[str, Any]) -> dict[str, Any]:
        p = await self._send(str(required(params, "invstring")), params, xpay=True)
        if p.status is not PaymentStatus.SUCCEEDED:
            raise self._failure(p, xpay=True)
        return {"payment_preimage": p.preimage, "failed_parts": 0, "successful_parts": 1,
                "amount_msat": p.value_msat, "amount_sent_msat": p.amount_sent_msat}

    def _select(self, params: dict[str, Any]) -> list[Payment]:
        if "bolt11" in params and "payment_hash" in params:
            raise RpcError(INVALID_PARAMS, "Can only specify one of {bolt11} or "
                                           "{payment_hash}")
        pays = self.network.payments(self.node)
        if "payment_hash" in params:
            pays = [p for p in pays if p.payment_hash == str(params["payment_hash"]).lower()]
        if "bolt11" in params:
            pays = [p for p in pays if p.bolt11 == str(params["bolt11"]).strip().lower()]
        if "status" in params:
            wanted = str(params["status"])
            pays = [p for p in pays if C.pay_entry(p)["status"] == wanted]
        # Paging as CLN 23.11 on: by ``index`` (created, or updated: a payment's created and
        # updated index are one here), from ``start`` on, at most ``limit``.
        if "index" in params:
            if params["index"] not in ("created", "updated"):
                raise RpcError(INVALID_PARAMS, "index: should be one of created, updated")
            start, limit = u64(params, "start") or 0, u64(params, "limit")
            pays = [p for p in pays if p.payment_index >= start]
            if limit is not None:
                pays = pays[:limit]
        elif "start" in params or "limit" in params:
            raise RpcError(INVALID_PARAMS, "Can only specify {start} or {limit} with {index}")
        return pays

    async def _listpays(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"pays": [C.pay_entry(p) for p in self._select(params)]}

    async def _listsendpays(self, params: dict[str, Any]) -> dict[str, Any]:
        return {"payments": [C.sendpay_entry(p) for p in self._select(params)]}

