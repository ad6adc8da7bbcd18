"""Changing a user's sign-in password: the one place it is set on an existing account.

Whoever changes it (the security page with the current password, or a mailed reset link)
gets the same rules: the new password may not be the payment password (that would leave
the money step-up a second copy of the sign-in password; the refusal is counted as a guess
at the payment password, since it tells what the payment password is), every outstanding
reset link is spent (a link mailed before the change must not undo it), and every web
session and API token family of the user is revoked, but the changing session's own.
"""

from __future__ import annotations

from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import User
from satvault.accounts.security import hash_password_async, verify_password_async
from satvault.auth.credentials import AuthPolicy, count_failure, credentials
from satvault.auth.errors import SameAsPaymentPassword
from satvault.auth.models import Credentials, EmailToken, Purpose
from satvault.auth.revocation import revoke_everything
from satvault.kernel.clock import utcnow

__all__ = ["set_password"]


async def set_password(session: AsyncSession, *, user: User, password: str, reason: str,
                       ip: str = "", policy: AuthPolicy = AuthPolicy(),
                       except_session_id: str | None = None) -> Credentials:
    """Set ``user``'s sign-in password (its length checked by the caller); returns its
    credentials row, locked. Raises :class:`SameAsPaymentPassword` after counting the
    refusal: the caller answers it as a response so that the count commits."""
    creds = await credentials(session, user.id, for_update=True)
    if creds.payment_password_hash is not None \
            and await verify_password_async(password, creds.payment_password_hash):
        await count_failure(session, creds, policy=policy,
                            what="payment-password-via-password", ip=ip)
        raise SameAsPaymentPassword()
    now = utcnow()
    # found from outside: the security page's change left earlier reset links working.
    await session.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user.id, EmailToken.purpose == Purpose.RESET,
               EmailToken.used_at.is_(None))
        .values(used_at=now))
    user.password_hash = await hash_password_async(password)
    creds.updated_at = now
    await revoke_everything(session, user_id=user.id, actor=user.id, reason=reason,
                            except_session_id=except_session_id)
    return creds
