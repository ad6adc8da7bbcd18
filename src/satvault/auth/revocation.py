"""Ending what a user is signed in with: every web session and every API token family
(their refresh tokens stop renewing and their access tokens stop verifying at once)."""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record
from satvault.auth.devices import forget_devices
from satvault.auth.models import SigninChallenge, TokenFamily
from satvault.auth.sessions import revoke_all_sessions
from satvault.kernel.clock import utcnow

__all__ = ["revoke_everything", "revoke_families"]


async def revoke_families(session: AsyncSession, *, user_id: str, reason: str,
                          session_id: str | None = None,
                          except_session_id: str | None = None) -> int:
    """Revoke the user's live token families (only those of ``session_id`` when given;
    not those of ``except_session_id``); how many."""
    q = select(TokenFamily.id).where(TokenFamily.user_id == user_id,
                                     TokenFamily.revoked_at.is_(None))
    if session_id is not None:
        q = q.where(TokenFamily.session_id == session_id)
    if except_session_id is not None:
        q = q.where((TokenFamily.session_id.is_(None))
                    | (TokenFamily.session_id != except_session_id))
    ids = list((await session.execute(q)).scalars())
    if ids:
        await session.execute(update(TokenFamily).where(TokenFamily.id.in_(ids))
                              .values(revoked_at=utcnow(), revoked_reason=reason[:80]))
    return len(ids)


async def revoke_everything(session: AsyncSession, *, user_id: str, actor: str, reason: str,
                            except_session_id: str | None = None) -> None:
    """Every web session (but ``except_session_id``), every token family of the user (but
    those of that session), every sign-in still waiting for its second factor (found from
    outside: one begun with the old password before a reset finished with a code after it),
    and every known device (their next sign-in meets the account's lock)."""
    await revoke_all_sessions(session, user_id=user_id, except_session_id=except_session_id,
                              actor=actor, reason=reason)
    await session.execute(update(SigninChallenge).where(
        SigninChallenge.user_id == user_id, SigninChallenge.used_at.is_(None))
        .values(used_at=utcnow()))
    families = await revoke_families(session, user_id=user_id, reason=reason,
                                     except_session_id=except_session_id)
    devices = await forget_devices(session, user_id=user_id)
    await record(session, actor=actor, action="auth.tokens_revoked", object=user_id,
                 after={"families": families, "devices": devices, "reason": reason})
