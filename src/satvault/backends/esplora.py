"""The Esplora HTTP API (Blockstream's electrs, mempool.space) for operators without a node.

Esplora reports values in integer satoshis already; fee estimates are floats of sat/vB and are
parsed as Decimal and rounded up. A block's transactions come 25 per page. Errors from the
node behind it arrive as text (``sendrawtransaction RPC error: {"code":-26,…}``) and are
mapped to the same typed errors as the bitcoind adapter.
"""

from __future__ import annotations

import asyncio
import re
from decimal import ROUND_CEILING, Decimal
from typing import Any

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
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.errors import BackendProtocolError, BackendUnavailable, NotFound, TxRejected
from satvault.backends.networks import network_of_genesis
from satvault.kernel import strictjson
from satvault.kernel.tls import default_context

__all__ = ["EsploraBackend"]

_RPC_ERROR = re.compile(r"\{.*\"code\"\s*:\s*(-?\d+).*\"message\"\s*:\s*\"(.*?)\".*\}", re.S)
PAGE = 25
_HASH = re.compile(r"[0-9a-f]{64}")


class EsploraBackend:
    name = "esplora"

    def __init__(self, base_url: str, *, timeout: float = 15.0, retries: int = 3,
                 backoff: float = 0.2, transport: httpx.AsyncBaseTransport | None = None
                 ) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout,
                                         transport=transport, verify=default_context())
        self._retries = retries
        self._backoff = backoff

    async def close(self) -> None:
        await self._client.aclose()

    async def _request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        delay = self._backoff
        for attempt in range(self._retries + 1):
            try:
                resp = await self._client.request(method, path, **kw)
            except (httpx.TransportError, OSError) as exc:
                if attempt == self._retries:
                    raise BackendUnavailable(f"esplora unreachable: {exc}") from exc
                await asyncio.sleep(delay)
                delay *= 2
                continue
            if resp.status_code >= 500 and attempt < self._retries:
                await asyncio.sleep(delay)
                delay *= 2
                continue
            return resp
        raise AssertionError("unreachable")

    async def _get(self, path: str) -> httpx.Response:
        resp = await self._request("GET", path)
        if resp.status_code == 404:
            raise NotFound(f"esplora: {path} not found")
        if resp.status_code >= 500 or resp.status_code == 429:
            raise BackendUnavailable(f"esplora: {path} answered HTTP {resp.status_code}")
        if resp.status_code != 200:
            raise BackendProtocolError(f"esplora: {path} answered HTTP {resp.status_code}")
        return resp

    async def _json(self, path: str) -> Any:
        text = (await self._get(path)).text
        try:
            return strictjson.foreign(text, parse_float=Decimal)
        except ValueError as exc:
            raise BackendProtocolError(f"esplora: {path} did not answer JSON") from exc

    async def _int(self, path: str) -> int:
        text = (await self._get(path)).text.strip()
        if not text.isdigit():
            raise BackendProtocolError(f"esplora: {path} did not answer a number")
        return int(text)

    @staticmethod
    def _tx(obj: dict[str, Any]) -> Tx:
        inputs, coinbase = [], False
        for vin in obj.get("vin", []):
            if vin.get("is_coinbase"):
                coinbase = True
                continue
            inputs.append(OutPoint(vin["txid"], int(vin["vout"])))
        outputs = tuple(TxOut(int(v["value"]), bytes.fromhex(v["scriptpubkey"]))
                        for v in obj.get("vout", []))
        return Tx(obj["txid"], tuple(inputs), outputs, coinbase)

    async def tip(self) -> ChainTip:
        # One block's hash, then that same block's height: two separate "tip" reads could
        # straddle a new block and pair height N with the hash of N+1.
        block_hash = (await self._get("/blocks/tip/hash")).text.strip()
        if not _HASH.fullmatch(block_hash):
            raise BackendProtocolError("esplora: /blocks/tip/hash did not answer a block hash")
        meta = await self._json(f"/block/{block_hash}")
        if not isinstance(meta, dict) or not isinstance(meta.get("height"), int):
            raise BackendProtocolError(f"esplora: /block/{block_hash} has no height")
        return ChainTip(meta["height"], block_hash)

    async def sync_info(self) -> ChainSync:
        """The tip and its times. Esplora serves the chain it has indexed and says nothing of
        headers beyond it: ``headers`` is None, and only the tip's age can show a stall. Nor
        does it name its network: its genesis block does."""
        tip = await self.tip()
        meta = await self._json(f"/block/{tip.hash}")
        if not isinstance(meta, dict) or not isinstance(meta.get("timestamp"), int):
            raise BackendProtocolError(f"esplora: /block/{tip.hash} has no timestamp")
        median = meta.get("mediantime")
        genesis = await self.block_hash(0)
        if not _HASH.fullmatch(genesis):
            raise BackendProtocolError("esplora: /block-height/0 did not answer a block hash")
        return ChainSync(tip.height, None, False, None, meta["timestamp"],
                         median if isinstance(median, int) else None,
                         network_of_genesis(genesis))

    async def tx_index(self) -> TxIndex:
        """An Esplora server looks up every transaction by its txid: always indexed."""
        return TxIndex(True)

    async def block_hash(self, height: int) -> str:
        return (await self._get(f"/block-height/{height}")).text.strip()

    async def block(self, block_hash: str) -> Block:
        meta = await self._json(f"/block/{block_hash}")
        txs: list[Tx] = []
        for start in range(0, int(meta["tx_count"]), PAGE):
            txs.extend(self._tx(t) for t in await self._json(f"/block/{block_hash}/txs/{start}"))
        return Block(meta["id"], int(meta["height"]), meta.get("previousblockhash") or "",
                     int(meta["timestamp"]), tuple(txs))

    async def mempool_txids(self) -> set[str]:
        return set(await self._json("/mempool/txids"))

    async def transaction(self, txid: str) -> TxStatus | None:
        try:
            obj = await self._json(f"/tx/{txid}")
        except NotFound:
            return None
        status = obj.get("status", {})
        if not status.get("confirmed"):
            return TxStatus(txid, 0, None, None, self._tx(obj))
        tip = await self._int("/blocks/tip/height")
        height = int(status["block_height"])
        return TxStatus(txid, tip - height + 1, status["block_hash"], height, self._tx(obj))

    async def raw_transaction(self, txid: str) -> bytes | None:
        """``/tx/:txid/hex``: the best chain and the mempool (Esplora indexes every
        transaction)."""
        try:
            raw_hex = (await self._get(f"/tx/{txid}/hex")).text.strip()
        except NotFound:
            return None
        return checked_raw_tx(txid, raw_hex, f"esplora /tx/{txid}/hex")

    async def broadcast(self, raw_hex: str) -> str:
        resp = await self._request("POST", "/tx", content=raw_hex)
        if resp.status_code == 200:
            return resp.text.strip()
        m = _RPC_ERROR.search(resp.text)
        if m:
            BitcoindBackend._raise(int(m[1]), m[2])
        if resp.status_code >= 500 or resp.status_code == 429:
            # A proxy or server failure says nothing about the transaction: it may have
            # reached the node. Unknown, never "rejected".
            raise BackendUnavailable(f"esplora: broadcast answered HTTP {resp.status_code}")
        raise TxRejected(0, resp.text.strip()[:300])

    async def output(self, txid: str, vout: int, *, include_mempool: bool = True
                     ) -> TxOut | None:
        status = await self.transaction(txid)
        if status is None or vout >= len(status.tx.outputs):
            return None
        if status.tx.outputs[vout].script_pubkey[:1] == b"\x6a":
            return None  # OP_RETURN: never in the UTXO set, whatever /outspend says
        if not include_mempool and status.confirmations == 0:
            return None
        spend = await self._json(f"/tx/{txid}/outspend/{vout}")
        if spend.get("spent"):
            spent_confirmed = spend.get("status", {}).get("confirmed", False)
            if include_mempool or spent_confirmed:
                return None
        return status.tx.outputs[vout]

    async def feerate_sat_vb(self, target_blocks: int) -> int | None:
        estimates = await self._json("/fee-estimates")
        # electrs computes these in floating point (51 arrives as 51.00000000000001): drop the
        # float noise before rounding up, or every such rate costs an extra sat/vB.
        candidates = sorted((int(k), Decimal(v).quantize(Decimal("0.001")))
                            for k, v in estimates.items())
        for target, rate in candidates:
            if target >= target_blocks:
                return max(1, int(rate.to_integral_value(rounding=ROUND_CEILING)))
        return max(1, int(candidates[-1][1].to_integral_value(rounding=ROUND_CEILING))) \
            if candidates else None
