"""Server-side web sessions: the dashboard's and admin console's sign-in state.

The browser holds only an opaque random token in an HTTP-only cookie; the database holds its
SHA-256, so a read of the table (a backup, a replica) yields no usable session. A session is
usable while it is neither expired (absolute lifetime from sign-in, and idle timeout since
last seen) nor revoked; revocation is a row update, seen by every process at once.

Each session carries its own CSRF secret: forms post it back and :func:`csrf_matches`
compares in constant time (the synchroniser-token pattern, bound to the session, so a token
from one session is worthless in another). ``mfa_at`` records when the second factor was
passed in this session, ``stepped_up_at`` when the user last re-proved a factor for a money
action (see :func:`stepped_up_until`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ForeignKey, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from satvault.accounts.models import User, UserStatus
from satvault.audit import record
from satvault.db import Base, UtcDateTime
from satvault.kernel.clock import utcnow
from satvault.kernel.errors import NotFound
from satvault.kernel.ids import new_id

__all__ = ["ABSOLUTE_LIFETIME", "IDLE_TIMEOUT", "STEP_UP_WINDOW", "SessionView", "WebSession",
           "csrf_matches", "list_sessions", "mark_mfa", "mark_stepped_up", "resolve_session",
           "revoke_all_sessions", "revoke_session", "start_session", "stepped_up_until"]

ABSOLUTE_LIFETIME = timedelta(hours=12)
IDLE_TIMEOUT = timedelta(hours=2)
STEP_UP_WINDOW = timedelta(minutes=5)
# last_seen_at is written at most this often: a write per page view would serialise reads
# on SQLite and is not needed for an idle timeout measured in hours.
_TOUCH_EVERY = timedelta(minutes=1)


class WebSession(Base):
    __tablename__ = "web_sessions"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_secret: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    revoked_reason: Mapped[str | None] = mapped_column(String(200), default=None)
    user_agent: Mapped[str] = mapped_column(String(300), default="")
    ip: Mapped[str] = mapped_column(String(64), default="")
    mfa_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)
    stepped_up_at: Mapped[datetime | None] = mapped_column(UtcDateTime, default=None)


@dataclass(frozen=True, slots=True)
class SessionView:
    """What a page needs to know about the signed-in user; no secret but the CSRF token,
    which the page embeds in its own forms."""

    id: str
    user_id: str
    email: str
    display_name: str
    is_admin: bool
    locale: str | None
    csrf_token: str
    mfa_verified: bool
    stepped_up_until: datetime | None
    created_at: datetime
    expires_at: datetime


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def stepped_up_until(stepped_up_at: datetime | None) -> datetime | None:
    return None if stepped_up_at is None else stepped_up_at + STEP_UP_WINDOW


def csrf_matches(view: SessionView, token: str | None) -> bool:
    return bool(token) and hmac.compare_digest(view.csrf_token.encode(),
                                               (token or "").encode())


async def start_session(session: AsyncSession, *, user_id: str, user_agent: str = "",
                        ip: str = "", mfa: bool = False) -> tuple[WebSession, str]:
    """A new session for a user who has just proved who they are; the token is returned
    once, for the cookie. A new id on every sign-in: a session id planted before sign-in
    (fixation) is never promoted."""
    now = utcnow()
    token = secrets.token_urlsafe(32)
    row = WebSession(id=new_id("ses"), user_id=user_id, token_hash=_hash(token),
                     csrf_secret=secrets.token_urlsafe(32), created_at=now, last_seen_at=now,
                     expires_at=now + ABSOLUTE_LIFETIME, user_agent=user_agent[:300],
                     ip=ip[:64], mfa_at=now if mfa else None)
    session.add(row)
    await session.flush()
    await record(session, actor=user_id, action="auth.session.start", object=row.id,
                 after={"ip": row.ip, "user_agent": row.user_agent, "mfa": mfa})
    return row, token


async def resolve_session(session: AsyncSession, token: str | None) -> SessionView | None:
    """The live session behind a cookie's token, or None (unknown, expired, idle too long,
    revoked, or its user suspended)."""
    if not token or len(token) > 200:
        return None
    found = (await session.execute(
        select(WebSession, User).join(User, User.id == WebSession.user_id)
        .where(WebSession.token_hash == _hash(token))
    )).first()
    if found is None:
        return None
    row, user = found
    now = utcnow()
    if (row.revoked_at is not None or row.expires_at <= now
            or row.last_seen_at + IDLE_TIMEOUT <= now or user.status != UserStatus.ACTIVE):
        return None
    if now - row.last_seen_at >= _TOUCH_EVERY:
        await session.execute(update(WebSession).where(WebSession.id == row.id)
                              .values(last_seen_at=now))
    return SessionView(
        id=row.id, user_id=user.id, email=user.email, display_name=user.display_name,
        is_admin=user.is_admin, locale=getattr(user, "locale", None),
        csrf_token=row.csrf_secret, mfa_verified=row.mfa_at is not None,
        stepped_up_until=stepped_up_until(row.stepped_up_at), created_at=row.created_at,
        expires_at=row.expires_at)


async def _live(session: AsyncSession, session_id: str) -> WebSession:
    row = await session.get(WebSession, session_id, with_for_update=True)
    if row is None or row.revoked_at is not None:
        raise NotFound(f"session {session_id!r} not found")
    return row


async def mark_mfa(session: AsyncSession, *, session_id: str) -> None:
    row = await _live(session, session_id)
    row.mfa_at = utcnow()
    await session.flush()


async def mark_stepped_up(session: AsyncSession, *, session_id: str) -> datetime:
    """Records a re-proved factor; money actions are allowed until the returned time."""
    row = await _live(session, session_id)
    row.stepped_up_at = utcnow()
    await session.flush()
    await record(session, actor=row.user_id, action="auth.step_up", object=row.id)
    until = stepped_up_until(row.stepped_up_at)
    assert until is not None
    return until


async def revoke_session(session: AsyncSession, *, user_id: str, session_id: str,
                         actor: str, reason: str = "signed out") -> None:
    """Ends one of ``user_id``'s sessions; another user's session id is not found."""
    row = await session.get(WebSession, session_id, with_for_update=True)
    if row is None or row.user_id != user_id:
        raise NotFound(f"session {session_id!r} not found")
    if row.revoked_at is not None:
        return
    row.revoked_at, row.revoked_reason = utcnow(), reason[:200]
    await session.flush()
    await record(session, actor=actor, action="auth.session.revoke", object=row.id,
                 after={"user_id": user_id, "reason": row.revoked_reason})


async def revoke_all_sessions(session: AsyncSession, *, user_id: str,
                              except_session_id: str | None = None, actor: str,
                              reason: str = "signed out everywhere") -> int:
    """Ends every live session of a user but ``except_session_id``; how many ended."""
    stmt = (update(WebSession)
            .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None))
            .values(revoked_at=utcnow(), revoked_reason=reason[:200]))
    if except_session_id is not None:
        stmt = stmt.where(WebSession.id != except_session_id)
    ended = int((await session.execute(stmt)).rowcount or 0)  # type: ignore[attr-defined]
    await record(session, actor=actor, action="auth.session.revoke_all", object=user_id,
                 after={"ended": ended, "kept": except_session_id, "reason": reason[:200]})
    return ended


async def list_sessions(session: AsyncSession, *, user_id: str) -> list[WebSession]:
    """A user's live sessions, newest first."""
    now = utcnow()
    return list((await session.execute(
        select(WebSession).where(WebSession.user_id == user_id,
                                 WebSession.revoked_at.is_(None),
                                 WebSession.expires_at > now)
        .order_by(WebSession.created_at.desc(), func.length(WebSession.id))
    )).scalars())
