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

**The fees account is striped.** Every paid store invoice books its fee to ``fees``, and a
transfer locks its accounts' rows until it commits, so one fees row would make every
fee-bearing payment of the platform wait for the one before it. ``fees`` is therefore
:data:`FEE_STRIPES` accounts alike (``platform:fees:BTC``, then ``platform:fees:BTC:1`` …);
a fee goes to the stripe its payment's key picks (:meth:`PlatformAccounts.fee_account`, a
stable hash), and what the platform earned is their sum (:func:`fees_earned`).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, replace
from typing import Any
from weakref import WeakKeyDictionary

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.ledger.core import Account, AccountKind, Balances
from satvault.ledger.models import LedgerAccount
from satvault.ledger.store import create_account, insert_missing_accounts

__all__ = ["FEE_STRIPES", "PlatformAccounts", "ensure_platform_accounts", "fee_stripe_names",
           "fees_earned", "platform_account_name", "platform_fee"]

FEE_STRIPES = 16  # accounts the platform's fees are spread over, per asset

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
    fee_stripes: tuple[Account, ...]  # fees first, then the other stripes

    def fee_account(self, key: str) -> Account:
        """The fees stripe for the payment ``key`` (its transfer id, say): the same one every
        time for the same key, spread evenly over the stripes."""
        return self.fee_stripes[zlib.crc32(key.encode()) % len(self.fee_stripes)]


def platform_fee(amount: int, fee_bp: int) -> int:
    """The platform's fee on money received for a store invoice: ``fee_bp`` basis points of
    ``amount``, rounded down (any fraction stays with the merchant). One rule for every
    rail: the chain watcher and the Lightning credit both book it with this."""
    if amount < 0 or fee_bp < 0:
        raise ValueError("amount and fee_bp are never negative")
    return amount * fee_bp // 10_000


def platform_account_name(role: str, asset: str) -> str:
    return f"platform:{role}:{asset}"


def fee_stripe_names(asset: str) -> list[str]:
    """The fees stripes' account names, ``fees`` itself first."""
    base = platform_account_name("fees", asset)
    return [base] + [f"{base}:{k}" for k in range(1, FEE_STRIPES)]


async def fees_earned(session: AsyncSession, asset: str) -> int:
    """What the platform's fees accounts hold together, in the asset's smallest unit."""
    total = (await session.execute(
        select(func.coalesce(func.sum(LedgerAccount.credits_posted
                                      - LedgerAccount.debits_posted), 0))
        .where(LedgerAccount.name.in_(fee_stripe_names(asset))))).scalar_one()
    return int(total)


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
    # All of them in one statement (one by one, a fresh database's first wallet made 96);
    # then, if one exists unlike its spec, one by one to say which.
    await insert_missing_accounts(session, [
        (name, asset, kind, "platform", None, dnec, cned)
        for name, role in _names(asset).items() for kind, dnec, cned in [_SPEC[role]]])
    found = await _find_all(session, asset)
    if found is not None:
        return found
    made = {}
    for name, role in _names(asset).items():
        kind, dnec, cned = _SPEC[role]
        made[name] = await create_account(
            session, name=name, asset=asset, kind=kind, owner_type="platform", owner_id=None,
            debits_must_not_exceed_credits=dnec, credits_must_not_exceed_debits=cned,
        )
    return _accounts(asset, made)


def _names(asset: str) -> dict[str, str]:
    """Every platform account's name for ``asset`` → its role (each fees stripe: ``fees``)."""
    names = {platform_account_name(role, asset): role for role in _SPEC}
    names.update({name: "fees" for name in fee_stripe_names(asset)})
    return names


def _accounts(asset: str, by_name: dict[str, Account]) -> PlatformAccounts:
    roles = {role: by_name[platform_account_name(role, asset)] for role in _SPEC}
    return PlatformAccounts(asset=asset, **roles,
                            fee_stripes=tuple(by_name[n] for n in fee_stripe_names(asset)))


async def _find_all(session: AsyncSession, asset: str) -> PlatformAccounts | None:
    """All of them in one statement, or None if any is missing or not as specified (then the
    creating path decides, and says what is wrong)."""
    names = _names(asset)
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
        found[row.name] = Account(int(row.id), asset, kind, dnec, cned)
    if len(found) != len(names):
        return None  # one missing (new stripes after an upgrade, say): the creating path
    return _accounts(asset, {n: replace(a, balances=Balances()) for n, a in found.items()})
