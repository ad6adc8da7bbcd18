"""The one place the rules engine writes audit rows.

Today that is the accounts' ``audit_events`` table; issue 12's hash-chained
``satvault.audit.record`` replaces the body of :func:`audit` when it lands (same arguments).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.service import audit as _write

__all__ = ["audit"]


async def audit(session: AsyncSession, *, actor: str, action: str, subject: str,
                before: Any = None, after: Any = None) -> None:
    """One audit row: who did what to which object, with its state before and after."""
    await _write(session, actor=actor, action=action, subject=subject,
                 details={"before": before, "after": after})
