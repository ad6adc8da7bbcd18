"""Payout errors.

::

    PayoutError
    ├── InvalidWithdrawal   bad destination or amount (not whole sats, dust, over the limit …)
    ├── LimitReachedAtRelease  a held withdrawal released now would break a withdrawal limit
    │                       (it stays held: release it when the window has room, or return it)
    ├── CannotBumpFee       the payout cannot be replaced (already confirmed, no change …)
    ├── PrevTxUnavailable   a coin's previous transaction (its PSBT input's non_witness_utxo)
    │                       is neither in our records nor found by the node: nothing is
    │                       planned or signed this pass
    └── CannotCancel        the withdrawal is no longer pending (batched, broadcast, cancelled …;
                            ``status`` says which): nothing was changed

Destination parsing raises :mod:`satvault.onchain.errors` (``InvalidAddress``,
``WrongNetwork``, ``InvalidPaymentUri``); a lack of funds is the ledger's
``InsufficientFunds``. Nothing is held when any of them is raised.
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["CannotBumpFee", "CannotCancel", "InvalidWithdrawal", "LimitReachedAtRelease",
           "PayoutError", "PrevTxUnavailable"]


class PayoutError(SatvaultError):
    pass


class InvalidWithdrawal(PayoutError):
    pass


class LimitReachedAtRelease(PayoutError):
    """A withdrawal held for approvers or for review that, released now, would take its
    wallet past a withdrawal limit counting what left in the window before the release."""


class CannotBumpFee(PayoutError):
    pass


class PrevTxUnavailable(PayoutError):
    pass


class CannotCancel(PayoutError):
    """Only a ``pending`` withdrawal can be cancelled; this one is in ``status``."""

    def __init__(self, message: str, *, status: str) -> None:
        super().__init__(message)
        self.status = status
