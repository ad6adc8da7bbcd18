"""A small Esplora HTTP API over a simnet ``Chain``: the endpoints ``EsploraBackend`` calls,
answering in Blockstream esplora/electrs's shapes and words.

Like electrs, the fake keeps its own view of the chain for reads (blocks, transactions,
spends) and hands broadcasts and fee estimates to the node behind it: here an unstarted
``SimnetServer`` over the same chain, called in-process, so ``POST /tx`` refuses exactly what
``sendrawtransaction`` refuses, and reports it as electrs does (HTTP 400,
``sendrawtransaction RPC error: {"code":-26,"message":"dust"}``).

Wire it to the adapter without a socket::

    app = create_app(chain)                  # served under /api, like blockstream.info/api
    EsploraBackend("http://esplora.test/api", transport=httpx.ASGITransport(app=app))

``app.state.genesis``, when set, is the hash ``/block-height/0`` answers: the fake then plays a
server of that network (the blocks stay regtest's).

Every handler holds ``app.state.lock`` (the node's lock), so a test that changes the chain
under that lock never shows a half-changed chain.
"""

from __future__ import annotations

import json
from typing import Any

from embit.networks import NETWORKS
from embit.script import Script
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route

from satvault.simnet import Chain, RpcError, SimnetServer

__all__ = ["FEE_TARGETS", "PAGE", "create_app"]

PAGE = 25
FEE_TARGETS = (*range(1, 26), 144, 504, 1008)
_NULL_TXID = "00" * 32
_REGTEST = NETWORKS["regtest"]


def _text(body: str, status: int = 200) -> PlainTextResponse:
    return PlainTextResponse(body, status_code=status)


def _is_hash(s: str) -> bool:
    if len(s) != 64:
        return False
    try:
        bytes.fromhex(s)
    except ValueError:
        return False
    return True


def _script_type(spk: bytes) -> str:
    if len(spk) == 22 and spk[:2] == b"\x00\x14":
        return "v0_p2wpkh"
    if len(spk) == 34 and spk[:2] == b"\x00\x20":
        return "v0_p2wsh"
    if len(spk) == 34 and spk[:2] == b"\x51\x20":
        return "v1_p2tr"
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[-2:] == b"\x88\xac":
        return "p2pkh"
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[-1:] == b"\x87":
        return "p2sh"
    if spk[:1] == b"\x6a":
        return "op_return"
    return "unknown"


def _vout_json(value: int, spk: bytes) -> dict[str, Any]:
    out: dict[str, Any] = {"scriptpubkey": spk.hex(), "scriptpubkey_type": _script_type(spk)}
    if out["scriptpubkey_type"] not in ("op_return", "unknown"):
        out["scriptpubkey_address"] = Script(spk).address(_REGTEST)
    out["value"] = value
    return out


class _Esplora:
    def __init__(self, chain: Chain) -> None:
        self.chain = chain
        self.node = SimnetServer(chain)  # never started: the bitcoind behind electrs
        self.lock = self.node.lock

    # -- shapes --------------------------------------------------------------------------

    def _prevouts(self, tx: Any, block: Any) -> list[Any] | None:
        c = self.chain
        if tx.is_coinbase:
            return None
        if block is not None:
            pos = next(i for i, t in enumerate(block.txs) if t.txid == tx.txid)
            return list(c.spent_coins(block)[pos])
        coins = [c.utxo(op) or c.mempool.output(op, c.height) for op in tx.outpoints()]
        return coins if all(coin is not None for coin in coins) else None

    def status(self, block: Any) -> dict[str, Any]:
        if block is None:
            return {"confirmed": False}
        return {"confirmed": True, "block_height": block.height, "block_hash": block.hash,
                "block_time": block.header.time}

    def tx_json(self, tx: Any, block: Any) -> dict[str, Any]:
        prevouts = self._prevouts(tx, block)
        vin = []
        for i, inp in enumerate(tx.tx.vin):
            item: dict[str, Any] = {
                "txid": inp.txid.hex(), "vout": inp.vout, "prevout": None,
                "scriptsig": inp.script_sig.data.hex(),
                "witness": [w.hex() for w in inp.witness.items],
                "is_coinbase": tx.is_coinbase, "sequence": inp.sequence,
            }
            if prevouts is not None:
                item["prevout"] = _vout_json(prevouts[i].value, prevouts[i].spk)
            vin.append(item)
        vout = [_vout_json(o.value, o.script_pubkey.data) for o in tx.tx.vout]
        fee = 0
        if prevouts is not None:
            fee = sum(p.value for p in prevouts) - sum(o.value for o in tx.tx.vout)
        return {"txid": tx.txid, "version": tx.tx.version, "locktime": tx.tx.locktime,
                "vin": vin, "vout": vout, "size": tx.size, "weight": tx.weight, "fee": fee,
                "status": self.status(block)}

    def block_json(self, block: Any) -> dict[str, Any]:
        h = block.header
        return {"id": block.hash, "height": block.height, "version": h.version,
                "timestamp": h.time, "tx_count": len(block.txs), "size": block.size(),
                "weight": block.weight(), "merkle_root": h.merkle[::-1].hex(),
                "previousblockhash": h.prev[::-1].hex() if block.height > 0 else None,
                "mediantime": self.chain.median_time_past(block.height), "nonce": h.nonce,
                "bits": h.bits, "difficulty": 0}

    def spender(self, txid: str, vout: int, created_in: Any) -> dict[str, Any]:
        """electrs's spend index: who spends ``txid:vout``, in the mempool or the chain."""
        c = self.chain
        op = (txid, vout)
        in_pool = c.mempool.spender(op)
        if in_pool is not None:
            entry = c.mempool.get(in_pool)
            assert entry is not None
            return {"spent": True, "txid": in_pool, "vin": entry.tx.outpoints().index(op),
                    "status": self.status(None)}
        if created_in is None or c.utxo(op) is not None:
            return {"spent": False}
        for height in range(created_in.height, c.height + 1):
            block = c.block_at(height)
            assert block is not None
            for t in block.txs[1:]:
                if op in t.outpoints():
                    return {"spent": True, "txid": t.txid, "vin": t.outpoints().index(op),
                            "status": self.status(block)}
        return {"spent": False}  # provably unspendable (OP_RETURN): never in any spend index

    # -- endpoints -----------------------------------------------------------------------

    async def tip_height(self, request: Request) -> Response:
        with self.lock:
            return _text(str(self.chain.height))

    async def tip_hash(self, request: Request) -> Response:
        with self.lock:
            return _text(self.chain.tip.hash)

    async def block_height(self, request: Request) -> Response:
        raw = request.path_params["height"]
        if not raw.isdigit():
            return _text("Invalid height", 400)
        with self.lock:
            block = self.chain.block_at(int(raw))
            if block is None:
                return _text("Block not found", 404)
            genesis = request.app.state.genesis
            return _text(genesis if raw == "0" and genesis else block.hash)

    def _block(self, block_hash: str) -> Any:
        return self.chain.block(block_hash.lower()) if _is_hash(block_hash) else None

    async def block(self, request: Request) -> Response:
        with self.lock:
            block = self._block(request.path_params["hash"])
            if block is None:
                return _text("Block not found", 404)
            return JSONResponse(self.block_json(block))

    async def block_txs(self, request: Request) -> Response:
        raw = request.path_params["start"]
        if not raw.isdigit() or int(raw) % PAGE:
            return _text(f"start index must be a multipication of {PAGE}", 400)
        start = int(raw)
        with self.lock:
            block = self._block(request.path_params["hash"])
            if block is None:
                return _text("Block not found", 404)
            if start >= len(block.txs):
                return _text("start index out of range", 404)
            return JSONResponse([self.tx_json(t, block) for t in block.txs[start:start + PAGE]])

    async def mempool_txids(self, request: Request) -> Response:
        with self.lock:
            return JSONResponse([e.txid for e in self.chain.mempool])

    def _find(self, txid: str) -> Any:
        """Esplora indexes the best chain and the mempool only: a transaction the simulator's
        (Core-like) index still finds in a stale block is not found here."""
        hit = self.chain.find_tx(txid.lower()) if _is_hash(txid) else None
        if hit is not None and hit[1] is not None and not self.chain.is_active(hit[1]):
            return None
        return hit

    async def tx(self, request: Request) -> Response:
        with self.lock:
            hit = self._find(request.path_params["txid"])
            if hit is None:
                return _text("Transaction not found", 404)
            return JSONResponse(self.tx_json(*hit))

    async def tx_hex(self, request: Request) -> Response:
        with self.lock:
            hit = self._find(request.path_params["txid"])
            if hit is None:
                return _text("Transaction not found", 404)
            return _text(hit[0].hex)

    async def outspend(self, request: Request) -> Response:
        txid, raw = request.path_params["txid"], request.path_params["vout"]
        if not _is_hash(txid) or not raw.isdigit():
            return _text("Invalid hex string", 400)
        with self.lock:
            hit = self._find(txid)
            if hit is None or int(raw) >= len(hit[0].tx.vout):
                return JSONResponse({"spent": False})
            return JSONResponse(self.spender(txid.lower(), int(raw), hit[1]))

    async def post_tx(self, request: Request) -> Response:
        raw_hex = (await request.body()).decode(errors="replace").strip()
        try:
            txid = self.node.call("sendrawtransaction", [raw_hex])
        except RpcError as exc:
            detail = json.dumps({"code": exc.code, "message": exc.message},
                                separators=(",", ":"))
            return _text(f"sendrawtransaction RPC error: {detail}", 400)
        return _text(str(txid))

    async def fee_estimates(self, request: Request) -> Response:
        out: dict[str, float] = {}
        for target in FEE_TARGETS:
            est = self.node.call("estimatesmartfee", [target, "ECONOMICAL"])
            if "feerate" in est:
                # electrs: BTC/kvB → sat/vB in f64, float noise and all (51 → 51.00000000000001)
                out[str(target)] = float(est["feerate"]) * 100_000
        return JSONResponse(out)


def create_app(chain: Chain) -> Starlette:
    """The fake Esplora for ``chain``; ``app.state.lock`` guards the chain."""
    api = _Esplora(chain)
    app = Starlette(routes=[Mount("/api", routes=[
        Route("/blocks/tip/height", api.tip_height),
        Route("/blocks/tip/hash", api.tip_hash),
        Route("/block-height/{height}", api.block_height),
        Route("/block/{hash}", api.block),
        Route("/block/{hash}/txs/{start}", api.block_txs),
        Route("/mempool/txids", api.mempool_txids),
        Route("/tx/{txid}", api.tx),
        Route("/tx/{txid}/hex", api.tx_hex),
        Route("/tx/{txid}/outspend/{vout}", api.outspend),
        Route("/tx", api.post_tx, methods=["POST"]),
        Route("/fee-estimates", api.fee_estimates),
    ])])
    app.state.lock = api.lock
    app.state.chain = chain
    # A genesis hash to answer for height 0 instead of the chain's: a server of another network
    app.state.genesis = None
    return app
