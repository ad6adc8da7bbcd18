"""Errors of the Lightning simulator. The servers translate them into LND's and Core
Lightning's own codes and texts; ``kind`` is the stable name they switch on.

::

    LnSimError
    ├── UnknownNode              no node by that name or pubkey
    ├── InvalidPaymentRequest    not a BOLT #11 string we can read (or write)
    ├── InvoiceError
    │   ├── UnknownInvoice       this node has no invoice with that hash / label
    │   ├── DuplicateInvoice     label or preimage already used
    │   └── InvoiceNotOpen       cancel/delete of an invoice in the wrong state
    ├── PaymentRefused           the sending node refused before any HTLC left it
    │   (kind: already_paid, in_transition, expired, amount_required, self_payment,
    │    wrong_network, invalid_amount)
    └── UnknownPayment           no payment with that hash (or none in flight to resolve)
"""

from __future__ import annotations

__all__ = [
    "DuplicateInvoice",
    "InvalidPaymentRequest",
    "InvoiceError",
    "InvoiceNotOpen",
    "LnSimError",
    "PaymentRefused",
    "UnknownInvoice",
    "UnknownNode",
    "UnknownPayment",
]


class LnSimError(Exception):
    kind = "error"

    def __init__(self, message: str, *, kind: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if kind is not None:
            self.kind = kind


class UnknownNode(LnSimError):
    kind = "unknown_node"


class InvalidPaymentRequest(LnSimError):
    kind = "invalid_request"


class InvoiceError(LnSimError):
    kind = "invoice_error"


class UnknownInvoice(InvoiceError):
    kind = "unknown_invoice"


class DuplicateInvoice(InvoiceError):
    kind = "duplicate_invoice"


class InvoiceNotOpen(InvoiceError):
    kind = "invoice_not_open"


class PaymentRefused(LnSimError):
    kind = "refused"


class UnknownPayment(LnSimError):
    kind = "unknown_payment"
