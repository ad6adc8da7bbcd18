"""Core Lightning's JSON shapes (``doc/schemas/*.json``) for the simulator.

Amounts are integer millisatoshis (``*_msat``), hashes and preimages hex, times UNIX
seconds. Invoice ``status`` is ``unpaid``/``paid``/``expired``; payment ``status`` is
``pending``/``complete``/``failed``.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Any

from embit import ec, script
from embit.networks import NETWORKS

from satvault.simnet.ln._bolt11 import CHARSET, PayReq
from satvault.simnet.ln._model import Channel, Invoice, InvoiceState, Payment, PaymentStatus

__all__ = ["CLN_NETWORK", "decode", "invoice", "listfunds", "parse_msat", "pay_entry",
           "sendpay_entry", "signature_der", "wallet_address"]

CLN_NETWORK = {"mainnet": "bitcoin", "testnet": "testnet", "signet": "signet",
               "regtest": "regtest"}
_EMBIT_NET = {"mainnet": "main", "testnet": "test", "signet": "signet", "regtest": "regtest"}
_PAY_STATUS = {PaymentStatus.IN_FLIGHT: "pending", PaymentStatus.SUCCEEDED: "complete",
               PaymentStatus.FAILED: "failed"}


def parse_msat(value: Any, *, allow_any: bool = False) -> int | None:
    """CLN's msat parameter: an integer, or ``N``/``Nmsat``/``Nsat``/``N.NNNsat``/``Xbtc``
    (``any`` gives None where allowed). Raises ValueError."""
    if isinstance(value, bool):
        raise ValueError("should be a millisatoshi amount")
    if isinstance(value, int):
        if value < 0:
            raise ValueError("should be a millisatoshi amount")
        return value
    text = str(value).strip().lower()
    if allow_any and text == "any":
        return None
    scale = Decimal(1)
    for suffix, factor in (("msat", 1), ("sat", 1000), ("btc", 100_000_000_000)):
        if text.endswith(suffix):
            text, scale = text[: -len(suffix)], Decimal(factor)
            break
    try:
        amount = Decimal(text) * scale
    except InvalidOperation:
        raise ValueError(f"should be a millisatoshi amount: invalid token '{value}'") from None
    if amount < 0 or amount != amount.to_integral_value():
        raise ValueError(f"should be a millisatoshi amount: invalid token '{value}'")
    return int(amount)


def invoice_status(inv: Invoice, now: float) -> str:
    if inv.state is InvoiceState.SETTLED:
        return "paid"
    if inv.state is InvoiceState.CANCELED or inv.expired(now):
        return "expired"
    return "unpaid"


def invoice(inv: Invoice, now: float) -> dict[str, Any]:
    status = invoice_status(inv, now)
    out: dict[str, Any] = {"label": inv.label, "bolt11": inv.bolt11,
                           "payment_hash": inv.payment_hash}
    if inv.amount_msat is not None:
        out["amount_msat"] = inv.amount_msat
    out["status"] = status
    if inv.memo:
        out["description"] = inv.memo
    out["expires_at"] = inv.expires_at
    out["created_index"] = inv.add_index
    if status == "paid":
        out["updated_index"] = inv.settle_index
        out["pay_index"] = inv.settle_index
        out["amount_received_msat"] = inv.amt_paid_msat
        out["paid_at"] = inv.settled_at
        out["payment_preimage"] = inv.preimage
    return out


def pay_entry(p: Payment) -> dict[str, Any]:
    """One ``listpays`` entry."""
    out: dict[str, Any] = {"bolt11": p.bolt11, "destination": p.destination,
                           "payment_hash": p.payment_hash, "status": _PAY_STATUS[p.status],
                           "created_at": p.created_ns // 1_000_000_000}
    if p.final:
        out["completed_at"] = p.resolved_ns // 1_000_000_000
    if p.label:
        out["label"] = p.label
    if p.description:
        out["description"] = p.description
    if p.status is not PaymentStatus.FAILED:
        out["amount_msat"] = p.value_msat
        out["amount_sent_msat"] = p.amount_sent_msat
    if p.status is PaymentStatus.SUCCEEDED:
        out["preimage"] = p.preimage
        out["number_of_parts"] = 1
    return out


def sendpay_entry(p: Payment) -> dict[str, Any]:
    """One ``listsendpays`` entry."""
    out: dict[str, Any] = {"created_index": p.payment_index, "id": p.payment_index,
                           "payment_hash": p.payment_hash, "groupid": 1,
                           "destination": p.destination, "amount_msat": p.value_msat,
                           "amount_sent_msat": p.amount_sent_msat,
                           "created_at": p.created_ns // 1_000_000_000,
                           "status": _PAY_STATUS[p.status], "bolt11": p.bolt11}
    if p.final:
        out["updated_index"] = p.payment_index
        out["completed_at"] = p.resolved_ns // 1_000_000_000
    if p.label:
        out["label"] = p.label
    if p.description:
        out["description"] = p.description
    if p.status is PaymentStatus.SUCCEEDED:
        out["payment_preimage"] = p.preimage
    return out


def signature_der(bolt11: str) -> str:
    """The invoice signature (its last 104 words before the checksum) as DER hex."""
    data = bolt11[bolt11.rindex("1") + 1: -6]
    words = [CHARSET.index(c) for c in data[-104:]]
    value = 0
    for w in words:
        value = (value << 5) | w
    raw = value.to_bytes(65, "big")

    def integer(b: bytes) -> bytes:
        b = b.lstrip(b"\x00") or b"\x00"
        if b[0] & 0x80:
            b = b"\x00" + b
        return b"\x02" + bytes([len(b)]) + b

    body = integer(raw[:32]) + integer(raw[32:64])
    return (b"\x30" + bytes([len(body)]) + body).hex()


def decode(req: PayReq, network: str) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "bolt11 invoice", "valid": True,
                           "currency": req.currency, "created_at": req.timestamp,
                           "expiry": req.expiry, "payee": req.payee}
    if req.amount_msat is not None:
        out["amount_msat"] = req.amount_msat
    out["payment_hash"] = req.payment_hash
    out["signature"] = signature_der(req.bolt11)
    if req.description_hash is not None:
        out["description_hash"] = req.description_hash
    else:
        out["description"] = req.description
    out["min_final_cltv_expiry"] = req.min_final_cltv_expiry
    if req.payment_secret:
        out["payment_secret"] = req.payment_secret
    if req.features:
        digits = format(req.features, "x")
        out["features"] = digits.rjust(len(digits) + len(digits) % 2, "0")
    if req.fallback_address:
        out["fallbacks"] = [{"type": _fallback_type(req.fallback_address, network),
                             "addr": req.fallback_address}]
    if req.route_hints:
        out["routes"] = req.route_hints
    return out


def _fallback_type(address: str, network: str) -> str:
    try:
        spk = script.address_to_scriptpubkey(address).data
    except Exception:
        return "UNKNOWN"
    if spk[:1] == b"\x00":
        return "P2WPKH" if len(spk) == 22 else "P2WSH"
    if spk[:1] == b"\x51":
        return "P2TR"
    return "P2PKH" if spk[:1] == b"\x76" else "P2SH"


def wallet_address(pubkey: str, network: str) -> tuple[str, str]:
    """(address, scriptPubKey hex) of the node's P2WPKH wallet output."""
    spk = script.p2wpkh(ec.PublicKey.parse(bytes.fromhex(pubkey)))
    return spk.address(NETWORKS[_EMBIT_NET[network]]), spk.data.hex()


def listfunds(*, node: str, pubkey: str, onchain_sat: int, network: str, block_height: int,
              channels: list[Channel], pubkeys: dict[str, str]) -> dict[str, Any]:
    outputs = []
    if onchain_sat:
        address, spk = wallet_address(pubkey, network)
        outputs.append({"txid": bytes.fromhex(pubkey)[1:].hex(), "output": 0,
                        "amount_msat": onchain_sat * 1000, "scriptpubkey": spk,
                        "address": address, "status": "confirmed",
                        "blockheight": max(block_height - 10, 1), "reserved": False})
    chans = []
    for c in channels:
        peer = c.peer(node)
        funding = format(c.chan_id, "064x")
        chans.append({"peer_id": pubkeys.get(peer, ""), "connected": True,
                      "state": "CHANNELD_NORMAL", "channel_id": funding,
                      "short_channel_id": c.scid,
                      "our_amount_msat": c.balance[node] + c.pending[node],
                      "amount_msat": c.capacity_msat, "funding_txid": funding,
                      "funding_output": 0})
    return {"outputs": outputs, "channels": chans}
