"""The one place the withdrawal policy writes its audit rows: rows of the hash-chained audit
log (``satvault.audit``)."""

from __future__ import annotations

from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.audit.service import record as audit_record

__all__ = ["record"]


async def record(session: AsyncSession, *, actor: str, action: str, subject: str,
                 details: dict[str, Any] | None = None) -> None:
    """One audit row in the caller's unit of work: ``actor`` (a user id, ``system`` for the
    expiry), ``action`` (``withdrawal_policy.*``, ``withdrawal.*``, ``allowlist.*``),
    ``subject`` (what it is about)."""
    await audit_record(session, actor=actor, action=action, object=subject, after=details)
