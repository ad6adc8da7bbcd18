"""A wallet's frozen sub-balance, and the hook that screens deposits as they are credited.

A deposit the risk rules send to review or reject is never refused (the money has arrived)
and never lost: it is credited to a separate ledger account of the wallet, its *frozen*
sub-balance, instead of the spendable one. The account has the wallet's kind and owner, so
liabilities and reconciliation count it as owed to the customer, and no payment path debits
it: only a case decision moves it (released to the wallet's account) or a reorg (reversed
from it), both through :mod:`satvault.risk.frozen`.

The rails that credit deposits (``onchain``, ``lightning``) sit below the rules engine, so
they do not import it: the composition root hands them a :class:`DepositScreen`, which they
call inside the unit of work that credits the deposit. With none, a deposit is credited as it
always was.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.kernel.errors import NotFound
from satvault.ledger.core import AccountKind
from satvault.ledger.store import create_account

__all__ = ["DepositScreen", "IncomingDeposit", "ensure_frozen_account"]


@dataclass(frozen=True, slots=True)
class IncomingDeposit:
    """A deposit about to be credited. ``subject_id``: the deposit's own id (``txid:vout``
    on-chain, the Lightning invoice's id); ``credit_id``: the id of the ledger credit (unique
    per crediting, a reorg's re-credit has another); ``senders``: the addresses that paid, where
    the chain backend can tell (none for Lightning); ``fee_msat``: the platform's fee taken
    from it (a store invoice), which is not frozen."""

    wallet_id: str
    ledger_account_id: int
    owner_type: str
    owner_id: str
    amount_msat: int
    rail: str  # onchain | lightning
    subject_id: str
    credit_id: str
    receiving: str = ""  # our address or invoice
    senders: tuple[str, ...] = ()
    fee_msat: int = 0
    store_invoice_id: str | None = None


class DepositScreen(Protocol):
    async def screen(self, session: AsyncSession, deposit: IncomingDeposit) -> int | None:
        """Screen the deposit (the decision is stored): ``None`` to credit the wallet as
        usual, or the ledger account (the wallet's frozen one) to credit instead."""
        ...

    async def unwind(self, session: AsyncSession, *, credit_id: str) -> int | None:
        """A credit is being reversed (a reorg): the account to take it back from if the
        money is still frozen (now marked reversed), else ``None`` (the wallet's own)."""
        ...


async def ensure_frozen_account(session: AsyncSession, wallet_id: str) -> int:
    """The wallet's frozen ledger account, created (and linked) on first use."""
    row = (await session.execute(select(
        Wallet.frozen_ledger_account_id, Wallet.owner_type, Wallet.owner_id, Wallet.asset)
        .where(Wallet.id == wallet_id))).one_or_none()
    if row is None:
        raise NotFound(f"wallet {wallet_id!r} not found")
    if row[0] is not None:
        return int(row[0])
    owner_type, owner_id, asset = row[1], row[2], row[3]
    kind = AccountKind.MERCHANT_WALLET if owner_type == "merchant" \
        else AccountKind.CUSTOMER_WALLET
    account = await create_account(
        session, name=f"{owner_type}:{owner_id}:{asset}:frozen", asset=asset, kind=kind,
        owner_type=owner_type, owner_id=owner_id, debits_must_not_exceed_credits=True)
    await session.execute(update(Wallet).where(Wallet.id == wallet_id)
                          .values(frozen_ledger_account_id=account.id)
                          .execution_options(synchronize_session=False))
    return account.id
