"""The one place the withdrawal policy writes its audit rows, so the hash-chained audit log
(issue 12 §6) replaces one function, not every call site."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.service import audit

__all__ = ["record"]


async def record(session: AsyncSession, *, actor: str, action: str, subject: str,
                 details: dict[str, Any] | None = None) -> None:
    """One audit row in the caller's unit of work: ``actor`` (a user id, ``system`` for the
    expiry), ``action`` (``withdrawal_policy.*``, ``withdrawal.*``, ``allowlist.*``),
    ``subject`` (what it is about)."""
    await audit(session, actor=actor, action=action, subject=subject, details=details)
