"""The platform's own ledger accounts, one set per asset.

==============  =====================================================  ====================
name            what it stands for                                     guard
==============  =====================================================  ====================
external        the outside world: money entering/leaving the books   none
hot_wallet      coins in the online hot wallet (an asset we hold)      credits ≤ debits
lightning       our Lightning node's spendable channel balance         none
cold_wallet     coins in cold storage                                  credits ≤ debits
clearing        money in flight between two states (e.g. a payout)    none
fees            fees the platform earned                               debits ≤ credits
equity          the operator's own funds, corrections                  none
==============  =====================================================  ====================

Customer and merchant wallets are liabilities: credited when money comes in, guarded by
``debits_must_not_exceed_credits`` so they can never be spent below zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.ledger.core import Account, AccountKind
from satvault.ledger.store import create_account

__all__ = ["PlatformAccounts", "ensure_platform_accounts", "platform_account_name"]

_SPEC = {
    "external": (AccountKind.EXTERNAL, False, False),
    "hot_wallet": (AccountKind.HOT_WALLET, False, True),
    # No guard: channel liquidity opened outside the books can be spent before it is booked.
    "lightning": (AccountKind.HOT_WALLET, False, False),
    "cold_wallet": (AccountKind.COLD_WALLET, False, True),
    "clearing": (AccountKind.CLEARING, False, False),
    "fees": (AccountKind.FEES, True, False),
    "equity": (AccountKind.EQUITY, False, False),
}


@dataclass(frozen=True, slots=True)
class PlatformAccounts:
    asset: str
    external: Account
    hot_wallet: Account
    lightning: Account
    cold_wallet: Account
    clearing: Account
    fees: Account
    equity: Account


def platform_account_name(role: str, asset: str) -> str:
    return f"platform:{role}:{asset}"


async def ensure_platform_accounts(session: AsyncSession, asset: str) -> PlatformAccounts:
    made = {}
    for role, (kind, dnec, cned) in _SPEC.items():
        made[role] = await create_account(
            session, name=platform_account_name(role, asset), asset=asset, kind=kind,
            owner_type="platform", owner_id=None,
            debits_must_not_exceed_credits=dnec, credits_must_not_exceed_debits=cned,
        )
    return PlatformAccounts(asset=asset, **made)
