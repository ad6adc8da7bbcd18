"""Known devices: browsers and API clients that completed a sign-in (migration 0081).

The account's lockout stops guessing, but it also let anyone keep the owner out: about one
wrong password an hour from anywhere kept the account locked (found from outside). A device
that completed a sign-in gets a token (256 bits, stored as its SHA-256): the dashboard keeps
it in an HTTP-only cookie scoped to ``/login``, an API client sends it back as
``device_token``. A sign-in that presents a live token of the account is not held back by the
account's lock; its own wrong passwords and codes count against, and lock, that device alone
(the same threshold and back-off). Everyone else meets the account's lock as before.

The token is not a credential: it proves nothing and opens nothing, it only says whose
guesses are whose. A user keeps at most :data:`MAX_DEVICES` live ones (the least recently
used is forgotten first); "sign out everywhere", a password change or reset forgets them all.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.auth.credentials import digest, random_token
from satvault.auth.models import KnownDevice
from satvault.kernel.clock import utcnow
from satvault.kernel.ids import new_id

__all__ = ["MAX_DEVICES", "forget_devices", "known_device", "remember_device"]

MAX_DEVICES = 20


async def known_device(session: AsyncSession, *, user_id: str,
                       token: str | None) -> KnownDevice | None:
    """The user's live device with this token, locked for update; None for no token, an
    unknown or forgotten one, or another user's."""
    if not token or len(token) > 200:
        return None
    found = (await session.execute(
        select(KnownDevice).where(KnownDevice.token_hash == digest(token))
        .with_for_update())).scalar_one_or_none()
    if found is None or found.user_id != user_id or found.revoked_at is not None:
        return None
    return found


async def remember_device(session: AsyncSession, *, user_id: str,
                          device: KnownDevice | None) -> str | None:
    """After a completed sign-in: the device it came from marked used (None returned: its
    token stands), or a new one made (its token returned, to hand to the client) and the
    user's least recently used beyond :data:`MAX_DEVICES` forgotten."""
    now = utcnow()
    if device is not None:
        device.last_used_at, device.failures, device.locked_until = now, 0, None
        return None
    token = random_token()
    new = KnownDevice(id=new_id("dev"), user_id=user_id, token_hash=digest(token),
                      created_at=now, last_used_at=now, failures=0)
    session.add(new)
    await session.flush()
    stale = select(KnownDevice.id).where(
        KnownDevice.user_id == user_id, KnownDevice.revoked_at.is_(None),
        KnownDevice.id != new.id) \
        .order_by(KnownDevice.last_used_at.desc(), KnownDevice.created_at.desc()) \
        .offset(MAX_DEVICES - 1)
    ids = list((await session.execute(stale)).scalars())
    if ids:
        await session.execute(update(KnownDevice).where(KnownDevice.id.in_(ids))
                              .values(revoked_at=now))
    return token


async def forget_devices(session: AsyncSession, *, user_id: str) -> int:
    """Every live device of the user forgotten (their next sign-in meets the account's lock);
    how many."""
    result = await session.execute(
        update(KnownDevice).where(KnownDevice.user_id == user_id,
                                  KnownDevice.revoked_at.is_(None))
        .values(revoked_at=utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)
