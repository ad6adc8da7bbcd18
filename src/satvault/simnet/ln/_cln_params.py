"""Core Lightning's request parameters: by name or by position (in the documented order),
``None`` meaning absent, and the error it answers for bad ones (-32602)."""

from __future__ import annotations

from typing import Any

from satvault.simnet.ln import _cln_json as C

__all__ = ["INVALID_PARAMS", "METHOD_NOT_FOUND", "RpcError", "msat", "parse_params", "required",
           "u64"]

INVALID_PARAMS = -32602
METHOD_NOT_FOUND = -32601

_PARAMS: dict[str, tuple[str, ...]] = {
    "getinfo": (),
    "invoice": ("amount_msat", "label", "description", "expiry", "fallbacks", "preimage",
                "exposeprivatechannels", "cltv", "deschashonly"),
    "listinvoices": ("label", "invstring", "payment_hash", "offer_id", "index", "start",
                     "limit"),
    "delinvoice": ("label", "status", "desconly"),
    "waitanyinvoice": ("lastpay_index", "timeout"),
    "waitinvoice": ("label",),
    "pay": ("bolt11", "amount_msat", "label", "riskfactor", "maxfeepercent", "retry_for",
            "maxdelay", "exemptfee", "localinvreqid", "exclude", "maxfee", "description",
            "partial_msat"),
    "xpay": ("invstring", "amount_msat", "maxfee", "layers", "retry_for", "partial_msat",
             "maxdelay"),
    "listpays": ("bolt11", "payment_hash", "status", "index", "start", "limit"),
    "listsendpays": ("bolt11", "payment_hash", "status", "index", "start", "limit"),
    "decode": ("string",),
    "decodepay": ("bolt11", "description"),
    "listfunds": ("spent",),
    "notifications": ("enable",),
}


class RpcError(Exception):
    def __init__(self, code: int, message: str, data: Any = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.data = data


def parse_params(method: str, raw: Any) -> dict[str, Any]:
    names = _PARAMS[method]
    if raw is None:
        return {}
    if isinstance(raw, list):
        if len(raw) > len(names):
            raise RpcError(INVALID_PARAMS, f"too many parameters: got {len(raw)}, "
                                           f"expected {len(names)}")
        return {k: v for k, v in zip(names, raw, strict=False) if v is not None}
    if isinstance(raw, dict):
        unknown = sorted(set(raw) - set(names))
        if unknown:
            raise RpcError(INVALID_PARAMS, f"unknown parameter: {unknown[0]}")
        return {k: v for k, v in raw.items() if v is not None}
    raise RpcError(INVALID_PARAMS, "params must be an array or an object")


def msat(params: dict[str, Any], name: str, *, allow_any: bool = False) -> int | None:
    if name not in params:
        return None
    try:
        return C.parse_msat(params[name], allow_any=allow_any)
    except ValueError as exc:
        raise RpcError(INVALID_PARAMS, f"{name}: {exc}") from None


def u64(params: dict[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise RpcError(INVALID_PARAMS, f"{name}: should be an unsigned 64 bit integer")
    try:
        number = int(value)
    except ValueError:
        raise RpcError(INVALID_PARAMS, f"{name}: should be an unsigned 64 bit integer: "
                                       f"invalid token '{value}'") from None
    if number < 0:
        raise RpcError(INVALID_PARAMS, f"{name}: should be an unsigned 64 bit integer")
    return number


def required(params: dict[str, Any], name: str) -> Any:
    if name not in params:
        raise RpcError(INVALID_PARAMS, f"missing required parameter: {name}")
    return params[name]
