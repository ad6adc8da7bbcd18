"""LNURL tables: Lightning Addresses, withdraw vouchers, LNURL-auth keys and challenges.

The migration ``0006_lnurl`` is the DDL's source of truth; it adds the CHECKs the database
enforces whatever the code does: usernames lower-case in the LUD-16 alphabet, one status per
row from a closed set, a voucher used by at most one withdrawal, a challenge bound to a user
exactly when it is no longer open. ``0047_voucher_link_tokens`` adds a voucher's
``link_hash``; ``0054_voucher_failures`` the withdrawals after whose failure a voucher opened
again; ``0055_voucher_expiry`` an optional ``expires_at`` and the status ``expired``.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, StrEnumType, UtcDateTime

__all__ = ["ChallengeStatus", "LightningAddress", "LnurlAuthChallenge", "LnurlAuthKey",
           "LnurlVoucherFailure", "LnurlWithdrawVoucher", "VoucherStatus"]


class VoucherStatus(StrEnum):
    OPEN = "open"
    USED = "used"
    CANCELED = "canceled"
    EXPIRED = "expired"


class ChallengeStatus(StrEnum):
    OPEN = "open"
    VERIFIED = "verified"
    CONSUMED = "consumed"


class LightningAddress(Base):
    """``username@<our host>`` pays into ``wallet_id`` (LUD-16)."""

    __tablename__ = "lightning_addresses"

    username: Mapped[str] = mapped_column(String(64), primary_key=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LnurlWithdrawVoucher(Base):
    """A single-use LNURL-withdraw (LUD-03) whose amount, plus a fee reserve, is held in the
    ledger under ``hold_id`` from creation until it is used or canceled. A use whose payment
    definitely fails opens it again under a new ``hold_id`` (:mod:`satvault.lightning.vouchers`).

    ``id`` is the management handle (API, audit, ledger refs, logs) and opens nothing. The
    LNURL carries a separate random token, shown once at creation; only its SHA-256
    (``link_hash``, unique) is stored, and it is what ``/lnurlw/<token>`` is looked up by."""

    __tablename__ = "lnurl_withdraw_vouchers"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    link_hash: Mapped[str] = mapped_column(String(64), unique=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"), index=True)
    k1: Mapped[str] = mapped_column(String(64), unique=True)
    min_msat: Mapped[int] = mapped_column(Amount)
    amount_msat: Mapped[int] = mapped_column(Amount)
    reserve_msat: Mapped[int] = mapped_column(Amount)
    description: Mapped[str] = mapped_column(String(639))
    status: Mapped[VoucherStatus] = mapped_column(StrEnumType(VoucherStatus, 12))
    hold_id: Mapped[str] = mapped_column(String(128), unique=True)
    withdrawal_id: Mapped[str | None] = mapped_column(ForeignKey("withdrawals.id"),
                                                      unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    closed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # Optional: past it the voucher refuses redemption and is expired, its hold released.
    expires_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)
    # A redemption in progress claims the voucher until then, before anything is asked of
    # the node (migration 0072): a concurrent one is refused before it cancels an invoice.
    redeeming_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # Who made it (a user id; migration 0077): the initiator of what its redemption pays
    # out, whom a withdrawal policy never lets approve it. Null: nobody stands behind the
    # key that made it (or it predates 0077), and the wallet's owner is named instead.
    initiator: Mapped[str | None] = mapped_column(String(40), default=None)


class LnurlVoucherFailure(Base):
    """A withdrawal of ``voucher_id`` that definitely failed, after which the voucher opened
    again with a new hold (``lnurlw:<voucher>:hold:<withdrawal>``)."""

    __tablename__ = "lnurl_voucher_failures"

    withdrawal_id: Mapped[str] = mapped_column(ForeignKey("withdrawals.id"), primary_key=True)
    voucher_id: Mapped[str] = mapped_column(ForeignKey("lnurl_withdraw_vouchers.id"),
                                            index=True)
    failed_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LnurlAuthKey(Base):
    """A LUD-04 linking key (compressed secp256k1 public key, hex) and the user it logs in."""

    __tablename__ = "lnurl_auth_keys"

    linking_key: Mapped[str] = mapped_column(String(66), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class LnurlAuthChallenge(Base):
    """One login attempt: ``open`` until a wallet signs ``k1``, ``verified`` until the browser
    that asked for it (holding the secret hashed in ``session_hash``) takes its API key,
    then ``consumed``."""

    __tablename__ = "lnurl_auth_challenges"

    k1: Mapped[str] = mapped_column(String(64), primary_key=True)
    session_hash: Mapped[str] = mapped_column(String(64))
    status: Mapped[ChallengeStatus] = mapped_column(StrEnumType(ChallengeStatus, 12))
    linking_key: Mapped[str | None] = mapped_column(ForeignKey("lnurl_auth_keys.linking_key"))
    user_id: Mapped[str | None] = mapped_column(ForeignKey("users.id"))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime, index=True)
    verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    consumed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
