"""The one place the rules engine writes audit rows: rows of the hash-chained audit log
(``satvault.audit``), with the object's state before and after."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record

__all__ = ["audit"]


async def audit(session: AsyncSession, *, actor: str, action: str, subject: str,
                before: Any = None, after: Any = None) -> None:
    """One audit row: who did what to which object, with its state before and after."""
    await record(session, actor=actor, action=action, object=subject, before=before,
                 after=after)
