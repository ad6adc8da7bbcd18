"""Sign-up by e-mail, its verification, and the password reset.

A signed-up user is ``pending`` (no sign-in, no LNURL login, not payable) until the link
mailed to the address is followed. Mailed tokens are 256-bit, stored as SHA-256, single use,
and expire (verification 48 h, reset 1 h). The answers do not tell whether an address has an
account: sign-up with a taken address and a reset for an unknown one answer like any other,
and take as long (a taken address's sign-up hashes the password it was given too), and what
differs is only the mail the address's owner gets (or does not). Each function
returns the mail to send; the caller sends it after its unit of work has committed.

A password reset sets the new password (:func:`satvault.auth.passwords.set_password`: not
the payment password; every outstanding reset token of the user spent; every web session
and every API token family of the user revoked) and clears the lockout.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User, UserStatus
from satvault.accounts.security import hash_password_async, verify_password_async
from satvault.accounts.service import create_user, normalize_email
from satvault.audit.service import record
from satvault.auth.credentials import AuthPolicy, credentials, digest, random_token
from satvault.auth.mail import Mail
from satvault.auth.models import EmailToken, Purpose
from satvault.auth.passwords import set_password
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import InvalidInput
from satvault.kernel.ids import new_id

__all__ = ["confirm_password_reset", "request_password_reset", "sign_up", "verify_email"]

_PASSWORD_MIN = 8


@dataclass(frozen=True, slots=True)
class Links:
    """Where mailed links point: ``{base}/verify?token=…``, ``{base}/password-reset/confirm…``."""

    base: str

    def verify(self, token: str) -> str:
        return f"{self.base.rstrip('/')}/verify?token={token}"

    def reset(self, token: str) -> str:
        return f"{self.base.rstrip('/')}/password-reset/confirm?token={token}"


async def _issue(session: AsyncSession, *, user_id: str, purpose: Purpose,
                 life: timedelta, password_hash: str | None = None) -> str:
    token, now = random_token(), utcnow()
    session.add(EmailToken(id=new_id("etk"), user_id=user_id, purpose=purpose,
                           token_hash=digest(token), created_at=now, expires_at=now + life,
                           password_hash=password_hash))
    await session.flush()
    return token


async def _spend(session: AsyncSession, *, token: str, purpose: Purpose,
                 password: str | None = None) -> EmailToken:
    """Spend a mailed link; one that carries its sign-up's password is spent only by who
    gives that password (nothing changes otherwise)."""
    found = (await session.execute(
        select(EmailToken).where(EmailToken.token_hash == digest(token.strip()))
        .with_for_update())).scalar_one_or_none()
    if (found is None or found.purpose != purpose or found.used_at is not None
            or found.expires_at <= utcnow()):
        raise InvalidInput("this link is not valid: it was used already, has expired, or "
                           "was never ours; ask for a new one")
    if found.password_hash is not None and not (
            password and await verify_password_async(password, found.password_hash)):
        raise InvalidInput("give the password you chose when you signed up: this link "
                           "confirms the sign-up made with it")
    found.used_at = utcnow()
    return found


def _check_password(password: str) -> None:
    if len(password) < _PASSWORD_MIN:
        raise InvalidInput(f"a password needs at least {_PASSWORD_MIN} characters")
    if len(password) > 1024:
        raise InvalidInput("a password may have at most 1024 characters")


async def sign_up(session: AsyncSession, *, email: str, password: str, links: Links,
                  display_name: str = "", policy: AuthPolicy = AuthPolicy()) -> Mail:
    """A pending user and its verification mail; for a taken address, a mail to its owner
    instead. Each sign-up's link carries that sign-up's password (migration 0080): following
    it needs the password and makes it the account's, and the user's other links are spent
    then. An address signed up again while still pending gets a link of its own and changes
    nothing else. Found from outside, twice: the first password stayed, so whoever signed up
    with somebody else's address first got into the account that person verified later; and
    then the last sign-up's password replaced it and spent the earlier links, so whoever
    signed up second took it over the same way. Only the mailbox's owner reads the links,
    and only the one who chose a sign-up's password can follow its link."""
    _check_password(password)
    norm = normalize_email(email)  # refused alike whether or not it is taken
    existing = (await session.execute(select(User).where(User.email == norm))
                ).scalar_one_or_none()
    life = timedelta(hours=policy.verify_token_hours)
    if existing is not None:
        if existing.status == UserStatus.PENDING:
            token = await _issue(session, user_id=existing.id, purpose=Purpose.VERIFY,
                                 life=life, password_hash=await hash_password_async(password))
            await record(session, actor=existing.id, action="auth.signup_again",
                         object=existing.id, after={"email": norm})
            return _verify_mail(norm, links.verify(token), policy)
        # The argon2 work a new sign-up does, spent and thrown away: found from outside, a
        # taken address answered in 44 ms and a new one in over a second.
        await hash_password_async(password)
        return Mail(to=norm, subject="satvault: you already have an account",
                    body="Somebody (you?) tried to sign up with this address, which already "
                         "has a satvault account. If you forgot its password, reset it from "
                         f"{links.base.rstrip('/')}/password-reset .\n\nIf it was not you, "
                         "ignore this mail.\n")
    user = await create_user(session, email=norm, password=password, display_name=display_name,
                             status=UserStatus.PENDING, actor="signup")
    await credentials(session, user.id)
    token = await _issue(session, user_id=user.id, purpose=Purpose.VERIFY, life=life,
                         password_hash=user.password_hash)
    await record(session, actor=user.id, action="auth.signup", object=user.id,
                 after={"email": norm})
    return _verify_mail(norm, links.verify(token), policy)


def _verify_mail(to: str, link: str, policy: AuthPolicy) -> Mail:
    return Mail(to=to, subject="satvault: confirm your e-mail address",
                body=f"Welcome to satvault.\n\nConfirm your e-mail address by opening this "
                     f"link within {policy.verify_token_hours} hours, with the password you "
                     f"chose when you signed up:\n\n{link}\n\n"
                     "If you did not sign up, ignore this mail: without that password the "
                     "link does nothing.\n")


async def verify_email(session: AsyncSession, *, token: str, password: str | None = None
                       ) -> User:
    """Spend a verification token with its sign-up's password: the address is verified, a
    pending user active with that password, and the user's other verification links spent."""
    spent = await _spend(session, token=token, purpose=Purpose.VERIFY, password=password)
    user = await session.get(User, spent.user_id, with_for_update=True)
    assert user is not None  # FK
    if spent.password_hash is not None and user.status == UserStatus.PENDING:
        user.password_hash = spent.password_hash
    await session.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user.id, EmailToken.purpose == Purpose.VERIFY,
               EmailToken.used_at.is_(None))
        .values(used_at=utcnow()))
    creds = await credentials(session, user.id, for_update=True)
    now = utcnow()
    creds.email_verified_at = creds.email_verified_at or now
    creds.updated_at = now
    before = user.status.value
    if user.status == UserStatus.PENDING:
        user.status = UserStatus.ACTIVE
    await record(session, actor=user.id, action="auth.email_verified", object=user.id,
                 before={"status": before}, after={"status": user.status.value})
    return user


async def request_password_reset(session: AsyncSession, *, email: str, links: Links,
                                 policy: AuthPolicy = AuthPolicy()) -> Mail | None:
    """The reset mail for an address with an account (None for any other: the caller
    answers the same either way, and sends nothing)."""
    norm = email.strip().lower()
    user = (await session.execute(select(User).where(User.email == norm))).scalar_one_or_none()
    if user is None or user.status == UserStatus.SUSPENDED:
        return None
    token = await _issue(session, user_id=user.id, purpose=Purpose.RESET,
                         life=timedelta(minutes=policy.reset_token_minutes))
    await record(session, actor=user.id, action="auth.password_reset_requested",
                 object=user.id)
    return Mail(to=norm, subject="satvault: reset your password",
                body=f"Somebody (you?) asked to reset the password of this satvault account."
                     f"\n\nSet a new one within {policy.reset_token_minutes} minutes here:"
                     f"\n\n{links.reset(token)}\n\nSetting it signs you out everywhere. If "
                     "you did not ask, ignore this mail: the password stays as it is.\n")


async def confirm_password_reset(session: AsyncSession, *, token: str, password: str,
                                 ip: str = "", policy: AuthPolicy = AuthPolicy()) -> User:
    """Spend the link and set the password (:func:`satvault.auth.passwords.set_password`).
    A new password equal to the payment password is refused as the security page refuses
    it (found from outside: a reset set it, which took the money step-up away), counted as
    a guess at the payment password, and the link stays spent, so every guess costs a
    mail: :class:`SameAsPaymentPassword`, which the caller answers so that those commit."""
    _check_password(password)
    spent = await _spend(session, token=token, purpose=Purpose.RESET)
    user = await session.get(User, spent.user_id, with_for_update=True)
    assert user is not None  # FK
    creds = await set_password(session, user=user, password=password,
                               reason="password-reset", ip=ip, policy=policy)
    now = utcnow()
    creds.failed_signins, creds.locked_until, creds.updated_at = 0, None, now
    # Following the mailed link proves the mailbox as well as verification would.
    creds.email_verified_at = creds.email_verified_at or now
    if user.status == UserStatus.PENDING:
        user.status = UserStatus.ACTIVE
    await record(session, actor=user.id, action="auth.password_reset", object=user.id)
    return user
