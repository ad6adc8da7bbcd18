"""Core Lightning over its JSON-RPC unix socket.

Each call opens the socket on the event loop, writes one request and reads objects until its
answer (``lightningd`` ends each with a blank line; notifications, which carry no ``id``,
are skipped), as ``pyln-client``'s ``LightningRpc`` does, but without a thread: a call given
up at its deadline closes its socket and holds nothing (pyln's blocking read held a worker
thread per hung call until the node answered). Invoices are
labelled with their payment hash's prefix; ``waitanyinvoice`` with the stored ``pay_index``
is CLN's equivalent of LND's settle-index subscription. ``xpay`` pays (it blocks until the
payment is final); an RPC error with a final code is a definite failure, a lost socket is
UNKNOWN, and ``listpays`` settles it later.

Every call's errors stop here (:meth:`ClnBackend._call`): no socket, a lost connection, a
broken reply, lightningd shutting down or a plugin dying under the call, and no answer by the
call's deadline are :class:`BackendUnavailable`; an RPC error object is a :class:`ClnError`
with lightningd's code (906: ``delinvoice`` found the invoice no longer unpaid). ``xpay``'s
deadline is its own ``retry_for`` plus a grace: past it the payment is UNKNOWN, never failed.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import secrets
from collections.abc import AsyncIterator
from typing import Any

from satvault.backends.errors import (
    BackendProtocolError,
    BackendUnavailable,
    TxRejected,
)
from satvault.backends.lightning import (
    DecodedInvoice,
    Invoice,
    InvoiceState,
    LightningBalances,
    NodeInfo,
    NodePayment,
    PaymentResult,
    PaymentStatus,
)
from satvault.backends.networks import network_of_chain
from satvault.kernel import strictjson

__all__ = ["ClnBackend", "ClnError"]

_STATE = {"unpaid": InvoiceState.OPEN, "paid": InvoiceState.SETTLED,
          "expired": InvoiceState.CANCELED}
# xpay/pay error codes (lightning-pay(7)): which are final, and what LND would call them.
_FAILURES = {203: "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS", 205: "FAILURE_REASON_NO_ROUTE",
             206: "FAILURE_REASON_NO_ROUTE", 207: "FAILURE_REASON_ERROR",
             209: "FAILURE_REASON_NO_ROUTE", 210: "FAILURE_REASON_TIMEOUT",
             219: "FAILURE_REASON_ERROR"}


# lightningd going away under a call (common/jsonrpc_errors.h): the call's outcome is unknown.
_GONE = {-4: "a plugin terminated", -5: "lightningd is shutting down"}
_INVOICE_NOT_FOUND, _INVOICE_STATUS_UNEXPECTED, _WAIT_TIMED_OUT = 905, 906, 904
_MAX_ANSWER = 64 << 20  # bytes of one answer (the calls made here ask for one object each)


class ClnError(TxRejected):
    """lightningd answered a call with an RPC error object: ``code`` and ``reason`` are its
    ``code`` and ``message`` (e.g. 906 for ``delinvoice`` on an invoice no longer unpaid)."""

    def __init__(self, method: str, code: int, reason: str) -> None:
        self.method = method
        super().__init__(code, reason)
        self.args = (f"cln {method} refused ({code}): {reason}",)  # not a transaction


def _msat(v: Any) -> int:
    if v is None:
        return 0
    if isinstance(v, int):
        return v
    text = str(v)
    return int(text[:-4]) if text.endswith("msat") else int(text)


class ClnBackend:
    name = "cln"

    def __init__(self, rpc_path: str, *, timeout: float = 30.0,
                 pay_grace_seconds: float = 30.0) -> None:
        self._path = rpc_path
        self._timeout = timeout
        self._pay_grace = pay_grace_seconds
        self._ids = itertools.count(1)

    async def close(self) -> None:
        return None

    async def _call(self, method: str, payload: dict[str, Any] | None = None, *,
                    timeout: float | None = None) -> Any:
        """One RPC call, its errors translated (module docstring) and bounded in time."""
        deadline = self._timeout if timeout is None else timeout
        try:
            async with asyncio.timeout(deadline):
                answer = await self._exchange(method, payload or {})
        except TimeoutError as exc:
            raise BackendUnavailable(f"cln {method}: no answer in {deadline:g} s") from exc
        except (OSError, ValueError, TypeError) as exc:  # socket gone, or a broken reply
            raise BackendUnavailable(f"cln {method}: {type(exc).__name__}: {exc}") from exc
        err = answer.get("error")
        if err is None:
            if "result" not in answer:
                raise BackendUnavailable(f"cln {method}: an answer without a result")
            return answer["result"]
        if not isinstance(err, dict):
            raise BackendProtocolError(f"cln {method}: unreadable error {err!r}")
        try:
            code = int(err.get("code", 0))
        except (TypeError, ValueError):
            raise BackendProtocolError(f"cln {method}: unreadable error {err!r}") from None
        message = str(err.get("message", ""))
        if code in _GONE:
            raise BackendUnavailable(f"cln {method}: {_GONE[code]} ({message})")
        raise ClnError(method, code, message)

    async def _exchange(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        """Write the request on a socket of its own and read up to its answer; the socket is
        closed however this ends (a cancel at the deadline included)."""
        rid = f"satvault:{method}#{next(self._ids)}"
        request = {"jsonrpc": "2.0", "id": rid, "method": method,
                   "params": {k: v for k, v in params.items() if v is not None}}
        reader, writer = await _open(self._path)
        try:
            writer.write(json.dumps(request).encode())
            await writer.drain()
            while True:
                try:
                    frame = await reader.readuntil(b"\n\n")
                except asyncio.IncompleteReadError:
                    raise ConnectionResetError("lightningd closed the connection") from None
                except asyncio.LimitOverrunError:
                    raise ValueError(f"an answer over {_MAX_ANSWER} bytes") from None
                obj = strictjson.foreign(frame)
                if not isinstance(obj, dict):
                    raise TypeError(f"an answer that is not an object: {obj!r}")
                if obj.get("id") is None and "method" in obj:
                    continue  # a notification
                if obj.get("id") != rid:
                    raise ValueError(f"an answer to another request: {obj.get('id')!r}")
                return obj
        finally:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()

    async def get_info(self) -> NodeInfo:
        info = await self._call("getinfo")
        return NodeInfo(info["id"], info.get("alias", ""),
                        network_of_chain(info.get("network", "")),
                        int(info.get("blockheight", 0)),
                        not info.get("warning_bitcoind_sync")
                        and not info.get("warning_lightningd_sync"))

    @staticmethod
    def _invoice(obj: dict[str, Any]) -> Invoice:
        amount = obj.get("amount_msat")
        return Invoice(
            payment_hash=obj["payment_hash"], bolt11=obj.get("bolt11", ""),
            amount_msat=_msat(amount) if amount not in (None, "any") else None,
            state=_STATE.get(obj.get("status", "unpaid"), InvoiceState.OPEN),
            paid_msat=_msat(obj.get("amount_received_msat")),
            settle_index=int(obj.get("pay_index") or 0),
            preimage=obj.get("payment_preimage"))

    async def create_invoice(self, amount_msat: int | None, *, memo: str = "",
                             hashed_description: str | None = None, expiry: int = 3600,
                             fallback_address: str | None = None) -> Invoice:
        payload: dict[str, Any] = {
            "amount_msat": amount_msat if amount_msat else "any",
            "label": f"satvault-{secrets.token_hex(12)}", "description": memo or "satvault",
            "expiry": expiry}
        if hashed_description is not None:
            # lightningd hashes the text itself and puts only the hash in the invoice
            payload["description"], payload["deschashonly"] = hashed_description, True
        if fallback_address:
            payload["fallbacks"] = [fallback_address]
        out = await self._call("invoice", payload)
        return Invoice(out["payment_hash"], out["bolt11"], amount_msat, InvoiceState.OPEN)

    async def lookup_invoice(self, payment_hash: str) -> Invoice | None:
        found = (await self._call("listinvoices", {"payment_hash": payment_hash}))["invoices"]
        return self._invoice(found[0]) if found else None

    async def cancel_invoice(self, payment_hash: str) -> None:
        """Nobody can pay it any more: an unpaid invoice is deleted, an expired one is
        unpayable already. A paid one cannot be taken back, and saying so is the point
        (LND refuses the same): it was paid from outside, and settling it again inside the
        ledger would leave that payment credited to nobody (found from outside: the call
        returned quietly for a paid invoice)."""
        found = (await self._call("listinvoices", {"payment_hash": payment_hash}))["invoices"]
        status = found[0].get("status") if found else None
        if status == "unpaid":
            try:
                await self._call("delinvoice", {"label": found[0]["label"], "status": "unpaid"})
            except ClnError as exc:
                if exc.code == _INVOICE_NOT_FOUND:
                    return  # deleted meanwhile: nobody can pay it either
                raise  # 906: paid (or expired) since we listed it; the caller asks again
        elif status == "paid":
            raise TxRejected(0, "the invoice is already paid")

    async def subscribe_invoices(self, *, add_index: int = 0, settle_index: int = 0
                                 ) -> AsyncIterator[Invoice]:
        index = settle_index
        while True:
            try:
                paid = await self._call("waitanyinvoice", {"lastpay_index": index,
                                                           "timeout": 30},
                                        timeout=30 + self._timeout)
            except ClnError as exc:
                if exc.code == _WAIT_TIMED_OUT:  # nothing paid yet
                    continue
                raise BackendUnavailable(f"cln waitanyinvoice: {exc}") from exc
            inv = self._invoice(paid)
            index = max(index, inv.settle_index)
            yield inv

    async def pay(self, bolt11: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult:
        payload: dict[str, Any] = {"invstring": bolt11, "maxfee": fee_limit_msat,
                                   "retry_for": timeout_seconds}
        if amount_msat is not None:
            payload["amount_msat"] = amount_msat
        try:
            # Past its own retry_for and a grace, a silent node leaves the payment UNKNOWN
            # (BackendUnavailable): the payer keeps the hold and listpays settles it.
            out = await self._call("xpay", payload,
                                   timeout=timeout_seconds + self._pay_grace)
        except ClnError as exc:
            decoded = await self._call("decode", {"string": bolt11})
            # Any other error is lightningd refusing the call (bad parameters, its own
            # invoice …): a failure too. The payer believes a failure only when the node's
            # own record agrees (``listpays``: none, or failed), as with LND; found from
            # outside, one taken as in flight was sent again at every pass, held for good.
            # (lightningd going away under the call is BackendUnavailable: unknown.)
            reason = _FAILURES.get(exc.code) or f"refused: {exc.reason}"[:120]
            return PaymentResult(decoded.get("payment_hash", ""), PaymentStatus.FAILED,
                                 failure_reason=reason)
        amount = _msat(out.get("amount_msat"))
        sent = _msat(out.get("amount_sent_msat"))
        decoded = await self._call("decode", {"string": bolt11})
        return PaymentResult(decoded.get("payment_hash", ""), PaymentStatus.SUCCEEDED,
                             amount_msat=amount, fee_msat=max(0, sent - amount),
                             preimage=out.get("payment_preimage"))

    async def track_payment(self, payment_hash: str) -> PaymentResult | None:
        pays = (await self._call("listpays", {"payment_hash": payment_hash}))["pays"]
        if not pays:
            return None
        complete = [p for p in pays if p.get("status") == "complete"]
        if complete:
            p = complete[0]
            amount, sent = _msat(p.get("amount_msat")), _msat(p.get("amount_sent_msat"))
            return PaymentResult(payment_hash, PaymentStatus.SUCCEEDED, amount_msat=amount,
                                 fee_msat=max(0, sent - amount), preimage=p.get("preimage"))
        if any(p.get("status") == "pending" for p in pays):
            return PaymentResult(payment_hash, PaymentStatus.IN_FLIGHT)
        return PaymentResult(payment_hash, PaymentStatus.FAILED,
                             failure_reason="FAILURE_REASON_ERROR")

    async def list_payments(self, *, after_index: int = 0, limit: int = 1000
                            ) -> list[NodePayment]:
        """``listsendpays`` by created index (CLN 23.11 on). A payment in parts has a row
        per part: they are one payment here, complete if any part is, pending while any is,
        at its first part's index."""
        rows = (await self._call("listsendpays", {
            "index": "created", "start": after_index + 1, "limit": limit}))["payments"]
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for row in rows:
            by_hash.setdefault(str(row.get("payment_hash", "")), []).append(row)
        found = []
        for payment_hash, parts in by_hash.items():
            statuses = {p.get("status") for p in parts}
            status = (PaymentStatus.SUCCEEDED if "complete" in statuses
                      else PaymentStatus.IN_FLIGHT if "pending" in statuses
                      else PaymentStatus.FAILED)
            done = [p for p in parts if p.get("status") != "failed"] or parts
            amount = sum(_msat(p.get("amount_msat")) for p in done)
            sent = sum(_msat(p.get("amount_sent_msat")) for p in done)
            found.append(NodePayment(payment_hash, status, amount, max(0, sent - amount),
                                     min(int(p.get("created_index", 0)) for p in parts)))
        return sorted(found, key=lambda p: p.index)

    async def decode(self, bolt11: str) -> DecodedInvoice:
        d = await self._call("decode", {"string": bolt11})
        amount = d.get("amount_msat")
        return DecodedInvoice(
            payment_hash=d["payment_hash"], destination=d.get("payee", ""),
            amount_msat=_msat(amount) if amount is not None else None,
            description=d.get("description", ""), description_hash=d.get("description_hash"),
            timestamp=int(d.get("created_at", 0)), expiry=int(d.get("expiry", 3600)),
            network=d.get("currency", ""),
            min_final_cltv_expiry=int(d.get("min_final_cltv_expiry", 18)))

    async def balances(self) -> LightningBalances:
        funds = await self._call("listfunds")
        local = sum(_msat(c.get("our_amount_msat")) for c in funds.get("channels", []))
        total = sum(_msat(c.get("amount_msat")) for c in funds.get("channels", []))
        onchain = sum(_msat(o.get("amount_msat")) for o in funds.get("outputs", [])) // 1000
        return LightningBalances(local, total - local, onchain)


async def _open(path: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The RPC socket; a path longer than a unix socket address holds (108 bytes on Linux)
    is reached through the directory's descriptor, as pyln-client does."""
    try:
        return await asyncio.open_unix_connection(path, limit=_MAX_ANSWER)
    except OSError as exc:
        if "too long" not in str(exc) or not os.path.isdir("/proc/self/fd"):
            raise
    folder = os.open(os.path.dirname(path) or ".", os.O_DIRECTORY | os.O_RDONLY)
    try:
        return await asyncio.open_unix_connection(
            f"/proc/self/fd/{folder}/{os.path.basename(path)}", limit=_MAX_ANSWER)
    finally:
        os.close(folder)
