"""The double-entry ledger: pure core (``core``), persistence (``store``), statements
(``history``) and the consistency check (``check``). See ``core`` for the model."""

from satvault.ledger.assets import BTC, Asset, get_asset
from satvault.ledger.core import (
    Account,
    AccountKind,
    Balances,
    HoldState,
    Outcome,
    Result,
    Transfer,
    TransferKind,
    TransferSpec,
    available,
)

__all__ = [
    "BTC",
    "Account",
    "AccountKind",
    "Asset",
    "Balances",
    "HoldState",
    "Outcome",
    "Result",
    "Transfer",
    "TransferKind",
    "TransferSpec",
    "available",
    "get_asset",
]
