"""Lightning errors.

::

    LightningError
    ├── InvalidInvoice       not a BOLT11 invoice, or a bad signature
    │   ├── WrongNetwork     an invoice for another network (lnbc vs lntb vs lnbcrt)
    │   ├── InvoiceExpired   past its expiry
    │   ├── InvoiceExpiresSoon  too little of its lifetime left for the node to pay it
    │   └── AmountRequired   an amountless invoice and no amount given (or a mismatch)
    ├── PaymentRefused       over a limit, paying one's own invoice, already paid from here
    │   ├── InvoiceUnderReview  one of our invoices another payment held for review reserved
    │   └── RefusedTooOften  the payer's payments of our invoices were refused too often
    │                        after taking them off the node (internal_refusals_per_day)
    └── LnurlError           an LNURL/Lightning Address service misbehaved or refused
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["AmountRequired", "InvalidInvoice", "InvoiceExpired", "InvoiceExpiresSoon",
           "InvoiceUnderReview", "LightningError", "LnurlError", "PaymentKeyInFlight",
           "PaymentRefused", "PaymentsInFlight", "RefusedTooOften", "WrongNetwork"]


class LightningError(SatvaultError):
    pass


class InvalidInvoice(LightningError):
    pass


class WrongNetwork(InvalidInvoice):
    pass


class InvoiceExpired(InvalidInvoice):
    pass


class InvoiceExpiresSoon(InvalidInvoice):
    pass


class AmountRequired(InvalidInvoice):
    pass


class PaymentRefused(LightningError):
    pass


class InvoiceUnderReview(PaymentRefused):
    def __init__(self) -> None:
        super().__init__("a payment of this invoice is under review")


class RefusedTooOften(PaymentRefused):
    pass


class PaymentsInFlight(PaymentRefused):
    """The person has the most payments of our invoices in flight at once."""

    retry_after = 1


class PaymentKeyInFlight(PaymentRefused):
    """A payment with this caller's Idempotency-Key is taking another invoice off the node."""

    retry_after = 1


class LnurlError(LightningError):
    pass
