"""JSON-RPC plumbing shared by the method modules: error codes, ``RpcError``, the call
context, and parameter parsing with bitcoind's type errors (``JSON value of type string is
not of expected type number``, -3) and hash checks (``txid must be of length 64 …``, -8)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from satvault.simnet._primitives import COIN, Tx
from satvault.simnet.errors import DecodeFailed

if TYPE_CHECKING:
    from satvault.simnet.chain import Chain

__all__ = [
    "DEFAULT_MAX_FEERATE",
    "NOT_FOUND_TX",
    "NOT_FOUND_TX_NO_INDEX",
    "RPC_DESERIALIZATION_ERROR",
    "RPC_INVALID_ADDRESS_OR_KEY",
    "RPC_INVALID_PARAMETER",
    "RPC_IN_WARMUP",
    "RPC_METHOD_NOT_FOUND",
    "RPC_MISC_ERROR",
    "RPC_TRANSACTION_ERROR",
    "RPC_TYPE_ERROR",
    "Method",
    "RpcContext",
    "RpcError",
    "amount",
    "bool_",
    "decode",
    "feerate_param",
    "hash_",
    "int_",
    "json_type",
    "max_fee",
    "max_fee_kvb",
    "str_",
    "type_error",
    "verbosity",
]

RPC_MISC_ERROR = -1
RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_TRANSACTION_ERROR = -25
RPC_IN_WARMUP = -28
RPC_METHOD_NOT_FOUND = -32601
DEFAULT_MAX_FEERATE = Decimal("0.10")
NOT_FOUND_TX = "No such mempool or blockchain transaction. Use gettransaction for wallet " \
               "transactions."
# Core's answer for a confirmed transaction asked for without -txindex and without its block.
NOT_FOUND_TX_NO_INDEX = "No such mempool transaction. Use -txindex or provide a block hash " \
                        "to enable blockchain transaction queries. Use gettransaction for " \
                        "wallet transactions."


class RpcError(Exception):
    def __init__(self, code: int, message: str) -> None:
        self.code = code
        self.message = message
        super().__init__(f"{code}: {message}")


@dataclass
class RpcContext:
    chain: Chain
    started: float = field(default_factory=time.monotonic)
    set_warmup: Callable[[float], None] = lambda seconds: None
    # ``simnet_setsync``: how many blocks the node pretends its best header is ahead of its
    # tip (> 0: it reports initial block download, as a node still catching up does).
    headers_ahead: int = 0
    # ``simnet_setchain``: the chain ``getblockchaininfo`` names (Core's words); the blocks
    # stay regtest's whatever it says.
    chain_name: str = "regtest"
    # ``simnet_settxindex``: whether the node runs with ``-txindex`` (Core's default is off;
    # the simulator's on, as satvault needs it) and whether that index has caught up.
    txindex: bool = True
    txindex_synced: bool = True


@dataclass(frozen=True)
class Method:
    fn: Callable[[RpcContext, list[Any]], Any]
    params: tuple[str, ...]
    required: int = 0
    mutates: bool = False


def json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, int | float | Decimal):
        return "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def type_error(v: Any, expected: str) -> RpcError:
    return RpcError(RPC_TYPE_ERROR,
                    f"JSON value of type {json_type(v)} is not of expected type {expected}")


def int_(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise type_error(v, "number")
    if isinstance(v, Decimal):
        if v != v.to_integral_value():
            raise type_error(v, "number")
        return int(v)
    return v


def str_(v: Any) -> str:
    if not isinstance(v, str):
        raise type_error(v, "string")
    return v


def bool_(v: Any) -> bool:
    if not isinstance(v, bool):
        raise type_error(v, "bool")
    return v


def hash_(v: Any, name: str) -> str:
    s = str_(v)
    if len(s) != 64:
        raise RpcError(RPC_INVALID_PARAMETER, f"{name} must be of length 64 (not {len(s)}, "
                                              f"for '{s}')")
    try:
        bytes.fromhex(s)
    except ValueError as exc:
        raise RpcError(RPC_INVALID_PARAMETER,
                       f"{name} must be hexadecimal string (not '{s}')") from exc
    return s.lower()


def verbosity(v: Any, default: int) -> int:
    if v is None:
        return default
    if isinstance(v, bool):
        return int(v)
    return int_(v)


def amount(v: Any) -> int:
    """Core's AmountFromValue: a BTC number or numeric string, exact to the satoshi."""
    if isinstance(v, bool) or not isinstance(v, int | Decimal | str):
        raise type_error(v, "number")
    try:
        value = Decimal(v)
    except ArithmeticError as exc:
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount") from exc
    if not value.is_finite() or value * COIN != (value * COIN).to_integral_value():
        raise RpcError(RPC_TYPE_ERROR, "Invalid amount")
    if value < 0 or value > 21_000_000:
        raise RpcError(RPC_TYPE_ERROR, "Amount out of range")
    return int(value * COIN)


def max_fee_kvb(v: Any) -> int:
    kvb = amount(DEFAULT_MAX_FEERATE if v is None else v)
    if kvb >= COIN:
        raise RpcError(RPC_INVALID_PARAMETER,
                       "Fee rates larger than or equal to 1BTC/kvB are not accepted")
    return kvb


def max_fee(kvb: int, tx: Tx) -> int | None:
    return -(-kvb * tx.vsize // 1000) if kvb else None


def feerate_param(v: Any) -> int | Decimal | None:
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, int | Decimal):
        raise type_error(v, "number")
    return v


def decode(hexstring: Any, message: str) -> Tx:
    try:
        return Tx.from_hex(str_(hexstring))
    except DecodeFailed as exc:
        raise RpcError(RPC_DESERIALIZATION_ERROR, message) from exc
