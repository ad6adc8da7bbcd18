"""LND's REST shapes (``lnrpc/lightning.yaml``, ``routerrpc/router.yaml``) for the simulator.

The gateway marshals protobuf with original field names and default values included:
``bytes`` as standard base64, 64-bit integers as decimal strings, 32-bit ones as numbers,
enums by name. A payment's ``payment_hash`` and ``payment_preimage`` are hex strings (they are
``string`` fields), and the preimage of a payment that has not succeeded is 32 zero bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from satvault.simnet.ln._bolt11 import FEATURES_DEFAULT, PayReq, feature_map
from satvault.simnet.ln._model import (
    Channel,
    FailureReason,
    Invoice,
    InvoiceState,
    NodeBalance,
    Payment,
    PaymentStatus,
)

__all__ = [
    "GRPC_HTTP_STATUS",
    "b64",
    "b64_to_bytes",
    "channel_balance",
    "error_body",
    "getinfo",
    "invoice",
    "payment",
    "payreq",
    "wallet_balance",
]

# grpc-gateway's runtime.HTTPStatusFromCode
GRPC_HTTP_STATUS = {0: 200, 1: 499, 2: 500, 3: 400, 4: 504, 5: 404, 6: 409, 7: 403, 8: 429,
                    9: 400, 10: 409, 11: 400, 12: 501, 13: 500, 14: 503, 15: 500, 16: 401}
ZERO_PREIMAGE = "00" * 32
FINAL_CLTV_DELTA = 40  # the router's cltv_expiry_delta, for the route shape only


def b64(data: str | bytes | None) -> str:
    """Standard base64 of hex text or bytes ("" for None)."""
    if data is None:
        return ""
    raw = bytes.fromhex(data) if isinstance(data, str) else data
    return base64.b64encode(raw).decode()


def b64_to_bytes(text: str) -> bytes:
    """The gateway takes standard or URL-safe base64, padded or not."""
    t = text.strip().replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(t + "=" * (-len(t) % 4), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError(f"illegal base64 data: {text!r}") from exc


def error_body(code: int, message: str) -> dict[str, Any]:
    return {"code": code, "message": message, "details": []}


def _features(bits: int) -> dict[str, Any]:
    return {str(k): v for k, v in feature_map(bits).items()}


def invoice(inv: Invoice, *, now: float, block_height: int) -> dict[str, Any]:
    # LND cancels an open invoice once it expires; it keeps the preimage of its own invoices.
    state = InvoiceState.CANCELED if inv.expired(now) else inv.state
    settled = state is InvoiceState.SETTLED
    htlcs = []
    if settled:
        htlcs.append({
            "chan_id": str(inv.htlc_chan_id), "htlc_index": str(inv.settle_index - 1),
            "amt_msat": str(inv.amt_paid_msat), "accept_height": block_height,
            "accept_time": str(inv.settled_at), "resolve_time": str(inv.settled_at),
            "expiry_height": block_height + inv.cltv_expiry, "state": "SETTLED",
            "custom_records": {}, "mpp_total_amt_msat": str(inv.amt_paid_msat), "amp": None,
            "custom_channel_data": ""})
    value = inv.amount_msat or 0
    return {
        "memo": inv.memo,
        "r_preimage": b64(inv.preimage),
        "r_hash": b64(inv.payment_hash),
        "value": str(value // 1000),
        "value_msat": str(value),
        "settled": settled,
        "creation_date": str(inv.created_at),
        "settle_date": str(inv.settled_at),
        "payment_request": inv.bolt11,
        "description_hash": b64(inv.description_hash),
        "expiry": str(inv.expiry),
        "fallback_addr": inv.fallback_addr or "",
        "cltv_expiry": str(inv.cltv_expiry),
        "route_hints": [],
        "private": False,
        "add_index": str(inv.add_index),
        "settle_index": str(inv.settle_index),
        "amt_paid": str(inv.amt_paid_msat),
        "amt_paid_sat": str(inv.amt_paid_msat // 1000),
        "amt_paid_msat": str(inv.amt_paid_msat),
        "state": state.value,
        "htlcs": htlcs,
        "features": _features(FEATURES_DEFAULT),
        "is_keysend": False,
        "payment_addr": b64(inv.payment_addr),
        "is_amp": False,
        "amp_invoice_state": {},
        "is_blinded": False,
        "blinded_path_config": None,
    }


def _route(p: Payment, pubkeys: dict[str, str], channels: dict[int, Channel],
           block_height: int) -> dict[str, Any]:
    hops = []
    n = len(p.route)
    for i, h in enumerate(p.route):
        forward = p.route[i + 1].amount_msat if i + 1 < n else h.amount_msat
        fee = p.route[i + 1].fee_msat if i + 1 < n else 0
        chan = channels.get(h.chan_id)
        hops.append({
            "chan_id": str(h.chan_id),
            "chan_capacity": str((chan.capacity_msat if chan else 0) // 1000),
            "amt_to_forward": str(forward // 1000), "fee": str(fee // 1000),
            "expiry": block_height + FINAL_CLTV_DELTA * (n - i),
            "amt_to_forward_msat": str(forward), "fee_msat": str(fee),
            "pub_key": pubkeys.get(h.to_node, ""), "tlv_payload": True,
            "mpp_record": None, "amp_record": None, "custom_records": {}, "metadata": "",
            "blinding_point": "", "encrypted_data": "", "total_amt_msat": "0"})
    total = p.value_msat + p.fee_msat
    return {"total_time_lock": block_height + FINAL_CLTV_DELTA * (n + 1),
            "total_fees": str(p.fee_msat // 1000), "total_amt": str(total // 1000),
            "hops": hops, "total_fees_msat": str(p.fee_msat), "total_amt_msat": str(total),
            "first_hop_amount_msat": str(total), "custom_channel_data": ""}


def payment(p: Payment, *, pubkeys: dict[str, str], channels: dict[int, Channel],
            block_height: int, initial: bool = False) -> dict[str, Any]:
    """``lnrpc.Payment``; ``initial`` gives the first IN_FLIGHT update (no attempt yet)."""
    status = PaymentStatus.IN_FLIGHT if initial else p.status
    succeeded = status is PaymentStatus.SUCCEEDED
    failure = p.failure_reason if status is PaymentStatus.FAILED else FailureReason.NONE
    htlcs = []
    attempted = p.route and not initial and failure in (
        FailureReason.NONE, FailureReason.INCORRECT_PAYMENT_DETAILS)
    if attempted:
        htlcs.append({
            "attempt_id": str(p.payment_index), "status": status.value,
            "route": _route(p, pubkeys, channels, block_height),
            "attempt_time_ns": str(p.created_ns),
            "resolve_time_ns": str(0 if status is PaymentStatus.IN_FLIGHT else p.resolved_ns),
            "failure": ({"code": "INCORRECT_OR_UNKNOWN_PAYMENT_DETAILS",
                         "failure_source_index": len(p.route)}
                        if failure is not FailureReason.NONE else None),
            "preimage": b64(p.preimage) if succeeded and p.preimage else ""})
    fee = p.fee_msat if succeeded else 0
    return {
        "payment_hash": p.payment_hash,
        "value": str(p.value_msat // 1000),
        "creation_date": str(p.created_ns // 1_000_000_000),
        "fee": str(fee // 1000),
        "payment_preimage": p.preimage if succeeded and p.preimage else ZERO_PREIMAGE,
        "value_sat": str(p.value_msat // 1000),
        "value_msat": str(p.value_msat),
        "payment_request": p.bolt11,
        "status": status.value,
        "fee_sat": str(fee // 1000),
        "fee_msat": str(fee),
        "creation_time_ns": str(p.created_ns),
        "htlcs": htlcs,
        "payment_index": str(p.payment_index),
        "failure_reason": failure.value,
        "first_hop_custom_records": {},
    }


def payreq(req: PayReq) -> dict[str, Any]:
    hints = [{"hop_hints": [{
        "node_id": str(r.get("public_key", "")),
        "chan_id": str(_scid_int(str(r.get("short_channel_id", "0x0x0")))),
        "fee_base_msat": r.get("base_fee", 0),
        "fee_proportional_millionths": r.get("ppm_fee", 0),
        "cltv_expiry_delta": r.get("cltv_expiry_delta", 0)} for r in hint]}
        for hint in req.route_hints]
    amount = req.amount_msat or 0
    return {
        "destination": req.payee,
        "payment_hash": req.payment_hash,
        "num_satoshis": str(amount // 1000),
        "timestamp": str(req.timestamp),
        "expiry": str(req.expiry),
        "description": req.description,
        "description_hash": req.description_hash or "",
        "fallback_addr": req.fallback_address or "",
        "cltv_expiry": str(req.min_final_cltv_expiry),
        "route_hints": hints,
        "payment_addr": b64(req.payment_secret),
        "num_msat": str(amount),
        "features": _features(req.features),
        "blinded_paths": [],
    }


def _scid_int(scid: str) -> int:
    try:
        block, tx, out = (int(x) for x in scid.split("x"))
    except ValueError:
        return 0
    return block << 40 | tx << 16 | out


def getinfo(*, pubkey: str, alias: str, network: str, block_height: int, peers: int,
            channels: int, now: float, synced: bool = True) -> dict[str, Any]:
    block_hash = bytes(reversed(block_height.to_bytes(32, "big"))).hex()
    return {
        "version": "0.18.5-beta commit=satvault-simnet",
        "commit_hash": "",
        "identity_pubkey": pubkey,
        "alias": alias,
        "color": "#3399ff",
        "num_pending_channels": 0,
        "num_active_channels": channels,
        "num_inactive_channels": 0,
        "num_peers": peers,
        "block_height": block_height,
        "block_hash": block_hash,
        "best_header_timestamp": str(int(now)),
        "synced_to_chain": synced,
        "synced_to_graph": True,
        "testnet": network == "testnet",
        "chains": [{"chain": "bitcoin", "network": network}],
        "uris": [],
        "features": _features(FEATURES_DEFAULT),
        "require_htlc_interceptor": False,
        "store_final_htlc_resolutions": False,
    }


def _amount(msat: int) -> dict[str, str]:
    return {"sat": str(msat // 1000), "msat": str(msat)}


def channel_balance(bal: NodeBalance) -> dict[str, Any]:
    zero = _amount(0)
    return {
        "balance": str(bal.local_msat // 1000),
        "pending_open_balance": "0",
        "local_balance": _amount(bal.local_msat),
        "remote_balance": _amount(bal.remote_msat),
        "unsettled_local_balance": _amount(bal.pending_local_msat),
        "unsettled_remote_balance": _amount(bal.pending_remote_msat),
        "pending_open_local_balance": zero,
        "pending_open_remote_balance": dict(zero),
        "custom_channel_data": "",
    }


def wallet_balance(bal: NodeBalance) -> dict[str, Any]:
    sat = str(bal.onchain_sat)
    return {
        "total_balance": sat,
        "confirmed_balance": sat,
        "unconfirmed_balance": "0",
        "locked_balance": "0",
        "reserved_balance_anchor_chan": "0",
        "account_balance": {"default": {"confirmed_balance": sat,
                                        "unconfirmed_balance": "0"}},
    }
