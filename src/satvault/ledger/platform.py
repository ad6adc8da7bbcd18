"""The platform's own ledger accounts, one set per asset.

==============  =====================================================  ====================
name            what it stands for                                     guard
==============  =====================================================  ====================
external        the outside world: money entering/leaving the books   none
deposit_wallet  coins on customers' deposit addresses, not yet swept   credits ≤ debits
hot_wallet      coins in the semi-cold wallet that pays withdrawals    credits ≤ debits
lightning       our Lightning node's spendable channel balance         none
cold_wallet     coins in cold storage (multisig, signed offline)       credits ≤ debits
clearing        money in flight between two states (e.g. a payout)    none
fees            fees the platform earned                               debits ≤ credits
network_fees    miners' fees the platform paid (an expense)            none
equity          the operator's own funds, corrections                  none
==============  =====================================================  ====================

The three coin accounts follow the custody tiers (``docs/custody.md``): the chain watcher books
a deposit on ``deposit_wallet``; a sweep moves it to ``hot_wallet`` and ``cold_wallet`` (its
fee to ``network_fees``), a refill from ``cold_wallet`` back to ``hot_wallet``, a payout out
of ``hot_wallet``: each in the transaction that records the move's confirmation.

Customer and merchant wallets are liabilities: credited when money comes in, guarded by
``debits_must_not_exceed_credits`` so they can never be spent below zero.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.ledger.core import Account, AccountKind, Balances
from satvault.ledger.models import LedgerAccount
from satvault.ledger.store import create_account

__all__ = ["PlatformAccounts", "ensure_platform_accounts", "platform_account_name",
           "platform_fee"]

_SPEC = {
    "external": (AccountKind.EXTERNAL, False, False),
    "deposit_wallet": (AccountKind.HOT_WALLET, False, True),
    "hot_wallet": (AccountKind.HOT_WALLET, False, True),
    # No guard: channel liquidity opened outside the books can be spent before it is booked.
    "lightning": (AccountKind.HOT_WALLET, False, False),
    "cold_wallet": (AccountKind.COLD_WALLET, False, True),
    "clearing": (AccountKind.CLEARING, False, False),
    "fees": (AccountKind.FEES, True, False),
    "network_fees": (AccountKind.EQUITY, False, False),
    "equity": (AccountKind.EQUITY, False, False),
}


@dataclass(frozen=True, slots=True)
class PlatformAccounts:
    asset: str
    external: Account
    deposit_wallet: Account
    hot_wallet: Account
    lightning: Account
    cold_wallet: Account
    clearing: Account
    fees: Account
    network_fees: Account
    equity: Account


def platform_fee(amount: int, fee_bp: int) -> int:
    """The platform's fee on money received for a store invoice: ``fee_bp`` basis points of
    ``amount``, rounded down (any fraction stays with the merchant). One rule for every
    rail: the chain watcher and the Lightning credit both book it with this."""
    if amount < 0 or fee_bp < 0:
        raise ValueError("amount and fee_bp are never negative")
    return amount * fee_bp // 10_000


def platform_account_name(role: str, asset: str) -> str:
    return f"platform:{role}:{asset}"


# Per database (engine): the platform's accounts never change once they exist, so after one
# lookup that found all of them their ids are known for the life of the process. Balances are
# not cached (they are zero here): read them with ``get_account``.
_KNOWN: WeakKeyDictionary[Any, dict[str, PlatformAccounts]] = WeakKeyDictionary()
_CREATED = "satvault.platform_accounts_created"


async def ensure_platform_accounts(session: AsyncSession, asset: str) -> PlatformAccounts:
    """The platform's accounts for ``asset``, created if missing. After the first call that
    finds them all in the database, no statement at all."""
    key = session.bind.sync_engine if session.bind is not None else None
    known = _KNOWN.get(key) if key is not None else None
    if known is not None and asset in known:
        return known[asset]
    found = await _find_all(session, asset)
    if found is not None:
        # Not if this very transaction created them: it may still roll back.
        if key is not None and not session.info.get(_CREATED):
            _KNOWN.setdefault(key, {})[asset] = found
        return found
    session.info[_CREATED] = True
    made = {}
    for role, (kind, dnec, cned) in _SPEC.items():
        made[role] = await create_account(
            session, name=platform_account_name(role, asset), asset=asset, kind=kind,
            owner_type="platform", owner_id=None,
            debits_must_not_exceed_credits=dnec, credits_must_not_exceed_debits=cned,
        )
    return PlatformAccounts(asset=asset, **made)


async def _find_all(session: AsyncSession, asset: str) -> PlatformAccounts | None:
    """All of them in one statement, or None if any is missing or not as specified (then the
    creating path decides, and says what is wrong)."""
    names = {platform_account_name(role, asset): role for role in _SPEC}
    rows = (await session.execute(select(
        LedgerAccount.name, LedgerAccount.id, LedgerAccount.asset, LedgerAccount.kind,
        LedgerAccount.owner_type, LedgerAccount.owner_id,
        LedgerAccount.debits_must_not_exceed_credits,
        LedgerAccount.credits_must_not_exceed_debits,
    ).where(LedgerAccount.name.in_(names)))).all()
    found: dict[str, Account] = {}
    for row in rows:
        role = names[row.name]
        kind, dnec, cned = _SPEC[role]
        if (row.asset, row.kind, row.owner_type, row.owner_id,
                bool(row.debits_must_not_exceed_credits),
                bool(row.credits_must_not_exceed_debits)) != (asset, kind.value, "platform",
                                                              None, dnec, cned):
            return None
        found[role] = Account(int(row.id), asset, kind, dnec, cned)
    if len(found) != len(_SPEC):
        return None
    return PlatformAccounts(asset=asset, **{r: replace(a, balances=Balances())
                                           for r, a in found.items()})
