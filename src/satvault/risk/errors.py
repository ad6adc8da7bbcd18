"""Risk errors.

::

    RiskError
    ├── RiskRejected       the rules engine rejected the payment (names the decision; 403)
    ├── RuleSetRefused     a rule-set change not allowed (own approval, not a draft …; 409)
    ├── CaseRefused        a case action its state does not allow (closed, wrong step,
                           a different decision on a decided case, a filed SAR …; 409)
    └── FrozenDepositRefused  a frozen deposit's decision not possible now (reversed …; 409)

A rule set that does not validate is the kernel's ``InvalidInput`` (422).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.kernel.errors import Forbidden, SatvaultError

__all__ = ["CaseRefused", "FrozenDepositRefused", "RiskError", "RiskRejected",
           "RuleSetRefused"]


class RiskError(SatvaultError):
    pass


class RiskRejected(RiskError, Forbidden):
    """Raised inside the unit of work, which then rolls back; the decision and its case are
    written by ``record_after_rollback`` in the transaction that records the refusal (the web
    edge's idempotency record does; a caller without one can call it itself)."""

    def __init__(self, message: str, *, decision_id: str, case_id: str,
                 record: Callable[[AsyncSession], Awaitable[None]]) -> None:
        super().__init__(message)
        self.decision_id = decision_id
        self.case_id = case_id
        self.record_after_rollback = record


class RuleSetRefused(RiskError):
    pass


class CaseRefused(RiskError):
    pass


class DeciderIsSubject(RiskError, Forbidden):
    """An admin deciding a case about money of their own (their wallet, or their
    merchant's): another admin decides it."""


class FrozenDepositRefused(RiskError):
    pass
