"""The signer's wire protocol: newline-delimited JSON over a unix stream socket.

One request per line, one response line per request, in order, on one connection::

    → {"id": 1, "method": "descriptors", "params": {}}
    ← {"id": 1, "result": {"deposit": "wpkh([…]tpub…/<0;1>/*)#…", "hot": "…"}}

    → {"id": 2, "method": "sign_payout",
       "params": {"psbt": "<base64>",
                  "payments": [{"script_pubkey": "<hex>", "amount_sat": 150000,
                                "ref": "wd_123"}],
                  "max_fee_sat": 5000, "max_feerate_sat_vb": 50}}
    ← {"id": 2, "result": {"txid": "<hex>", "raw_hex": "<hex>", "psbt": "<base64>",
                           "fee_sat": 1234}}
    ← {"id": 2, "error": {"type": "OutputMismatch", "message": "output 1 pays …"}}
    ← {"id": 2, "error": {"type": "LimitExceeded", "message": "… only 7000 sat of the
                                                     signer's rolling 24-hour cap …"}}

A sweep is a ``sign_payout`` with ``"payments": []``. A payment's ``ref`` is paid once: a
later transaction paying it must spend an input of each earlier one that did
(``PaidBefore``), unless that one was given up::

    → {"id": 4, "method": "abandon", "params": {"txid": "<hex>", "reason": "…"}}
    ← {"id": 4, "result": {"abandoned": true}}

Which transactions the signer signed that pay some refs and were not given up (what a
person resolving a stuck batch proves on the node can never confirm, before giving it up)::

    → {"id": 5, "method": "payers", "params": {"refs": ["wd_123"]}}
    ← {"id": 5, "result": {"payers": [{"txid": "<hex>", "outpoints": ["<txid>:0"],
                                       "refs": ["wd_123"]}]}}

    → {"id": 3, "method": "sign_reserves", "params": {"psbt": "<base64>", "message": "…"}}
    ← {"id": 3, "result": {"psbt": "<base64, the signer's inputs finalized>"}}

``id`` is echoed (a string, an integer or null). ``error.type`` is the name of a class in
:mod:`satvault.signing.errors`; the client raises that class. Amounts are JSON integers in
satoshis (no floats). A line is at most :data:`MAX_LINE` bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from satvault.kernel import strictjson
from satvault.signing.base import Payer, Payment, SignedTx
from satvault.signing.errors import ERROR_TYPES, SignerError, SignerProtocolError

__all__ = [
    "MAX_LINE",
    "MAX_REFS",
    "METHODS",
    "decode_line",
    "encode_line",
    "error_from_wire",
    "error_to_wire",
    "payers_from_wire",
    "payers_to_wire",
    "payments_from_wire",
    "payments_to_wire",
    "refs_from_wire",
    "signed_from_wire",
    "signed_to_wire",
]

MAX_LINE = 8 * 1024 * 1024
METHODS = ("descriptors", "sign_payout", "sign_reserves", "abandon", "payers")
MAX_REFS = 10_000  # refs asked about in one ``payers`` request


def encode_line(message: Mapping[str, Any]) -> bytes:
    return (json.dumps(message, separators=(",", ":")) + "\n").encode()


def decode_line(line: bytes) -> dict[str, Any]:
    try:
        message = strictjson.foreign(line)
    except ValueError as exc:  # not JSON, not UTF-8, or nested past the parser's limit
        raise SignerProtocolError("not a JSON line") from exc
    if not isinstance(message, dict):
        raise SignerProtocolError("a message is a JSON object")
    return message


def _int(value: Any, what: str) -> int:
    if type(value) is not int:
        raise SignerProtocolError(f"{what} must be an integer, not {value!r}")
    return value


def _str(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise SignerProtocolError(f"{what} must be a string")
    return value


def _hex(value: Any, what: str) -> bytes:
    try:
        return bytes.fromhex(_str(value, what))
    except ValueError as exc:
        raise SignerProtocolError(f"{what} is not hex") from exc


def payments_to_wire(payments: Sequence[Payment]) -> list[dict[str, Any]]:
    return [{"script_pubkey": bytes(p.script_pubkey).hex(), "amount_sat": p.amount_sat,
             "ref": p.ref} for p in payments]


def payments_from_wire(value: Any) -> list[Payment]:
    if not isinstance(value, list):
        raise SignerProtocolError("payments must be a list")
    out = []
    for k, item in enumerate(value):
        if not isinstance(item, dict):
            raise SignerProtocolError(f"payments[{k}] must be an object")
        out.append(Payment(_hex(item.get("script_pubkey"), f"payments[{k}].script_pubkey"),
                           _int(item.get("amount_sat"), f"payments[{k}].amount_sat"),
                           _str(item.get("ref", ""), f"payments[{k}].ref")))
    return out


def signed_to_wire(signed: SignedTx) -> dict[str, Any]:
    return {"txid": signed.txid, "raw_hex": signed.raw_hex, "psbt": signed.psbt_b64,
            "fee_sat": signed.fee_sat}


def signed_from_wire(value: Any) -> SignedTx:
    if not isinstance(value, dict):
        raise SignerProtocolError("the result must be an object")
    return SignedTx(_str(value.get("txid"), "txid"), _str(value.get("raw_hex"), "raw_hex"),
                    _str(value.get("psbt"), "psbt"), _int(value.get("fee_sat"), "fee_sat"))


def _strs(value: Any, what: str) -> tuple[str, ...]:
    if not isinstance(value, list):
        raise SignerProtocolError(f"{what} must be a list of strings")
    return tuple(_str(v, f"{what}[{k}]") for k, v in enumerate(value))


def refs_from_wire(value: Any) -> tuple[str, ...]:
    refs = _strs(value, "params.refs")
    if len(refs) > MAX_REFS:
        raise SignerProtocolError(f"at most {MAX_REFS} refs in one request")
    return refs


def payers_to_wire(payers: Sequence[Payer]) -> dict[str, Any]:
    return {"payers": [{"txid": p.txid, "outpoints": list(p.outpoints), "refs": list(p.refs)}
                       for p in payers]}


def payers_from_wire(value: Any) -> list[Payer]:
    if not isinstance(value, dict) or not isinstance(value.get("payers"), list):
        raise SignerProtocolError("payers must answer {\"payers\": [...]}")
    out = []
    for k, item in enumerate(value["payers"]):
        if not isinstance(item, dict):
            raise SignerProtocolError(f"payers[{k}] must be an object")
        out.append(Payer(_str(item.get("txid"), f"payers[{k}].txid"),
                         _strs(item.get("outpoints"), f"payers[{k}].outpoints"),
                         _strs(item.get("refs"), f"payers[{k}].refs")))
    return out


def error_to_wire(exc: SignerError) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def error_from_wire(value: Any) -> SignerError:
    if not isinstance(value, dict):
        return SignerProtocolError(f"malformed error {value!r}")
    name, message = str(value.get("type")), str(value.get("message", ""))
    cls = ERROR_TYPES.get(name)
    if cls is None:
        return SignerProtocolError(f"{name}: {message}")
    return cls(message)
