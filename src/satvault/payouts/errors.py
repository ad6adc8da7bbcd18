"""Payout errors.

::

    PayoutError
    ├── InvalidWithdrawal   bad destination or amount (not whole sats, dust, over the limit …)
    └── CannotBumpFee       the payout cannot be replaced (already confirmed, no change …)

Destination parsing raises :mod:`satvault.onchain.errors` (``InvalidAddress``,
``WrongNetwork``, ``InvalidPaymentUri``); a lack of funds is the ledger's
``InsufficientFunds``. Nothing is held when any of them is raised.
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["CannotBumpFee", "InvalidWithdrawal", "PayoutError"]


class PayoutError(SatvaultError):
    pass


class InvalidWithdrawal(PayoutError):
    pass


class CannotBumpFee(PayoutError):
    pass
