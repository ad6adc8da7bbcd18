"""The sign-in tables (migration 0034; its DDL, with the CHECKs, is the source of truth).

* ``auth_credentials``: one row per user who has used any of it: when the e-mail was
  verified, the TOTP secret (sealed, :mod:`.sealing`) and the last time step a code was
  accepted in (replay guard), whether an admin requires TOTP of this user, the payment
  password's argon2 hash, and the account lockout state (failed sign-ins in a row, locked
  until).
* ``auth_recovery_codes``: ten one-time codes per TOTP enrollment, hashed.
* ``auth_email_tokens``: single-use, expiring verification and password-reset tokens, hashed.
* ``auth_signin_challenges``: the half-signed-in state between a right password and the second
  factor; it carries no session and can only be traded for one with a valid code.
* ``auth_devices``: browsers and API clients that completed a sign-in (migration 0081), by a
  hashed token: the account's lock does not hold them back; each has a lock of its own.
* ``auth_signing_keys``: the JWT signing keys by ``kid``; a retired key signs nothing more and
  verifies until ``verify_until`` (the last token it signed has expired by then).
* ``auth_token_families`` and ``auth_refresh_tokens``: a refresh token is spent when used and
  replaced by the next of its family; a spent one presented again revokes the family, and the
  access tokens of a revoked family stop working at once. An ``enroll_only`` family has no
  scope and is not refreshed: its only use is turning TOTP on (migration 0057).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, IdInt, StrEnumType, UtcDateTime

__all__ = ["Credentials", "EmailToken", "KnownDevice", "Purpose", "RecoveryCode", "RefreshToken",
           "SigninChallenge", "SigningKey", "TokenFamily"]


class Purpose(StrEnum):
    VERIFY = "verify"
    RESET = "reset"


class Credentials(Base):
    __tablename__ = "auth_credentials"

    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), primary_key=True)
    email_verified_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    totp_secret: Mapped[str | None] = mapped_column(String(200), default=None)
    totp_confirmed_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    totp_last_step: Mapped[int | None] = mapped_column(BigInteger, default=None)
    totp_required: Mapped[bool] = mapped_column(Boolean, default=False)
    payment_password_hash: Mapped[str | None] = mapped_column(String(200), default=None)
    failed_signins: Mapped[int] = mapped_column(Integer, default=0)
    # The payment password's failures, apart: a right sign-in password does not clear them.
    failed_stepups: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    # The sign-in forms' lock (the password and the code after it, from unknown devices).
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The lock of the factors checked behind a session, a token or the right password
    # (step-up, TOTP on and off, the payment password; migration 0081).
    stepup_locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    @property
    def totp_enabled(self) -> bool:
        return self.totp_confirmed_at is not None


class RecoveryCode(Base):
    __tablename__ = "auth_recovery_codes"

    id: Mapped[int] = mapped_column(IdInt, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class EmailToken(Base):
    __tablename__ = "auth_email_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    purpose: Mapped[Purpose] = mapped_column(StrEnumType(Purpose, 16))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # A verification link's sign-up password (argon2), made the account's when the link is
    # followed with it (migration 0080); None for other links and older ones.
    password_hash: Mapped[str | None] = mapped_column(Text, default=None)


class SigninChallenge(Base):
    __tablename__ = "auth_signin_challenges"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    # The known device the password was given from (migration 0081): the code's failures
    # count against it, not the account.
    device_id: Mapped[str | None] = mapped_column(String(40), default=None)


class KnownDevice(Base):
    __tablename__ = "auth_devices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_used_at: Mapped[datetime] = mapped_column(UtcDateTime)
    failures: Mapped[int] = mapped_column(Integer, default=0)
    locked_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class SigningKey(Base):
    __tablename__ = "auth_signing_keys"

    kid: Mapped[str] = mapped_column(String(40), primary_key=True)
    alg: Mapped[str] = mapped_column(String(16))
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    retired_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    verify_until: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


class TokenFamily(Base):
    __tablename__ = "auth_token_families"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    merchant_id: Mapped[str | None] = mapped_column(ForeignKey("merchants.id"), default=None)
    session_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    scopes: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(80), default=None)
    # No scope, no refresh: an account that must have TOTP, logged in with one factor, may
    # only turn TOTP on (migration 0057; a CHECK keeps its scopes empty).
    enroll_only: Mapped[bool] = mapped_column(Boolean, default=False)


class RefreshToken(Base):
    __tablename__ = "auth_refresh_tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    family_id: Mapped[str] = mapped_column(ForeignKey("auth_token_families.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    used_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
