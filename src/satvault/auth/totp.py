"""The TOTP second factor (RFC 6238 with ``pyotp``: SHA-1, 6 digits, 30 s steps, what every
authenticator app reads from an ``otpauth://`` QR) and its ten one-time recovery codes.

Enrollment is two steps: :func:`begin_enrollment` makes a secret and shows it (QR and text);
:func:`confirm_enrollment` turns it on once the user types a code it produced, and hands out
the recovery codes, shown that once. After confirmation the secret is never returned again;
at rest it is sealed (:mod:`.sealing`) when ``SATVAULT_SECRET_KEY`` is set.

A code is accepted in the current step or one step either side (clock drift), and only in a
step later than the last one accepted for this user (``totp_last_step``): a code seen once,
by a shoulder-surfer or a phishing proxy, is not good twice. Recovery codes are stored as
SHA-256 of the user id and the code (about 50 bits each; guessing is bounded by the lockout)
and each is spent by its first use.

TOTP is required of admins, and of any user an admin marked (per user, or per merchant
through its owner): :func:`must_enroll` says whether a signed-in user still has to, and
:func:`disable` refuses to turn it off for them, whoever asks (the API, the security page).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import pyotp
import segno
from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Merchant, User
from satvault.accounts.service import get_merchant, get_user
from satvault.audit.service import record
from satvault.auth.credentials import (
    AuthPolicy,
    count_failure,
    credentials,
    refuse_stepup_if_locked,
)
from satvault.auth.errors import InvalidCode
from satvault.auth.models import Credentials, RecoveryCode
from satvault.auth.revocation import revoke_families
from satvault.auth.sealing import Sealer
from satvault.auth.sessions import WebSession
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import Forbidden, InvalidInput

__all__ = ["ISSUER", "RECOVERY_CODES", "Enrollment", "begin_enrollment", "check_code",
           "confirm_enrollment", "disable", "must_enroll", "qr_svg", "required_of",
           "second_factor_due", "set_required",
           "totp_enabled", "use_recovery_code", "verify_factor"]

ISSUER = "satvault"
_PURPOSE = "totp secret"
RECOVERY_CODES = 10
_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"


@dataclass(frozen=True, slots=True)
class Enrollment:
    secret: str
    uri: str
    qr_svg: str


def qr_svg(uri: str) -> str:
    """The otpauth URI as an inline SVG QR code (no external image, no CDN)."""
    return str(segno.make(uri, error="m").svg_inline(scale=5, border=2, omitsize=True))


def _totp(secret: str) -> pyotp.TOTP:
    return pyotp.TOTP(secret)


def _match_step(secret: str, code: str, now: datetime) -> int | None:
    """The time step ``code`` belongs to (now, or one step either side), or None."""
    code = code.strip().replace(" ", "")
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = _totp(secret)
    base = totp.timecode(now)
    found = None
    for offset in (-1, 0, 1):  # compare all three: no early exit to time
        if hmac.compare_digest(totp.at(now, counter_offset=offset), code):
            found = base + offset
    return found


def check_code(creds: Credentials, code: str, *, sealer: Sealer,
               confirmed: bool = True) -> bool:
    """Whether ``code`` is a fresh TOTP code for these credentials; accepting it moves
    ``totp_last_step`` so the same code (or an older one) is refused from now on."""
    if creds.totp_secret is None or (confirmed and creds.totp_confirmed_at is None):
        return False
    secret = sealer.open(creds.totp_secret, purpose=_PURPOSE, row=creds.user_id)
    step = _match_step(secret, code, utcnow())
    if step is None or (creds.totp_last_step is not None and step <= creds.totp_last_step):
        return False
    creds.totp_last_step = step
    creds.updated_at = utcnow()
    return True


def _code_hash(user_id: str, code: str) -> str:
    norm = code.strip().lower().replace("-", "").replace(" ", "")
    return hashlib.sha256(f"{user_id}:{norm}".encode()).hexdigest()


def _new_recovery_code() -> str:
    raw = "".join(secrets.choice(_ALPHABET) for _ in range(10))
    return f"{raw[:5]}-{raw[5:]}"


async def use_recovery_code(session: AsyncSession, *, user_id: str, code: str) -> bool:
    """Spend one recovery code; False if it is not one of this user's unspent codes."""
    now = utcnow()
    spent = await session.execute(
        update(RecoveryCode)
        .where(RecoveryCode.user_id == user_id,
               RecoveryCode.code_hash == _code_hash(user_id, code),
               RecoveryCode.used_at.is_(None))
        .values(used_at=now))
    used = bool(spent.rowcount == 1)  # type: ignore[attr-defined]
    if used:
        left = len((await session.execute(select(RecoveryCode.id).where(
            RecoveryCode.user_id == user_id, RecoveryCode.used_at.is_(None)))).all())
        await record(session, actor=user_id, action="auth.recovery_code_used", object=user_id,
                     after={"left": left})
    return used


async def verify_factor(session: AsyncSession, creds: Credentials, code: str, *,
                        sealer: Sealer) -> bool:
    """A TOTP code or, failing that, a recovery code (which it spends)."""
    if check_code(creds, code, sealer=sealer):
        return True
    # Written as shown (XXXXX-XXXXX), without the hyphen, or with a space for it (found
    # from outside: "HGQS4 AED4A" was refused, and counted as a wrong code).
    if len(code.strip().replace("-", "").replace(" ", "")) == 10:
        return await use_recovery_code(session, user_id=creds.user_id, code=code)
    return False


def totp_enabled(creds: Credentials | None) -> bool:
    return creds is not None and creds.totp_confirmed_at is not None


def required_of(user: User, creds: Credentials | None) -> bool:
    """Whether this user must have TOTP: an admin, or a user an admin marked."""
    return user.is_admin or (creds is not None and creds.totp_required)


async def second_factor_due(session: AsyncSession, *, user_id: str
                            ) -> Literal["enroll", "verify"] | None:
    """What a signed-in session that has not passed a second factor owes first: ``verify``
    when the account has TOTP on (the session began before it was on, with the password
    alone: found from outside, such a session kept the whole dashboard once the owner turned
    TOTP on elsewhere), ``enroll`` when TOTP is required of the user and not on yet, else
    nothing."""
    user = await get_user(session, user_id)
    creds = await session.get(Credentials, user_id)
    if totp_enabled(creds):
        return "verify"
    return "enroll" if required_of(user, creds) else None


async def must_enroll(session: AsyncSession, *, user_id: str) -> bool:
    """Whether this user must have TOTP (an admin, or marked by one) and has none yet."""
    user = await get_user(session, user_id)
    creds = await session.get(Credentials, user_id)
    return required_of(user, creds) and not totp_enabled(creds)


async def begin_enrollment(session: AsyncSession, *, user_id: str,
                           policy: AuthPolicy = AuthPolicy()) -> Enrollment:
    """A new secret, pending until :func:`confirm_enrollment`; a second call replaces it.
    Checks nothing of who asks: the pages and the API start it through
    :func:`satvault.auth.stepup.begin_totp_enrollment`, which asks for the account holder."""
    user = await get_user(session, user_id)
    creds = await credentials(session, user_id, for_update=True)
    if creds.totp_confirmed_at is not None:
        raise InvalidInput("TOTP is already on; turn it off before enrolling again")
    secret = pyotp.random_base32()
    creds.totp_secret = policy.sealer.seal(secret, purpose=_PURPOSE, row=user_id)
    creds.totp_last_step = None
    creds.updated_at = utcnow()
    uri = _totp(secret).provisioning_uri(name=user.email, issuer_name=ISSUER)
    return Enrollment(secret=secret, uri=uri, qr_svg=qr_svg(uri))


async def confirm_enrollment(session: AsyncSession, *, user_id: str, code: str,
                             policy: AuthPolicy = AuthPolicy(), ip: str = "",
                             keep_session_id: str | None = None) -> list[str]:
    """Turn TOTP on with a code from the pending secret; the recovery codes, shown once.
    Refused while the account is locked out; a wrong code counts towards the lockout like a
    wrong password (found from outside: a caller that did not count it let a session guess
    the code), so the caller must let the transaction commit when it catches
    :class:`InvalidCode`. Every API token family of the user ends, but those of the web
    session ``keep_session_id`` that enrolled (it passes the factor now): none passed a
    second factor, as the web sessions that did not end at their next request (found from
    outside: a family issued on the password alone went on refreshing for good)."""
    creds = await credentials(session, user_id, for_update=True)
    if creds.totp_confirmed_at is not None:
        raise InvalidInput("TOTP is already on")
    if creds.totp_secret is None:
        raise InvalidInput("start the enrollment first")
    refuse_stepup_if_locked(creds)
    if not check_code(creds, code, sealer=policy.sealer, confirmed=False):
        await count_failure(session, creds, policy=policy, what="totp-enroll", ip=ip)
        raise InvalidCode("that code is not right; check the authenticator app's clock")
    creds.totp_confirmed_at = utcnow()
    codes = await _replace_recovery_codes(session, user_id)
    ended = await revoke_families(session, user_id=user_id, reason="totp turned on",
                                  except_session_id=keep_session_id)
    await record(session, actor=user_id, action="auth.totp_enabled", object=user_id,
                 after={"recovery_codes": len(codes), "token_families_ended": ended})
    return codes


async def _replace_recovery_codes(session: AsyncSession, user_id: str) -> list[str]:
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    codes = [_new_recovery_code() for _ in range(RECOVERY_CODES)]
    now = utcnow()
    session.add_all(RecoveryCode(user_id=user_id, code_hash=_code_hash(user_id, c),
                                 created_at=now) for c in codes)
    await session.flush()
    return codes


async def disable(session: AsyncSession, *, user_id: str, code: str, actor: str,
                  policy: AuthPolicy = AuthPolicy(), ip: str = "") -> None:
    """Turn TOTP off; needs a current code (or a recovery code). Refused (:class:`Forbidden`,
    before the code is looked at) while it is required of the user, and while the account is
    locked out; a wrong code counts towards the lockout (as in :func:`confirm_enrollment`).
    Every session of the user loses its second-factor mark: a session that passed a factor
    which is gone must not keep skipping the enrollment a later requirement asks, nor vouch
    for it to the token grant."""
    user = await get_user(session, user_id)
    creds = await credentials(session, user_id, for_update=True)
    refuse_stepup_if_locked(creds)
    if creds.totp_confirmed_at is None:
        raise InvalidInput("TOTP is not on")
    if required_of(user, creds):
        raise Forbidden("admins must keep TOTP on" if user.is_admin
                        else "an administrator requires TOTP of this account")
    if not await verify_factor(session, creds, code, sealer=policy.sealer):
        await count_failure(session, creds, policy=policy, what="totp-disable", ip=ip)
        raise InvalidCode("that code is not right")
    creds.totp_secret = creds.totp_confirmed_at = creds.totp_last_step = None
    creds.updated_at = utcnow()
    await session.execute(delete(RecoveryCode).where(RecoveryCode.user_id == user_id))
    await session.execute(update(WebSession).where(WebSession.user_id == user_id)
                          .values(mfa_at=None))
    await record(session, actor=actor, action="auth.totp_disabled", object=user_id)


async def set_required(session: AsyncSession, *, owner_id: str, required: bool,
                       actor: str) -> User:
    """An admin requires (or stops requiring) TOTP of a user, or of a merchant (its owner).
    Admins always need it; this flag cannot lift that. Required of a user without TOTP, the
    user's API token families are revoked (the web sessions are sent to enroll by the
    pages): found from outside, the tokens issued before kept working, refresh for 30
    days, so the requirement bound nothing a client already held."""
    if owner_id.startswith("mer_"):
        merchant: Merchant = await get_merchant(session, owner_id)
        if merchant.owner_user_id is None:
            raise InvalidInput(f"merchant {owner_id} has no owner user to require TOTP of")
        user = await get_user(session, merchant.owner_user_id)
    else:
        user = await get_user(session, owner_id)
    creds = await credentials(session, user.id, for_update=True)
    if creds.totp_required != required:
        creds.totp_required = required
        creds.updated_at = utcnow()
        await record(session, actor=actor, action="auth.totp_required", object=user.id,
                     before={"required": not required},
                     after={"required": required, "via": owner_id})
        if required and not totp_enabled(creds):
            families = await revoke_families(session, user_id=user.id,
                                             reason="totp-required")
            await record(session, actor=actor, action="auth.tokens_revoked", object=user.id,
                         after={"families": families, "reason": "totp-required"})
    return user
