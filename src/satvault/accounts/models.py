"""Who is who: users (customers and operators), merchants, their stores, their wallets, API
keys. Public ids are prefixed random strings (``usr_…``, ``mer_…``, ``sto_…``, ``wal_…``,
``key_…``) so they can be shown to anyone without revealing counts or inviting enumeration."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from satvault.audit.models import AuditEvent  # the audit log moved to satvault.audit
from satvault.db import Base, StrEnumType, UtcDateTime

__all__ = ["ApiKey", "AuditEvent", "Merchant", "Store", "User", "UserStatus", "Wallet"]


class UserStatus(StrEnum):
    """Only an ``active`` user logs in with LNURL-auth or is paid through a Lightning Address;
    ``suspended`` (set by an operator) keeps one out; ``pending``: signed up by e-mail and not
    verified yet (satvault.auth), cannot sign in. The column has no CHECK constraint: this set
    is the code's."""

    ACTIVE = "active"
    PENDING = "pending"
    SUSPENDED = "suspended"


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(254), unique=True)
    display_name: Mapped[str] = mapped_column(String(120), default="")
    password_hash: Mapped[str | None] = mapped_column(String(200))
    is_admin: Mapped[bool] = mapped_column(Boolean, default=False)
    kyc_tier: Mapped[int] = mapped_column(Integer, default=0)
    status: Mapped[UserStatus] = mapped_column(StrEnumType(UserStatus, 16),
                                               default=UserStatus.ACTIVE)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # The language the user chose for the dashboard (a code of checkout.i18n.LANGUAGES);
    # None: negotiated from the browser's Accept-Language.
    locale: Mapped[str | None] = mapped_column(String(16), default=None)


class Merchant(Base):
    __tablename__ = "merchants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(120))
    owner_user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Store(Base):
    __tablename__ = "stores"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    merchant_id: Mapped[str] = mapped_column(ForeignKey("merchants.id"), index=True)
    name: Mapped[str] = mapped_column(String(120))
    default_currency: Mapped[str] = mapped_column(String(16), default="BTC")
    speed_policy: Mapped[int] = mapped_column(Integer, default=1)
    # Rate spread charged on fiat invoices, in basis points (the payer pays more sats).
    spread_bp: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Wallet(Base):
    __tablename__ = "wallets"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(40))
    asset: Mapped[str] = mapped_column(String(16))
    ledger_account_id: Mapped[int] = mapped_column(ForeignKey("ledger_accounts.id"),
                                                   unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    # Set by an operator's freeze (satvault.kyc): nothing leaves a frozen wallet on any rail.
    frozen_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    frozen_reason: Mapped[str | None] = mapped_column(String(500), default=None)
    # The wallet's frozen sub-balance (satvault.accounts.frozen): deposits the risk rules
    # held back. Created on first use; never spent from, only released or reversed.
    frozen_ledger_account_id: Mapped[int | None] = mapped_column(
        ForeignKey("ledger_accounts.id"), default=None)

    __table_args__ = (UniqueConstraint("owner_type", "owner_id", "asset", name="owner_asset"),)


class ApiKey(Base):
    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    owner_type: Mapped[str] = mapped_column(String(16))
    owner_id: Mapped[str] = mapped_column(String(40), index=True)
    label: Mapped[str] = mapped_column(String(120), default="")
    scopes: Mapped[str] = mapped_column(Text)
    secret_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
