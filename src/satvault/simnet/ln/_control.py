"""The simulator's own control API, served beside LND's REST under ``/simnet/`` (no macaroon).

==========================  =============================================================
``POST /simnet/pay``        ``{bolt11, from="customer1", amount_msat?, fee_limit_msat?,
                            wait?}``: a node pays (a customer paying a platform invoice);
                            ``wait`` seconds to wait for a final state. -> ``{payment}``
``POST /simnet/invoice``    ``{node="customer1", amount_msat?, memo?, expiry?}`` -> an
                            invoice the platform can pay: ``{bolt11, payment_hash, …}``
``POST /simnet/script``     ``{payment_hash | sender, outcome, delay?}``
``POST /simnet/resolve``    ``{payment_hash, outcome, sender?}`` -> ``{payment}``
``POST /simnet/time``       ``{advance_seconds}`` -> ``{now}``
``GET /simnet/nodes``       nodes (pubkey, balances) and channels
``GET /simnet/payments``    ``?node=…`` -> that node's outgoing payments
==========================  =============================================================

Errors answer HTTP 400 (404 for an unknown path) with ``{"error": {"kind", "message"}}``.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from satvault.simnet.ln._http import Request, Response
from satvault.simnet.ln._model import Invoice, Payment
from satvault.simnet.ln.errors import LnSimError
from satvault.simnet.ln.network import LnNetwork

__all__ = ["control", "invoice_summary", "payment_summary"]


def payment_summary(p: Payment) -> dict[str, Any]:
    route = [p.route[0].from_node, *(h.to_node for h in p.route)] if p.route else []
    return {"sender": p.sender, "payment_hash": p.payment_hash, "status": p.status.value,
            "value_msat": p.value_msat, "fee_msat": p.fee_msat, "preimage": p.preimage,
            "failure_reason": p.failure_reason.value, "payment_index": p.payment_index,
            "destination": p.destination, "route": route, "outcome": p.outcome}


def invoice_summary(inv: Invoice) -> dict[str, Any]:
    return {"node": inv.node, "bolt11": inv.bolt11, "payment_hash": inv.payment_hash,
            "amount_msat": inv.amount_msat, "state": inv.state.value, "memo": inv.memo,
            "add_index": inv.add_index, "settle_index": inv.settle_index,
            "expires_at": inv.expires_at}


def _error(kind: str, message: str, status: int = 400) -> Response:
    return Response(status, {"error": {"kind": kind, "message": message}})


def _opt_int(body: dict[str, Any], name: str) -> int | None:
    value = body.get(name)
    if value in (None, ""):
        return None
    if isinstance(value, bool):
        raise LnSimError(f"{name} must be an integer", kind="invalid_argument")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise LnSimError(f"{name} must be an integer", kind="invalid_argument") from None


async def _wait_final(network: LnNetwork, p: Payment, seconds: float) -> Payment:
    if p.final or seconds <= 0:
        return p
    loop = asyncio.get_running_loop()
    done: asyncio.Future[Payment] = loop.create_future()

    def listener(update: Payment) -> None:
        if update.final:
            def settle() -> None:
                if not done.done():
                    done.set_result(update)
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(settle)

    current, unsubscribe = network.watch_payment(p.sender, p.payment_hash, listener)
    try:
        if current is not None and current.final:
            return current
        try:
            return await asyncio.wait_for(done, seconds)
        except TimeoutError:
            return network.payment(p.sender, p.payment_hash) or p
    finally:
        unsubscribe()


async def control(network: LnNetwork, default_node: str, req: Request) -> Response:
    try:
        body = req.json() if req.method == "POST" else {}
        if not isinstance(body, dict):
            return _error("invalid_argument", "the body must be a JSON object")
        return await _route(network, default_node, req, body)
    except LnSimError as exc:
        return _error(exc.kind, exc.message)
    except ValueError as exc:
        return _error("invalid_argument", str(exc))


async def _route(network: LnNetwork, default_node: str, req: Request,
                 body: dict[str, Any]) -> Response:
    key = (req.method, req.path.rstrip("/"))
    if key == ("POST", "/simnet/pay"):
        bolt11 = str(body.get("bolt11") or "")
        if not bolt11:
            return _error("invalid_argument", "bolt11 is required")
        p = network.pay(str(body.get("from") or "customer1"), bolt11,
                        amount_msat=_opt_int(body, "amount_msat"),
                        fee_limit_msat=_opt_int(body, "fee_limit_msat"))
        p = await _wait_final(network, p, float(body.get("wait") or 0))
        return Response(200, {"payment": payment_summary(p)})
    if key == ("POST", "/simnet/invoice"):
        inv = network.create_invoice(
            str(body.get("node") or "customer1"), _opt_int(body, "amount_msat"),
            memo=str(body.get("memo") or ""), expiry=_opt_int(body, "expiry") or 3600)
        return Response(200, invoice_summary(inv))
    if key == ("POST", "/simnet/script"):
        outcome = str(body.get("outcome") or "")
        delay = float(body.get("delay") or 0)
        if body.get("payment_hash"):
            network.script(str(body["payment_hash"]), outcome, delay=delay)
        elif body.get("sender"):
            network.script_next(str(body["sender"]), outcome, delay=delay)
        else:
            return _error("invalid_argument", "payment_hash or sender is required")
        return Response(200, {"ok": True})
    if key == ("POST", "/simnet/resolve"):
        sender = body.get("sender")
        p = network.resolve(str(body.get("payment_hash") or ""), str(body.get("outcome") or ""),
                            sender=str(sender) if sender else None)
        return Response(200, {"payment": payment_summary(p)})
    if key == ("POST", "/simnet/time"):
        network.advance_time(float(body.get("advance_seconds") or 0))
        return Response(200, {"now": network.now()})
    if key == ("GET", "/simnet/nodes"):
        nodes = []
        for name in network.node_names:
            b = network.balance(name)
            nodes.append({"name": name, "alias": network.alias(name), "pubkey": b.pubkey,
                          "local_msat": b.local_msat, "remote_msat": b.remote_msat,
                          "pending_local_msat": b.pending_local_msat,
                          "onchain_sat": b.onchain_sat, "lnd_rest": name == default_node})
        channels = [{"chan_id": str(c.chan_id), "scid": c.scid, "a": c.a, "b": c.b,
                     "balance_msat": c.balance, "pending_msat": c.pending}
                    for c in network.channels()]
        return Response(200, {"network": network.network, "nodes": nodes,
                              "channels": channels})
    if key == ("GET", "/simnet/payments"):
        node = req.query.get("node") or default_node
        return Response(200, {"payments": [payment_summary(p)
                                           for p in network.payments(node)]})
    return _error("not_found", f"no control endpoint {req.method} {req.path}", 404)
