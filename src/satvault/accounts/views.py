"""A wallet's balances as the API and its live updates show them (integers in msat)."""

from __future__ import annotations

from typing import Any, Protocol

from satvault.accounts.models import Wallet
from satvault.ledger.assets import get_asset

__all__ = ["wallet_balances"]


class _Balances(Protocol):
    @property
    def debits_posted(self) -> int: ...
    @property
    def credits_posted(self) -> int: ...
    @property
    def debits_pending(self) -> int: ...
    @property
    def credits_pending(self) -> int: ...


class _Owned(Protocol):
    @property
    def id(self) -> str: ...
    @property
    def owner_type(self) -> str: ...
    @property
    def owner_id(self) -> str: ...
    @property
    def asset(self) -> str: ...


def wallet_balances(wallet: Wallet | _Owned, b: _Balances) -> dict[str, Any]:
    """``available`` is what can be spent now: posted credits less posted and held debits;
    ``incoming`` is credited but not yet final (e.g. waiting for confirmations)."""
    return {
        "id": wallet.id, "owner_type": wallet.owner_type, "owner_id": wallet.owner_id,
        "asset": wallet.asset, "unit": get_asset(wallet.asset).unit,
        "available_msat": int(b.credits_posted - b.debits_posted - b.debits_pending),
        "posted_msat": int(b.credits_posted - b.debits_posted),
        "incoming_msat": int(b.credits_pending), "held_msat": int(b.debits_pending),
    }
