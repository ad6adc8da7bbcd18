"""Users, merchants, stores, wallets and API keys."""

from satvault.accounts.service import SCOPES, Principal

__all__ = ["SCOPES", "Principal"]
