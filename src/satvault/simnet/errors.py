"""Simnet errors.

Everything the simulator refuses is one of these; the RPC layer maps each class to the
bitcoind error code a real node would answer with (see ``rpc_code``), once, at the edge.

::

    SimnetError
    ├── InvalidDestination      not a regtest address / malformed BIP21 URI       (-5)
    ├── InvalidAmount           zero, negative, not a whole satoshi, beyond 21M   (-3)
    ├── InsufficientFunds       the faucet cannot cover amount + fee              (-6)
    ├── UnknownTransaction      txid not in the mempool (or not the faucet's)     (-5)
    ├── ChainStateError         an operation the chain cannot do (reorg too deep) (-8)
    ├── DecodeFailed            bytes that are not a transaction                   (-22)
    └── TxRejected              the mempool refused a transaction; ``code`` is
        │                       bitcoind's (-25 missing inputs / fee cap, -26 policy
        │                       and consensus, -27 already confirmed)
        └── (``reason`` is the short reject reason, ``message`` what sendrawtransaction
            says: ``reason`` plus ``", " + detail`` when Bitcoin Core adds one)
"""

from __future__ import annotations

__all__ = [
    "RPC_DESERIALIZATION_ERROR",
    "RPC_INVALID_ADDRESS_OR_KEY",
    "RPC_INVALID_PARAMETER",
    "RPC_TRANSACTION_ALREADY_IN_CHAIN",
    "RPC_TRANSACTION_ERROR",
    "RPC_TRANSACTION_REJECTED",
    "RPC_TYPE_ERROR",
    "RPC_WALLET_INSUFFICIENT_FUNDS",
    "ChainStateError",
    "DecodeFailed",
    "InsufficientFunds",
    "InvalidAmount",
    "InvalidDestination",
    "SimnetError",
    "TxRejected",
    "UnknownTransaction",
]

RPC_TYPE_ERROR = -3
RPC_INVALID_ADDRESS_OR_KEY = -5
RPC_WALLET_INSUFFICIENT_FUNDS = -6
RPC_INVALID_PARAMETER = -8
RPC_DESERIALIZATION_ERROR = -22
RPC_TRANSACTION_ERROR = -25
RPC_TRANSACTION_REJECTED = -26
RPC_TRANSACTION_ALREADY_IN_CHAIN = -27


class SimnetError(Exception):
    """Base of every simnet error. ``rpc_code`` is what the JSON-RPC layer answers with."""

    rpc_code: int = -1

    def __init__(self, message: str) -> None:
        self.message = message
        super().__init__(message)


class InvalidDestination(SimnetError):
    rpc_code = RPC_INVALID_ADDRESS_OR_KEY


class InvalidAmount(SimnetError):
    rpc_code = RPC_TYPE_ERROR


class InsufficientFunds(SimnetError):
    rpc_code = RPC_WALLET_INSUFFICIENT_FUNDS


class UnknownTransaction(SimnetError):
    rpc_code = RPC_INVALID_ADDRESS_OR_KEY


class ChainStateError(SimnetError):
    rpc_code = RPC_INVALID_PARAMETER


class DecodeFailed(SimnetError):
    rpc_code = RPC_DESERIALIZATION_ERROR


class TxRejected(SimnetError):
    """The mempool refused a transaction, as ``sendrawtransaction`` would report it."""

    def __init__(self, reason: str, detail: str = "", *,
                 code: int = RPC_TRANSACTION_REJECTED, message: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.rpc_code = code
        if message is None:
            message = f"{reason}, {detail}" if detail else reason
        super().__init__(message)

    @property
    def missing_inputs(self) -> bool:
        return self.reason == "bad-txns-inputs-missingorspent"
