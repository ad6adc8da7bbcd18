"""What satvault needs from a Lightning node, as one Protocol and plain value types.

Amounts are integer millisatoshis; payment hashes and preimages are lower-case hex. A payment
is SUCCEEDED, FAILED or IN_FLIGHT as the node reports it; a call that cannot tell (timeout,
lost connection) raises :class:`~satvault.backends.errors.BackendUnavailable`, and the caller
keeps the payment UNKNOWN until a later :meth:`LightningBackend.track_payment` is definite.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol, runtime_checkable

__all__ = [
    "DecodedInvoice",
    "Invoice",
    "InvoiceState",
    "LightningBackend",
    "LightningBalances",
    "NodeInfo",
    "NodePayment",
    "PaymentLister",
    "PaymentResult",
    "PaymentStatus",
]


class InvoiceState(StrEnum):
    OPEN = "open"
    SETTLED = "settled"
    CANCELED = "canceled"
    ACCEPTED = "accepted"  # HTLCs held, not yet settled (hold invoices)


class PaymentStatus(StrEnum):
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    IN_FLIGHT = "in_flight"


@dataclass(frozen=True, slots=True)
class NodeInfo:
    pubkey: str
    alias: str
    network: str  # mainnet, testnet, signet, regtest
    block_height: int
    synced: bool


@dataclass(frozen=True, slots=True)
class Invoice:
    payment_hash: str
    bolt11: str
    amount_msat: int | None
    state: InvoiceState
    paid_msat: int = 0
    add_index: int = 0
    settle_index: int = 0
    preimage: str | None = None


@dataclass(frozen=True, slots=True)
class DecodedInvoice:
    payment_hash: str
    destination: str
    amount_msat: int | None
    description: str
    description_hash: str | None
    timestamp: int
    expiry: int
    network: str
    min_final_cltv_expiry: int = 18


@dataclass(frozen=True, slots=True)
class PaymentResult:
    payment_hash: str
    status: PaymentStatus
    amount_msat: int = 0
    fee_msat: int = 0
    preimage: str | None = None
    failure_reason: str | None = None
    # The node's index of this record (LND's payment index: a new attempt of the hash gets
    # a new one); None where the node gives none.
    index: int | None = None


@dataclass(frozen=True, slots=True)
class NodePayment:
    """One payment the node made (or is making), as its own list has it: ``index`` is the
    node's (LND's payment index, CLN's created index), ascending with time."""

    payment_hash: str
    status: PaymentStatus
    amount_msat: int
    fee_msat: int
    index: int


@dataclass(frozen=True, slots=True)
class LightningBalances:
    channel_local_msat: int
    channel_remote_msat: int
    onchain_sat: int


@runtime_checkable
class LightningBackend(Protocol):
    name: str

    async def get_info(self) -> NodeInfo: ...

    async def create_invoice(self, amount_msat: int | None, *, memo: str = "",
                             hashed_description: str | None = None, expiry: int = 3600,
                             fallback_address: str | None = None) -> Invoice: ...

    async def lookup_invoice(self, payment_hash: str) -> Invoice | None: ...

    async def cancel_invoice(self, payment_hash: str) -> None: ...

    def subscribe_invoices(self, *, add_index: int = 0, settle_index: int = 0
                           ) -> AsyncIterator[Invoice]: ...

    async def pay(self, bolt11: str, *, amount_msat: int | None, fee_limit_msat: int,
                  timeout_seconds: int) -> PaymentResult: ...

    async def track_payment(self, payment_hash: str) -> PaymentResult | None: ...

    async def decode(self, bolt11: str) -> DecodedInvoice: ...

    async def balances(self) -> LightningBalances: ...

    async def close(self) -> None: ...


@runtime_checkable
class PaymentLister(Protocol):
    """A Lightning backend that lists the node's own payments, every one, whoever made it
    (the reconciliation's check that each has its record: :mod:`satvault.reconcile`)."""

    async def list_payments(self, *, after_index: int = 0, limit: int = 1000
                            ) -> list[NodePayment]:
        """The node's payments with an index above ``after_index``, oldest first, at most
        ``limit`` (fewer: the end of the list)."""
        ...
