"""Ledger errors.

::

    LedgerError
    ├── TransferRejected            a transfer was refused; ``result`` says why (core.Result)
    │   ├── InvalidTransfer         malformed: amount, ids, timeout, asset mismatch …
    │   │   └── AmountOutOfRange    beyond what the amount columns hold
    │   ├── UnknownAccount          debit/credit account does not exist
    │   ├── InsufficientFunds       exceeds_credits / exceeds_debits / id_already_failed
    │   ├── TransferConflict        same id, different fields (names the field)
    │   └── HoldNotPending          pending transfer missing, already resolved or expired
    ├── AccountNotFound             lookups by id or name
    ├── AccountConflict             an account name exists with other attributes
    └── LedgerInvariantViolation    the database refused what the core allowed: a bug, loudly
"""

from __future__ import annotations

from collections.abc import Sequence

from satvault.kernel.errors import SatvaultError
from satvault.ledger.core import Outcome, Result

__all__ = [
    "AccountConflict",
    "AccountNotFound",
    "AmountOutOfRange",
    "HoldNotPending",
    "InsufficientFunds",
    "InvalidTransfer",
    "LedgerError",
    "LedgerInvariantViolation",
    "TransferConflict",
    "TransferRejected",
    "UnknownAccount",
    "error_for",
    "error_for_batch",
]


class LedgerError(SatvaultError):
    """Base of every ledger error."""


class TransferRejected(LedgerError):
    def __init__(self, transfer_id: str, result: Result, detail: str = "") -> None:
        self.transfer_id = transfer_id
        self.result = result
        self.detail = detail
        text = f"transfer {transfer_id!r} rejected: {result.value}"
        super().__init__(f"{text} ({detail})" if detail else text)


class InvalidTransfer(TransferRejected):
    pass


class AmountOutOfRange(InvalidTransfer):
    pass


class UnknownAccount(TransferRejected):
    pass


class InsufficientFunds(TransferRejected):
    pass


class TransferConflict(TransferRejected):
    @property
    def field(self) -> str:
        return self.result.value.removeprefix("exists_with_different_")


class HoldNotPending(TransferRejected):
    pass


class AccountNotFound(LedgerError):
    pass


class AccountConflict(LedgerError):
    pass


class LedgerInvariantViolation(LedgerError):
    pass


_BY_RESULT: dict[Result, type[TransferRejected]] = {
    Result.AMOUNT_OUT_OF_RANGE: AmountOutOfRange,
    Result.OVERFLOWS_BALANCE: AmountOutOfRange,
    Result.DEBIT_ACCOUNT_NOT_FOUND: UnknownAccount,
    Result.CREDIT_ACCOUNT_NOT_FOUND: UnknownAccount,
    Result.EXCEEDS_CREDITS: InsufficientFunds,
    Result.EXCEEDS_DEBITS: InsufficientFunds,
    Result.ID_ALREADY_FAILED: InsufficientFunds,
    Result.PENDING_TRANSFER_NOT_FOUND: HoldNotPending,
    Result.PENDING_TRANSFER_NOT_PENDING: HoldNotPending,
    Result.PENDING_TRANSFER_ALREADY_POSTED: HoldNotPending,
    Result.PENDING_TRANSFER_ALREADY_VOIDED: HoldNotPending,
    Result.PENDING_TRANSFER_EXPIRED: HoldNotPending,
    Result.PENDING_TRANSFER_NOT_EXPIRED: HoldNotPending,
}


def error_for_batch(outcomes: Sequence[Outcome]) -> TransferRejected | None:
    """The error of a refused batch: its root cause, not a transfer refused only because a
    linked one was (found from outside: a store invoice's payment, linked to its fee, was
    answered ``invalid-transfer`` for the fee's ``linked_event_failed`` instead of
    ``insufficient-funds``). None if every transfer went through."""
    bad = [o for o in outcomes if not o.ok]
    if not bad:
        return None
    causes = [o for o in bad if o.result is not Result.LINKED_EVENT_FAILED]
    return error_for((causes or bad)[0])


def error_for(outcome: Outcome) -> TransferRejected:
    if outcome.result.value.startswith("exists_with_different_"):
        cls: type[TransferRejected] = TransferConflict
    else:
        cls = _BY_RESULT.get(outcome.result, InvalidTransfer)
    return cls(outcome.id, outcome.result, outcome.detail)
