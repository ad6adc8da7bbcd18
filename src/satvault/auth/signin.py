"""Checking a password and a second factor, with the account lockout, and the half-signed-in
challenge between them.

Lockout (per account, in ``auth_credentials`` so it holds across processes): every failed
password or code counts; from the ``lockout_threshold``-th failure in a row the account is
locked for base, 2 x base, 4 x base … seconds (capped), and while locked nothing is checked,
so guessing stops whatever the guess. A success clears the count. The per-address budget is
the edge's (web/ratelimit.py). A failure is written before it is raised: the caller that
wants it to count commits (the sign-in routes answer the refusal as a response).

Unknown addresses cost an argon2 verification too, so timing does not tell them apart; a
pending or suspended account is named only to whoever gave its right password.

A known device (:mod:`satvault.auth.devices`, migration 0081) is not held back by the
account's lock: its own failures count against, and lock, that device alone.

The challenge: a right password for a user with TOTP does not make a session. It makes a
challenge (256-bit token, stored hashed, 5 minutes, 5 tries) which only a valid TOTP or
recovery code trades for a session; the challenge itself opens nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User, UserStatus
from satvault.accounts.security import hash_password, verify_password_async
from satvault.audit.service import record
from satvault.auth.credentials import (
    AuthPolicy,
    count_failure,
    credentials,
    digest,
    random_token,
    refuse_if_locked,
)
from satvault.auth.devices import known_device
from satvault.auth.errors import InvalidCode
from satvault.auth.models import Credentials, KnownDevice, SigninChallenge
from satvault.auth.totp import totp_enabled, verify_factor
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import Unauthenticated
from satvault.kernel.ids import new_id

__all__ = ["Checked", "check_password", "check_second_factor",
           "count_failure", "live_challenge", "pass_challenge", "signed_in", "start_challenge"]

# Also what an address still pending hears, right password or not: found from outside, a
# sign-up with an address then a sign-in with the password just chosen told a free address
# ("confirm your e-mail first") from a taken one ("wrong e-mail or password").
_WRONG = ("wrong e-mail or password, or the address is not confirmed yet (follow the link "
          "we mailed)")
# Spent on unknown addresses so they take as long as known ones.
_DUMMY_HASH = hash_password("satvault-timing-equaliser")


@dataclass(frozen=True, slots=True)
class Checked:
    """A right password: the user, and whether a second factor must follow."""

    user: User
    needs_second_factor: bool
    # The known device the password came from (its token was presented), else None.
    device: KnownDevice | None = None


async def check_password(session: AsyncSession, *, email: str, password: str, ip: str = "",
                         policy: AuthPolicy = AuthPolicy(),
                         device_token: str | None = None) -> Checked:
    norm = email.strip().lower()
    user = (await session.execute(select(User).where(User.email == norm))).scalar_one_or_none()
    if user is None or not user.password_hash:
        await verify_password_async(password, _DUMMY_HASH)
        await record(session, actor="anonymous", action="auth.signin_failed", object="",
                     after={"factor": "password", "email": norm[:120], "ip": ip,
                            "known": False})
        raise Unauthenticated(_WRONG)
    creds = await credentials(session, user.id, for_update=True)
    device = await known_device(session, user_id=user.id, token=device_token)
    refuse_if_locked(device or creds)
    if not await verify_password_async(password, user.password_hash):
        await count_failure(session, creds, policy=policy, what="password", ip=ip,
                            device=device)
        raise Unauthenticated(_WRONG)
    if user.status != UserStatus.ACTIVE:
        reason = _WRONG if user.status == UserStatus.PENDING else "this account is suspended"
        await record(session, actor=user.id, action="auth.signin_refused", object=user.id,
                     after={"status": user.status.value, "ip": ip})
        raise Unauthenticated(reason)
    second = totp_enabled(creds)
    if not second:
        _passed(creds, device)
    return Checked(user=user, needs_second_factor=second, device=device)


def _passed(creds: Credentials, device: KnownDevice | None) -> None:
    """A sign-in passed: the count of whoever it counted against starts again (a known
    device's success leaves the account's count, which strangers' guesses fill, alone)."""
    if device is not None:
        device.failures, device.locked_until = 0, None
    else:
        creds.failed_signins, creds.locked_until = 0, None


async def check_second_factor(session: AsyncSession, *, user_id: str, code: str,
                              ip: str = "", policy: AuthPolicy = AuthPolicy(),
                              device: KnownDevice | None = None) -> None:
    """A TOTP or recovery code for a user whose password was just right (from the known
    ``device``, when it was)."""
    creds = await credentials(session, user_id, for_update=True)
    refuse_if_locked(device or creds)
    if not await verify_factor(session, creds, code, sealer=policy.sealer):
        await count_failure(session, creds, policy=policy, what="totp", ip=ip, device=device)
        raise InvalidCode("that code is not right (or was used already)")
    _passed(creds, device)


async def signed_in(session: AsyncSession, *, user_id: str, method: str, ip: str = "",
                    user_agent: str = "") -> None:
    """Audit a completed sign-in (``method``: password, password+totp, token …)."""
    await record(session, actor=user_id, action="auth.signin", object=user_id,
                 after={"method": method, "ip": ip, "user_agent": user_agent[:200]})


async def start_challenge(session: AsyncSession, *, user_id: str, ip: str = "",
                          user_agent: str = "", policy: AuthPolicy = AuthPolicy(),
                          device: KnownDevice | None = None) -> str:
    """The half-signed-in state after a right password (given from the known ``device``,
    when it was); its token (for a cookie)."""
    token, now = random_token(), utcnow()
    session.add(SigninChallenge(
        id=new_id("chl"), user_id=user_id, token_hash=digest(token), ip=ip[:64],
        user_agent=user_agent[:300], attempts=0, created_at=now,
        expires_at=now + timedelta(minutes=policy.challenge_minutes),
        device_id=device.id if device is not None else None))
    await session.flush()
    return token


async def live_challenge(session: AsyncSession, token: str) -> SigninChallenge | None:
    found = (await session.execute(
        select(SigninChallenge).where(SigninChallenge.token_hash == digest(token))
        .with_for_update())).scalar_one_or_none()
    if found is None or found.used_at is not None or found.expires_at <= utcnow():
        return None
    return found


async def pass_challenge(session: AsyncSession, *, token: str, code: str, ip: str = "",
                         policy: AuthPolicy = AuthPolicy()) -> SigninChallenge:
    """Trade a challenge and a valid code for the right to start a session (the challenge is
    spent); a wrong code costs one of its tries and counts against the account."""
    challenge = await live_challenge(session, token)
    if challenge is None:
        raise Unauthenticated("this sign-in has expired; start again with your password")
    device = None
    if challenge.device_id is not None:
        # The account's row first, as every sign-in locks it before its device.
        await credentials(session, challenge.user_id, for_update=True)
        device = await session.get(KnownDevice, challenge.device_id, with_for_update=True)
        if device is not None and device.revoked_at is not None:
            device = None
    try:
        await check_second_factor(session, user_id=challenge.user_id, code=code, ip=ip,
                                  policy=policy, device=device)
    except Unauthenticated:
        challenge.attempts += 1
        if challenge.attempts >= policy.challenge_attempts:
            challenge.used_at = utcnow()
        raise
    challenge.used_at = utcnow()
    return challenge
