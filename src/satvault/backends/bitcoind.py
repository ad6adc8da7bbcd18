"""Bitcoin Core over its JSON-RPC interface (HTTP POST, Basic auth from user/password or the
node's ``.cookie`` file).

Amounts arrive as JSON numbers in BTC; they are parsed as ``Decimal`` (``parse_float``) and
converted to integer satoshis exactly, or refused. Node error codes become typed errors here
and nowhere else: -28 warming up, -5 not found, -25 missing inputs, -26 rejected, -27 already
in chain. Connection failures are retried with exponential backoff, then surface as
:class:`BackendUnavailable` — which callers treat as "unknown", never as "failed".

Re-sending a transaction is safe (the node answers with the txid, or -27 once it confirmed),
so ``broadcast`` is retried like any read.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import httpx

from satvault.backends._rawtx import checked_raw_tx
from satvault.backends.base import (
    Block,
    ChainSync,
    ChainTip,
    OutPoint,
    Tx,
    TxIndex,
    TxOut,
    TxStatus,
)
from satvault.backends.errors import (
    BackendProtocolError,
    BackendUnavailable,
    BackendWarmingUp,
    NotFound,
    TxAlreadyInChain,
    TxMissingInputs,
    TxRejected,
)
from satvault.backends.networks import network_of_chain
from satvault.kernel import strictjson
from satvault.kernel.tls import default_context
from satvault.logs import get_logger

__all__ = ["BitcoindBackend", "btc_to_sat"]

log = get_logger(__name__)
SAT = Decimal(100_000_000)
METHOD_NOT_FOUND = -32601  # JSON-RPC's code, which Core answers for a method it lacks


def btc_to_sat(value: Any) -> int:
    if not isinstance(value, Decimal | int):
        raise BackendProtocolError(f"amount {value!r} is not a decimal number")
    sat = Decimal(value) * SAT
    if sat != sat.to_integral_value():
        raise BackendProtocolError(f"amount {value} BTC is not a whole number of satoshis")
    return int(sat)


class BitcoindBackend:
    name = "bitcoind"

    def __init__(self, url: str, *, cookie_file: str | Path | None = None,
                 timeout: float = 15.0, retries: int = 3, backoff: float = 0.2,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        parts = urlsplit(url)
        self._user = unquote(parts.username) if parts.username else None
        self._password = unquote(parts.password) if parts.password else None
        netloc = parts.hostname or "127.0.0.1"
        if parts.port:
            netloc += f":{parts.port}"
        self._url = urlunsplit((parts.scheme or "http", netloc, parts.path or "/", "", ""))
        self._cookie_file = Path(cookie_file) if cookie_file else None
        self._retries = retries
        self._backoff = backoff
        self._ids = itertools.count(1)
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport,
                                         verify=default_context())
        self.last_error: str | None = None

    def _auth(self) -> httpx.BasicAuth | None:
        if self._cookie_file is not None:
            try:
                user, _, password = self._cookie_file.read_text().strip().partition(":")
            except OSError as exc:
                raise BackendUnavailable(f"cannot read the cookie file: {exc}") from exc
            return httpx.BasicAuth(user, password)
        if self._user is not None:
            return httpx.BasicAuth(self._user, self._password or "")
        return None

    async def close(self) -> None:
        await self._client.aclose()

    # ------------------------------------------------------------------------- transport
    async def call(self, method: str, *params: Any) -> Any:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                return await self._call_once(method, params)
            except BackendUnavailable as exc:
                self.last_error = str(exc)
                if attempt == self._retries:
                    raise
                log.warning("bitcoind_retry", method=method, attempt=attempt + 1, error=str(exc))
                await asyncio.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    async def _call_once(self, method: str, params: tuple[Any, ...]) -> Any:
        body = {"jsonrpc": "1.0", "id": next(self._ids), "method": method, "params": list(params)}
        try:
            resp = await self._client.post(self._url, content=json.dumps(body, default=str),
                                           auth=self._auth() or httpx.USE_CLIENT_DEFAULT,
                                           headers={"content-type": "application/json"})
        except (httpx.TransportError, OSError) as exc:
            raise BackendUnavailable(f"bitcoind unreachable: {type(exc).__name__}: {exc}") from exc
        if resp.status_code == 401:
            raise BackendProtocolError("bitcoind refused our credentials (HTTP 401)")
        if resp.status_code == 503:
            raise BackendUnavailable("bitcoind is busy (HTTP 503)")
        try:
            payload = strictjson.foreign(resp.text, parse_float=Decimal)
        except ValueError as exc:
            if resp.status_code >= 500:
                # bitcoind's own errors come as JSON (HTTP 500 with an error object); an
                # error page without it is a proxy or gateway in front of the node, which
                # may have passed the call on: unavailable (a broadcast's outcome unknown),
                # never a refusal.
                raise BackendUnavailable(f"bitcoind's gateway answered HTTP "
                                         f"{resp.status_code} with no JSON") from exc
            raise BackendProtocolError(
                f"bitcoind answered HTTP {resp.status_code} with no JSON") from exc
        if not isinstance(payload, dict):
            raise BackendProtocolError(f"bitcoind answered a {type(payload).__name__}, "
                                       "not a JSON-RPC object")
        error = payload.get("error")
        if error:
            if not isinstance(error, dict):
                raise BackendProtocolError(f"bitcoind error: {error!r}")
            self._raise(int(error.get("code", 0)), str(error.get("message", "")))
        self.last_error = None
        return payload.get("result")

    @staticmethod
    def _raise(code: int, message: str) -> None:
        if code == -28:
            raise BackendWarmingUp(f"bitcoind is warming up: {message}")
        if code in (-5, -8) and ("not found" in message.lower() or "No such" in message
                                 or "out of range" in message):
            raise NotFound(message)
        if code == -27:
            raise TxAlreadyInChain(code, message)
        if code == -25:
            raise TxMissingInputs(code, message)
        if code in (-26, -22):
            raise TxRejected(code, message)
        raise BackendProtocolError(f"bitcoind error {code}: {message}")

    # ---------------------------------------------------------------------------- shapes
    @staticmethod
    def _tx(obj: dict[str, Any]) -> Tx:
        inputs, coinbase = [], False
        for vin in obj.get("vin", []):
            if "coinbase" in vin:
                coinbase = True
                continue
            inputs.append(OutPoint(vin["txid"], int(vin["vout"])))
        outputs = tuple(TxOut(btc_to_sat(v["value"]), bytes.fromhex(v["scriptPubKey"]["hex"]))
                        for v in obj.get("vout", []))
        return Tx(obj["txid"], tuple(inputs), outputs, coinbase)

    # -------------------------------------------------------------------------- Protocol
    async def tip(self) -> ChainTip:
        info = await self.call("getblockchaininfo")
        return ChainTip(int(info["blocks"]), str(info["bestblockhash"]))

    async def sync_info(self) -> ChainSync:
        """``getblockchaininfo``: blocks against headers, initial block download, times, and
        the chain it is on."""
        info = await self.call("getblockchaininfo")
        try:
            progress = info.get("verificationprogress")
            return ChainSync(int(info["blocks"]), int(info["headers"]),
                             bool(info.get("initialblockdownload", False)),
                             None if progress is None else float(progress),
                             int(info["time"]), int(info["mediantime"]),
                             network_of_chain(str(info["chain"])))
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendProtocolError(f"bitcoind getblockchaininfo: {exc!r}") from exc

    async def tx_index(self) -> TxIndex | None:
        """``getindexinfo "txindex"`` (Core 0.21+) answers ``{"txindex": {"synced": …,
        "best_block_height": …}}`` while the index runs and ``{}`` without ``-txindex``; None
        from an older node, which does not know the method."""
        try:
            info = await self.call("getindexinfo", "txindex")
        except BackendProtocolError as exc:
            if f"error {METHOD_NOT_FOUND}:" in str(exc):
                return None
            raise
        if not isinstance(info, dict):
            raise BackendProtocolError(f"bitcoind getindexinfo: {info!r}")
        index = info.get("txindex")
        if index is None:
            return TxIndex(False, False)
        try:
            return TxIndex(True, bool(index["synced"]), int(index["best_block_height"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise BackendProtocolError(f"bitcoind getindexinfo: {exc!r}") from exc

    async def block_hash(self, height: int) -> str:
        return str(await self.call("getblockhash", height))

    async def block(self, block_hash: str) -> Block:
        obj = await self.call("getblock", block_hash, 2)
        return Block(obj["hash"], int(obj["height"]), obj.get("previousblockhash") or "",
                     int(obj["time"]), tuple(self._tx(t) for t in obj["tx"]))

    async def mempool_txids(self) -> set[str]:
        return set(await self.call("getrawmempool"))

    async def transaction(self, txid: str) -> TxStatus | None:
        try:
            obj = await self.call("getrawtransaction", txid, True)
        except NotFound:
            return None
        block_hash = obj.get("blockhash")
        if block_hash and int(obj.get("confirmations") or 0) <= 0:
            # Found by the transaction index in a block a reorg took off the active chain
            # (Core keeps such entries): in no block of the best chain and not in the mempool,
            # whose copy Core would have answered first. Gone, unless it comes back.
            return None
        height = obj.get("blockheight")
        if block_hash and height is None:
            height = (await self.call("getblockheader", block_hash))["height"]
        return TxStatus(txid, int(obj.get("confirmations") or 0), block_hash,
                        int(height) if height is not None else None, self._tx(obj))

    async def raw_transaction(self, txid: str) -> bytes | None:
        """``getrawtransaction txid false``: found in the mempool, or in a block through the
        node's ``-txindex`` (which ``satvault doctor`` checks). A stale block's copy is the
        same transaction, so it is answered too."""
        try:
            raw_hex = await self.call("getrawtransaction", txid, False)
        except NotFound:
            return None
        return checked_raw_tx(txid, raw_hex, "bitcoind getrawtransaction")

    async def broadcast(self, raw_hex: str) -> str:
        return str(await self.call("sendrawtransaction", raw_hex))

    async def output(self, txid: str, vout: int, *, include_mempool: bool = True
                     ) -> TxOut | None:
        obj = await self.call("gettxout", txid, vout, include_mempool)
        if obj is None:
            return None
        return TxOut(btc_to_sat(obj["value"]), bytes.fromhex(obj["scriptPubKey"]["hex"]))

    async def feerate_sat_vb(self, target_blocks: int) -> int | None:
        obj = await self.call("estimatesmartfee", target_blocks)
        rate = obj.get("feerate")
        if rate is None:
            return None
        sat_per_kvb = btc_to_sat(rate)
        return max(1, -(-sat_per_kvb // 1000))
