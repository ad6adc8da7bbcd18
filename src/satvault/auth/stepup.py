"""The payment password and step-up for money.

A money action from the dashboard (a withdrawal, an API key's creation, a change of payout
destinations) needs a factor re-proved within the last few minutes: the TOTP code, or the
payment password, a second argon2 password separate from the sign-in one (so a session
hijacked, or a sign-in password phished, does not move money by itself). :func:`step_up`
checks either and stamps the session (``mark_stepped_up``); :func:`require_stepped_up`,
called by the dashboard's money helpers, raises :class:`StepUpRequired` (403
``step-up-required``) otherwise. Failed step-ups count towards the account lockout like
failed sign-ins.

The API asks the same of the tokens it issues (:mod:`.tokens`): the session grant gets the
money scopes only while its session :func:`is_stepped_up`, the password grant only with a
second factor in the same request (the TOTP code, or :func:`check_payment_password`).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User
from satvault.accounts.security import hash_password_async, verify_password_async
from satvault.audit.service import record
from satvault.auth.credentials import AuthPolicy, clear_failures, credentials, is_locked
from satvault.auth.errors import AccountLocked, InvalidCode
from satvault.auth.models import Credentials
from satvault.auth.sessions import (
    STEP_UP_WINDOW,
    SessionView,
    WebSession,
    mark_stepped_up,
)
from satvault.auth.signin import count_failure
from satvault.auth.totp import Enrollment, begin_enrollment, check_code, totp_enabled
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import InvalidInput, NotFound, StepUpRequired, Unauthenticated

__all__ = ["FRESH_SIGN_IN", "begin_totp_enrollment", "check_payment_password",
           "is_stepped_up", "require_stepped_up", "set_payment_password", "step_up"]

# Within this long of signing in, the holder of a session or token is taken to be the one who
# signed in: TOTP can be turned on without giving the password again.
FRESH_SIGN_IN = timedelta(minutes=10)


async def set_payment_password(session: AsyncSession, *, user_id: str, password: str,
                               payment_password: str, stepped_up: bool = False,
                               ip: str = "", policy: AuthPolicy = AuthPolicy()) -> None:
    """Set (or change) the payment password; needs the sign-in password, and must differ
    from it. Replacing one, or setting one on an account with TOTP, needs more than the
    sign-in password, which is what the payment password stands against: ``stepped_up``, a
    factor re-proved in this session (the old payment password, or TOTP), else
    :class:`StepUpRequired`. Refused while the account is
    locked; a wrong sign-in password counts towards the lockout (written before
    :class:`Unauthenticated` is raised: the caller commits it)."""
    user = await session.get(User, user_id)
    if user is None:
        raise NotFound(f"user {user_id!r} not found")
    creds = await credentials(session, user_id, for_update=True)
    wait = is_locked(creds, utcnow())
    if wait:
        raise AccountLocked(wait)
    if not user.password_hash or not await verify_password_async(password,
                                                                  user.password_hash):
        await count_failure(session, creds, policy=policy, what="password-payment-password",
                            ip=ip)
        raise Unauthenticated("the sign-in password is not right")
    had = creds.payment_password_hash is not None
    if (had or totp_enabled(creds)) and not stepped_up:
        # Replacing one, or adding one beside TOTP, needs the factor the account has: else
        # a phished sign-in password sets a factor of its own (found from outside, twice).
        raise StepUpRequired("confirm the payment password you have (or your TOTP code) "
                             "before setting one (step-up)")
    if len(payment_password) < 8 or len(payment_password) > 1024:
        raise InvalidInput("a payment password needs 8 to 1024 characters")
    if await verify_password_async(payment_password, user.password_hash):
        raise InvalidInput("the payment password must differ from the sign-in password")
    creds.payment_password_hash = await hash_password_async(payment_password)
    creds.updated_at = utcnow()
    await record(session, actor=user_id, action="auth.payment_password_set", object=user_id,
                 after={"changed": had})


async def step_up(session: AsyncSession, *, session_id: str, totp_code: str | None = None,
                  payment_password: str | None = None, ip: str = "",
                  policy: AuthPolicy = AuthPolicy()) -> datetime:
    """Re-prove a factor in this web session; money actions are allowed until the returned
    time. A wrong factor is counted (written before :class:`InvalidCode` is raised)."""
    row = await session.get(WebSession, session_id)
    if row is None or row.revoked_at is not None:
        raise NotFound(f"session {session_id!r} not found")
    creds = await credentials(session, row.user_id, for_update=True)
    wait = is_locked(creds, utcnow())
    if wait:
        raise AccountLocked(wait)
    if totp_code:
        if not totp_enabled(creds):
            raise InvalidInput("TOTP is not on for this account; use the payment password")
        ok, what = check_code(creds, totp_code, sealer=policy.sealer), "step-up-totp"
    elif payment_password:
        ok, what = await _payment_password_ok(creds, payment_password), "step-up-payment-password"
    else:
        raise InvalidInput("give the TOTP code or the payment password")
    if not ok:
        await count_failure(session, creds, policy=policy, what=what, ip=ip)
        raise InvalidCode("that is not right")
    clear_failures(creds)
    return await mark_stepped_up(session, session_id=session_id)


async def _payment_password_ok(creds: Credentials, payment_password: str) -> bool:
    if creds.payment_password_hash is None:
        raise InvalidInput("no payment password is set; set one on the security page")
    return await verify_password_async(payment_password, creds.payment_password_hash)


async def check_payment_password(session: AsyncSession, *, user_id: str,
                                 payment_password: str, ip: str = "",
                                 policy: AuthPolicy = AuthPolicy()) -> None:
    """The payment password proved outside a web session (the API's password grant), checked
    like a step-up: refused while the account is locked out, and a wrong one counted
    (written before :class:`InvalidCode` is raised)."""
    creds = await credentials(session, user_id, for_update=True)
    wait = is_locked(creds, utcnow())
    if wait:
        raise AccountLocked(wait)
    if not await _payment_password_ok(creds, payment_password):
        await count_failure(session, creds, policy=policy, what="payment-password", ip=ip)
        raise InvalidCode("the payment password is not right")
    clear_failures(creds)


async def begin_totp_enrollment(session: AsyncSession, *, user_id: str,
                                signed_in_at: datetime, password: str | None = None,
                                ip: str = "", policy: AuthPolicy = AuthPolicy()
                                ) -> Enrollment:
    """:func:`satvault.auth.totp.begin_enrollment` for the account's holder, not whoever holds
    their session or token: turning TOTP on with a thief's authenticator locks the owner out
    (a password reset does not turn it off; found from outside at stop 32). Needs a sign-in
    (``signed_in_at``) within :data:`FRESH_SIGN_IN`, or the sign-in ``password`` given now
    (an account without one, LNURL-auth's, signs in again): else :class:`StepUpRequired`.
    Refused while the account is locked; a wrong password counts towards the lockout
    (written before :class:`Unauthenticated` is raised: the caller commits it)."""
    creds = await credentials(session, user_id, for_update=True)
    wait = is_locked(creds, utcnow())
    if wait:
        raise AccountLocked(wait)
    if utcnow() - signed_in_at >= FRESH_SIGN_IN:
        user = await session.get(User, user_id)
        if user is None:
            raise NotFound(f"user {user_id!r} not found")
        if not password:
            raise StepUpRequired("give your sign-in password (or sign in again) to turn on "
                                 "two-factor sign-in")
        if not user.password_hash or not await verify_password_async(password,
                                                                      user.password_hash):
            await count_failure(session, creds, policy=policy, what="password-totp-enroll",
                                ip=ip)
            raise Unauthenticated("the sign-in password is not right")
    return await begin_enrollment(session, user_id=user_id, policy=policy)


def is_stepped_up(view: SessionView, within: timedelta = STEP_UP_WINDOW) -> bool:
    """Whether this session re-proved a factor within ``within`` (at most the session's own
    step-up window)."""
    until = view.stepped_up_until
    return until is not None and utcnow() < min(until, until - STEP_UP_WINDOW + within)


def require_stepped_up(view: SessionView, within: timedelta = STEP_UP_WINDOW) -> None:
    """Raise :class:`StepUpRequired` unless this session :func:`is_stepped_up`."""
    if not is_stepped_up(view, within):
        raise StepUpRequired("confirm this with your TOTP code or payment password first "
                             "(step-up)")
