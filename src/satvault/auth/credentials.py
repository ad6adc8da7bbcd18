"""A user's sign-in state (``auth_credentials``) and the policy numbers that govern it: the
lockout, the lives of tokens and challenges. The policy is plain values the edge builds from
the settings; services take it as a keyword and never read settings themselves."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record
from satvault.auth.errors import AccountLocked
from satvault.auth.models import Credentials, KnownDevice
from satvault.auth.sealing import Sealer
from satvault.config import Settings
from satvault.kernel.clock import utcnow

__all__ = ["SIGNED_OUT_FACTORS", "AuthPolicy", "clear_failures", "count_failure", "credentials",
           "digest", "is_locked", "lock_for", "random_token", "refuse_if_locked",
           "refuse_stepup_if_locked", "sealer_for"]


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    access_token_seconds: int = 600
    refresh_token_days: int = 30
    money_scope_minutes: int = 15
    lockout_threshold: int = 5
    lockout_base_seconds: int = 60
    lockout_max_seconds: int = 3600
    verify_token_hours: int = 48
    reset_token_minutes: int = 60
    challenge_minutes: int = 5
    challenge_attempts: int = 5
    # Seals TOTP secrets and JWT signing keys at rest (satvault.auth.sealing).
    sealer: Sealer = field(default_factory=Sealer)

    @classmethod
    def from_settings(cls, settings: Settings) -> AuthPolicy:
        return cls(access_token_seconds=settings.auth_access_token_seconds,
                   refresh_token_days=settings.auth_refresh_token_days,
                   money_scope_minutes=settings.auth_money_scope_minutes,
                   lockout_threshold=settings.auth_lockout_threshold,
                   lockout_base_seconds=settings.auth_lockout_base_seconds,
                   lockout_max_seconds=settings.auth_lockout_max_seconds,
                   sealer=sealer_for(settings))


def sealer_for(settings: Settings) -> Sealer:
    key = settings.secret_key.get_secret_value() if settings.secret_key else ""
    return Sealer(key.encode() if key else None)


def lock_for(policy: AuthPolicy, failures: int) -> timedelta | None:
    """How long ``failures`` failed attempts in a row lock an account (None: not locked):
    base, 2 x base, 4 x base … from the threshold on, capped."""
    over = failures - policy.lockout_threshold
    if over < 0:
        return None
    seconds = policy.lockout_base_seconds * (2 ** min(over, 30))
    return timedelta(seconds=min(seconds, policy.lockout_max_seconds))


def random_token() -> str:
    """A 256-bit URL-safe secret (mailed links, refresh tokens, sign-in challenges)."""
    return secrets.token_urlsafe(32)


def digest(secret: str) -> str:
    """What is stored of a high-entropy secret: its SHA-256 (a slow hash buys nothing
    against 2^256, see accounts.security)."""
    return hashlib.sha256(secret.encode()).hexdigest()


async def credentials(session: AsyncSession, user_id: str, *,
                      for_update: bool = False) -> Credentials:
    """The user's row, created (empty) on first use."""
    found = await session.get(Credentials, user_id, with_for_update=for_update or None)
    if found is None:
        found = Credentials(user_id=user_id, totp_required=False, failed_signins=0,
                            failed_stepups=0, updated_at=utcnow())
        session.add(found)
        await session.flush()
    return found


def _wait(until: datetime | None, now: datetime) -> int:
    if until is None or until <= now:
        return 0
    return max(1, int((until - now).total_seconds() + 0.999))


def is_locked(creds: Credentials, now: datetime) -> int:
    """Seconds the factors checked behind a session, a token or the right password stay
    locked (0: not locked): :data:`SIGNED_OUT_FACTORS` aside, every factor's lock."""
    return _wait(creds.stepup_locked_until, now)


def refuse_if_locked(guard: Credentials | KnownDevice) -> None:
    """Raise :class:`AccountLocked` while the sign-in forms are locked for this caller: the
    account's lock for an unknown device, the device's own for a known one (nothing is
    checked then)."""
    wait = _wait(guard.locked_until, utcnow())
    if wait:
        raise AccountLocked(wait)


def refuse_stepup_if_locked(creds: Credentials) -> None:
    """Raise :class:`AccountLocked` while the factors behind a session are locked."""
    wait = is_locked(creds, utcnow())
    if wait:
        raise AccountLocked(wait)


def clear_failures(creds: Credentials) -> None:
    """A right second factor (step-up, or the payment password): every count and lock of
    the account ends (devices keep theirs)."""
    creds.failed_signins = creds.failed_stepups = 0
    creds.locked_until = creds.stepup_locked_until = None


# The factors the signed-out forms check (the sign-in password and the code after it):
# anyone may send them, so they lock the account for unknown devices and a known device's own
# lock for it. Every other factor is checked behind a session, a token or the right sign-in
# password (step-up, TOTP on and off, the payment password, a password change): those are
# counted apart (``failed_stepups``) and lock apart (``stepup_locked_until``, migration
# 0081), so a right sign-in password clears none of them (knowing it buys no more guesses at
# the factors meant to stand when it is phished), and a stranger's guesses at the sign-in
# form do not stop the owner's step-up in a session already open.
SIGNED_OUT_FACTORS = frozenset({"password", "totp"})


async def count_failure(session: AsyncSession, creds: Credentials, *, policy: AuthPolicy,
                        what: str, ip: str = "", device: KnownDevice | None = None) -> None:
    """One more failure in a row of ``what``'s kind, against the known ``device`` it came
    from (a signed-out factor), the account's sign-in forms, or the factors behind a session
    (:data:`SIGNED_OUT_FACTORS`); the lock it triggers, audited."""
    now = utcnow()
    holder: Credentials | KnownDevice
    if what in SIGNED_OUT_FACTORS and device is not None:
        device.failures += 1
        failures, holder, field_name = device.failures, device, "locked_until"
    elif what in SIGNED_OUT_FACTORS:
        creds.failed_signins += 1
        failures, holder, field_name = creds.failed_signins, creds, "locked_until"
    else:
        creds.failed_stepups += 1
        failures, holder, field_name = creds.failed_stepups, creds, "stepup_locked_until"
    creds.updated_at = now
    where = {"device": device.id} if device is not None and holder is device else {}
    await record(session, actor=creds.user_id, action="auth.signin_failed",
                 object=creds.user_id,
                 after={"factor": what, "failures": failures, "ip": ip, **where})
    lock = lock_for(policy, failures)
    if lock is not None:
        setattr(holder, field_name, now + lock)
        await record(session, actor="satvault", action="auth.locked", object=creds.user_id,
                     after={"failures": failures, "seconds": int(lock.total_seconds()),
                            "lock": "device" if where else
                            ("sign-in" if field_name == "locked_until" else "step-up"),
                            **where})
