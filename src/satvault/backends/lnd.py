"""LND over its REST API (the grpc-gateway): macaroon in ``Grpc-Metadata-macaroon`` (hex), TLS
with the node's own certificate.

Shapes follow LND's API definitions (``lnrpc/lightning.yaml``, ``routerrpc/router.yaml``):
snake_case names, ``bytes`` fields as base64, 64-bit integers as strings, streaming calls as
newline-delimited ``{"result": …}`` or ``{"error": …}`` objects.

The calls go through httpx's API on aiohttp's connection pool and HTTP parser
(``httpx_aiohttp.AiohttpTransport``, by one of httpx's maintainers): about half the client CPU
per call of httpx's own transport (httpcore + anyio), measured side by side
(``docs/benchmarks.md``); ``http_client="httpx"`` keeps httpx's own. Either way every
failure to get an answer is an ``httpx.TransportError`` here, so the rules below do not
depend on the choice.

Sending always passes ``fee_limit_msat`` (LND's default limit is zero) and follows the
``/v2/router/send`` stream until the payment is final or our deadline passes; a deadline or a
lost connection is *not* a failure: the payment stays in flight and :meth:`track_payment`
settles it later.
"""

from __future__ import annotations

import base64
import hashlib
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from httpx_aiohttp import AiohttpTransport

from satvault.backends.errors import BackendProtocolError, BackendUnavailable, TxRejected
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
from satvault.kernel.tls import default_context
from satvault.logs import get_logger

__all__ = ["LndBackend", "LndError"]

log = get_logger(__name__)


class LndError(TxRejected):
    """LND refused a request (e.g. ``invoice is already paid``)."""


def _b64(h: str) -> str:
    return base64.b64encode(bytes.fromhex(h)).decode()


def _b64url(h: str) -> str:
    return base64.urlsafe_b64encode(bytes.fromhex(h)).decode()


def _hex(b64: str | None) -> str | None:
    return base64.b64decode(b64).hex() if b64 else None


def _network_of(bolt11: str) -> str:
    text = bolt11.lower()
    for prefix, network in (("lnbcrt", "regtest"), ("lntbs", "signet"), ("lntb", "testnet"),
                            ("lnbc", "mainnet")):
        if text.startswith(prefix):
            return network
    return ""


def _int(v: Any) -> int:
    return int(v or 0)


class LndBackend:
    name = "lnd"

    def __init__(self, url: str, *, macaroon_hex: str | None = None,
                 macaroon_path: str | Path | None = None, tls_cert: str | Path | None = None,
                 timeout: float = 30.0, transport: httpx.AsyncBaseTransport | None = None,
                 http_client: str = "aiohttp") -> None:
        if macaroon_hex is None and macaroon_path is not None:
            macaroon_hex = Path(macaroon_path).read_bytes().hex()
        headers = {"Grpc-Metadata-macaroon": macaroon_hex} if macaroon_hex else {}
        # The node's own certificate is the only one trusted (LND signs it itself).
        verify: Any = ssl.create_default_context(cafile=str(tls_cert)) if tls_cert \
            else default_context()
        if http_client not in ("aiohttp", "httpx"):
            raise ValueError(f"http_client must be aiohttp or httpx, not {http_client!r}")
        if transport is None and http_client == "aiohttp":
            transport = AiohttpTransport(verify=verify)
        self._client = httpx.AsyncClient(base_url=url.rstrip("/"), headers=headers,
                                         timeout=timeout, verify=verify, transport=transport)

    async def close(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------------- transport
    async def _call(self, method: str, path: str, **kw: Any) -> Any:
        try:
            resp = await self._client.request(method, path, **kw)
        except (httpx.TransportError, OSError) as exc:
            raise BackendUnavailable(f"lnd unreachable: {type(exc).__name__}: {exc}") from exc
        return self._parse(resp, path)

    @staticmethod
    def _parse(resp: httpx.Response, path: str) -> Any:
        """JSON body, or a typed error. An answer from LND itself (a JSON error with a gRPC
        code, whatever the HTTP status) is a definite refusal (LndError); only a missing or
        non-JSON answer from a proxy in front of it is an outage."""
        try:
            body = strictjson.foreign(resp.content)
        except ValueError as exc:
            if resp.status_code >= 500:
                raise BackendUnavailable(f"lnd {path}: HTTP {resp.status_code}") from exc
            raise BackendProtocolError(f"lnd {path}: HTTP {resp.status_code}, no JSON") from exc
        if resp.status_code < 400:
            return body
        err = body.get("error", body) if isinstance(body, dict) else {}
        if not isinstance(err, dict) or "code" not in err:
            if resp.status_code >= 500:
                raise BackendUnavailable(f"lnd {path}: HTTP {resp.status_code}")
            raise BackendProtocolError(f"lnd {path}: HTTP {resp.status_code}: {body!r}")
        raise LndError(int(err.get("code", 2)), str(err.get("message", "")))

    def _stream_error(self, resp: httpx.Response, path: str) -> None:
        """A streaming call refused up front: its first JSON line carries the gRPC error."""
        lines = [ln for ln in resp.text.splitlines() if ln.strip()]
        try:
            first = strictjson.foreign(lines[0]) if lines else None
        except ValueError:
            first = None
        err = first.get("error", first) if isinstance(first, dict) else None
        if isinstance(err, dict) and "code" in err:
            raise LndError(int(err["code"]), str(err.get("message", "")))
        self._parse(resp, path)
        raise BackendProtocolError(f"lnd {path}: HTTP {resp.status_code}")

    async def _stream(self, method: str, path: str, *, read_timeout: float | None = None,
                      **kw: Any) -> AsyncIterator[dict[str, Any]]:
        timeout = httpx.Timeout(10.0, read=read_timeout)
        try:
            async with self._client.stream(method, path, timeout=timeout, **kw) as resp:
                if resp.status_code >= 400:
                    await resp.aread()
                    self._stream_error(resp, path)
                async for line in resp.aiter_lines():
                    if not line.strip():
                        continue
                    chunk = strictjson.foreign(line)
                    if chunk.get("error"):
                        err = chunk["error"]
                        raise LndError(int(err.get("code", 2)), str(err.get("message", "")))
                    yield chunk.get("result", chunk)
        except (httpx.TransportError, OSError) as exc:
            raise BackendUnavailable(f"lnd stream {path} lost: {exc}") from exc

    # ---------------------------------------------------------------------------- shapes
    @staticmethod
    def _invoice(obj: dict[str, Any]) -> Invoice:
        value = _int(obj.get("value_msat")) or None
        return Invoice(
            payment_hash=_hex(obj.get("r_hash")) or "",
            bolt11=obj.get("payment_request", ""),
            amount_msat=value,
            state=InvoiceState(str(obj.get("state", "OPEN")).lower()),
            paid_msat=_int(obj.get("amt_paid_msat")),
            add_index=_int(obj.get("add_index")),
            settle_index=_int(obj.get("settle_index")),
            preimage=_hex(obj.get("r_preimage")),
        )

    @staticmethod
    def _payment(obj: dict[str, Any]) -> PaymentResult:
        preimage = obj.get("payment_preimage") or None
        if preimage is not None and not preimage.strip("0"):
            preimage = None  # LND reports all zeros until the payment succeeded
        status = str(obj.get("status", "IN_FLIGHT")).upper()
        mapped = {"SUCCEEDED": PaymentStatus.SUCCEEDED, "FAILED": PaymentStatus.FAILED}.get(
            status, PaymentStatus.IN_FLIGHT)
        reason = obj.get("failure_reason")
        return PaymentResult(
            payment_hash=str(obj.get("payment_hash", "")),
            status=mapped,
            amount_msat=_int(obj.get("value_msat")),
            fee_msat=_int(obj.get("fee_msat")),
            preimage=preimage,
            failure_reason=None if reason in (None, "", "FAILURE_REASON_NONE") else str(reason),
            index=_int(obj.get("payment_index")) or None,
        )

    # -------------------------------------------------------------------------- Protocol
    async def get_info(self) -> NodeInfo:
        info = await self._call("GET", "/v1/getinfo")
        chains = info.get("chains") or [{}]
        return NodeInfo(info.get("identity_pubkey", ""), info.get("alias", ""),
                        network_of_chain(chains[0].get("network", "")),
                        _int(info.get("block_height")), bool(info.get("synced_to_chain")))

    async def create_invoice(self, amount_msat: int | None, *, memo: str = "",
                             hashed_description: str | None = None, expiry: int = 3600,
                             fallback_address: str | None = None) -> Invoice:
        body: dict[str, Any] = {"memo": memo, "expiry": str(expiry)}
        if amount_msat:
            body["value_msat"] = str(amount_msat)
        if hashed_description is not None:  # committed to by its SHA-256, not carried
            body["description_hash"] = base64.b64encode(
                hashlib.sha256(hashed_description.encode("utf-8")).digest()).decode()
        if fallback_address:
            body["fallback_addr"] = fallback_address
        out = await self._call("POST", "/v1/invoices", json=body)
        payment_hash = _hex(out.get("r_hash")) or ""
        return Invoice(payment_hash, out["payment_request"], amount_msat, InvoiceState.OPEN,
                       add_index=_int(out.get("add_index")))

    async def lookup_invoice(self, payment_hash: str) -> Invoice | None:
        try:
            obj = await self._call("GET", "/v2/invoices/lookup",
                                   params={"payment_hash": _b64url(payment_hash)})
        except LndError as exc:
            if exc.code == 5 and "unable to locate" in exc.reason:  # NOT_FOUND, from LND
                return None
            raise
        return self._invoice(obj)

    async def cancel_invoice(self, payment_hash: str) -> None:
        """Nobody can pay it any more. An invoice the node does not have (a node that lost or
        never had it) is unpayable already: done, as with CLN (found from outside: LND's
        "unable to locate invoice" made the invoice worker retry the cancel every second)."""
        try:
            await self._call("POST", "/v2/invoices/cancel",
                             json={"payment_hash": _b64(payment_hash)})
        except LndError as exc:
            # LND answers its invoice registry's ErrInvoiceNotFound here as an unknown
            # error (code 2), not NOT_FOUND as its lookup does: read by the words.
            if exc.code in (2, 5) and "unable to locate invoice" in exc.reason:
                return
            raise

    async def subscribe_invoices(self, *, add_index: int = 0, settle_index: int = 0
                                 ) -> AsyncIterator[Invoice]:
        params = {"add_index": str(add_index), "settle_index": str(settle_index)}
        async for chunk in self._stream("GET", "/v1/invoices/subscribe", params=params):
            yield self._invoice(chunk)

    async def pay(self, bolt11: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult:
        body: dict[str, Any] = {"payment_request": bolt11, "fee_limit_msat": str(fee_limit_msat),
                                "timeout_seconds": timeout_seconds, "no_inflight_updates": False}
        if amount_msat is not None:
            body["amt_msat"] = str(amount_msat)
        last: PaymentResult | None = None
        # A stream that goes quiet past the payment's own timeout is UNKNOWN (the caller keeps
        # the hold and tracks it), never a failure. Once the node has sent an update the
        # payment has left: an error on the stream after it (the node shutting down, its
        # gateway failing) says nothing about the payment, whose last state stands.
        try:
            async for chunk in self._stream("POST", "/v2/router/send", json=body,
                                            read_timeout=timeout_seconds + 0.25):
                last = self._payment(chunk)
                if last.status is not PaymentStatus.IN_FLIGHT:
                    return last
        except LndError:
            if last is None:
                raise
            return last
        if last is None:
            raise BackendUnavailable("lnd closed the payment stream without an update")
        return last

    async def track_payment(self, payment_hash: str) -> PaymentResult | None:
        """The payment's current state: LND sends it first on the track stream, so one
        update is enough (waiting for a final one would hang on a stuck HTLC)."""
        path = f"/v2/router/track/{_b64url(payment_hash)}"
        try:
            async for chunk in self._stream("GET", path, read_timeout=10.0,
                                            params={"no_inflight_updates": "false"}):
                return self._payment(chunk)
        except LndError as exc:
            if exc.code == 5:  # NOT_FOUND: "payment isn't initiated"
                return None
            raise
        raise BackendUnavailable("lnd closed the track stream without an update")

    async def list_payments(self, *, after_index: int = 0, limit: int = 1000
                            ) -> list[NodePayment]:
        """``ListPayments`` from ``index_offset`` (exclusive) on, in-flight and failed
        payments included."""
        out = await self._call("GET", "/v1/payments", params={
            "include_incomplete": "true", "index_offset": str(after_index),
            "max_payments": str(limit)})
        found = []
        for obj in out.get("payments") or []:
            p = self._payment(obj)
            found.append(NodePayment(p.payment_hash, p.status, p.amount_msat, p.fee_msat,
                                     p.index or 0))
        return found

    async def decode(self, bolt11: str) -> DecodedInvoice:
        d = await self._call("GET", f"/v1/payreq/{bolt11}")
        return DecodedInvoice(
            payment_hash=d["payment_hash"], destination=d.get("destination", ""),
            amount_msat=_int(d.get("num_msat")) or None, description=d.get("description", ""),
            description_hash=d.get("description_hash") or None,
            timestamp=_int(d.get("timestamp")), expiry=_int(d.get("expiry")) or 3600,
            network=_network_of(bolt11), min_final_cltv_expiry=_int(d.get("cltv_expiry")) or 18)

    async def balances(self) -> LightningBalances:
        ch = await self._call("GET", "/v1/balance/channels")
        chain = await self._call("GET", "/v1/balance/blockchain")
        return LightningBalances(_int((ch.get("local_balance") or {}).get("msat")),
                                 _int((ch.get("remote_balance") or {}).get("msat")),
                                 _int(chain.get("confirmed_balance")))
