"""Value types of the Lightning simulator: invoices, payments, channels, scripted outcomes.

Amounts are integer millisatoshis; hashes, preimages and keys are lower-case hex. The network
keeps mutable records internally and hands out copies (``snapshot()``), so a caller never sees
a record change under it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from enum import StrEnum

from satvault.simnet.ln.errors import LnSimError

__all__ = [
    "Channel",
    "ChannelSpec",
    "FailureReason",
    "Hop",
    "Invoice",
    "InvoiceState",
    "NodeBalance",
    "Outcome",
    "Payment",
    "PaymentStatus",
    "parse_outcome",
]


class InvoiceState(StrEnum):
    OPEN = "OPEN"
    SETTLED = "SETTLED"
    CANCELED = "CANCELED"
    ACCEPTED = "ACCEPTED"


class PaymentStatus(StrEnum):
    IN_FLIGHT = "IN_FLIGHT"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"


class FailureReason(StrEnum):
    """LND's ``lnrpc.PaymentFailureReason`` names."""

    NONE = "FAILURE_REASON_NONE"
    TIMEOUT = "FAILURE_REASON_TIMEOUT"
    NO_ROUTE = "FAILURE_REASON_NO_ROUTE"
    ERROR = "FAILURE_REASON_ERROR"
    INCORRECT_PAYMENT_DETAILS = "FAILURE_REASON_INCORRECT_PAYMENT_DETAILS"
    INSUFFICIENT_BALANCE = "FAILURE_REASON_INSUFFICIENT_BALANCE"

    @property
    def short(self) -> str:
        """``no_route`` for ``FAILURE_REASON_NO_ROUTE`` (the scripting vocabulary)."""
        return self.value.removeprefix("FAILURE_REASON_").lower()


_FAILURES = {r.short: r for r in FailureReason if r is not FailureReason.NONE}
# What a lying node falsifies in its report of a payment that did succeed (the money moved):
# a preimage that is not the hash's, a negative fee, ten times the amount.
FORGERIES = ("preimage", "fee", "amount")
OUTCOMES = ("succeed", "in_flight", "hang_then_succeed", *(f"fail:{k}" for k in _FAILURES),
            *(f"forge:{k}" for k in FORGERIES))


@dataclass(frozen=True, slots=True)
class Outcome:
    """How the network settles one payment: ``succeed`` (the natural result: routing,
    liquidity and the receiver's checks decide), ``fail:<reason>``, ``in_flight`` (until
    :meth:`LnNetwork.resolve`), ``hang_then_succeed`` (the sender's stream stalls after
    IN_FLIGHT while the payment succeeds ``delay`` seconds later) or ``forge:<what>`` (it
    succeeds, and the sender's node reports it falsely: :data:`FORGERIES`)."""

    kind: str  # succeed | fail | in_flight | hang_then_succeed | forge
    failure: FailureReason = FailureReason.NONE
    delay: float = 0.0
    forged: str = ""

    @property
    def text(self) -> str:
        if self.kind == "forge":
            return f"forge:{self.forged}"
        return f"fail:{self.failure.short}" if self.kind == "fail" else self.kind


def parse_outcome(text: str, delay: float = 0.0) -> Outcome:
    text = text.strip().lower()
    if delay < 0:
        raise LnSimError(f"delay must be >= 0, not {delay}", kind="invalid_outcome")
    if text in ("succeed", "in_flight", "hang_then_succeed"):
        return Outcome(text, delay=delay)
    if text.startswith("forge:") and text[6:] in FORGERIES:
        return Outcome("forge", delay=delay, forged=text[6:])
    if text.startswith("fail:"):
        reason = text[5:].removeprefix("failure_reason_")
        if reason in _FAILURES:
            return Outcome("fail", _FAILURES[reason], delay)
    raise LnSimError(f"unknown outcome {text!r}; one of {', '.join(OUTCOMES)}",
                     kind="invalid_outcome")


@dataclass(frozen=True, slots=True)
class ChannelSpec:
    a: str
    b: str
    a_msat: int
    b_msat: int


@dataclass(slots=True)
class Channel:
    chan_id: int  # short channel id as LND's uint64
    a: str
    b: str
    balance: dict[str, int]
    pending: dict[str, int] = field(default_factory=dict)  # HTLCs offered by that side

    @property
    def scid(self) -> str:
        return f"{self.chan_id >> 40}x{(self.chan_id >> 16) & 0xFFFFFF}x{self.chan_id & 0xFFFF}"

    @property
    def capacity_msat(self) -> int:
        return sum(self.balance.values()) + sum(self.pending.values())

    def peer(self, node: str) -> str:
        return self.b if node == self.a else self.a


@dataclass(frozen=True, slots=True)
class Hop:
    chan_id: int
    from_node: str
    to_node: str
    amount_msat: int  # what crosses this channel (the next hop's amount + its fee)
    fee_msat: int  # charged by from_node for forwarding (0 for the sender)


@dataclass(slots=True)
class Invoice:
    node: str
    payment_hash: str
    preimage: str
    payment_addr: str
    bolt11: str
    amount_msat: int | None
    memo: str
    description_hash: str | None
    created_at: int
    expiry: int
    cltv_expiry: int
    fallback_addr: str | None
    add_index: int
    label: str
    state: InvoiceState = InvoiceState.OPEN
    settle_index: int = 0
    amt_paid_msat: int = 0
    settled_at: int = 0
    htlc_chan_id: int = 0

    @property
    def expires_at(self) -> int:
        return self.created_at + self.expiry

    def expired(self, now: float) -> bool:
        return self.state is InvoiceState.OPEN and now > self.expires_at

    def snapshot(self) -> Invoice:
        return copy.copy(self)


@dataclass(slots=True)
class Payment:
    sender: str
    payment_hash: str
    bolt11: str
    destination: str  # pubkey hex
    value_msat: int
    created_ns: int
    payment_index: int
    fee_msat: int = 0
    status: PaymentStatus = PaymentStatus.IN_FLIGHT
    failure_reason: FailureReason = FailureReason.NONE
    preimage: str | None = None
    resolved_ns: int = 0
    route: tuple[Hop, ...] = ()
    stalled: bool = False  # hang_then_succeed: the sender's stream gets no more updates
    reserved: bool = False  # the route's HTLCs hold liquidity
    route_failure: FailureReason = FailureReason.NONE  # what routing found at dispatch
    outcome: str = "succeed"
    label: str = ""
    description: str = ""

    @property
    def final(self) -> bool:
        return self.status is not PaymentStatus.IN_FLIGHT

    @property
    def amount_sent_msat(self) -> int:
        return self.value_msat + self.fee_msat

    def snapshot(self) -> Payment:
        return copy.copy(self)


@dataclass(frozen=True, slots=True)
class NodeBalance:
    name: str
    pubkey: str
    local_msat: int
    remote_msat: int
    pending_local_msat: int
    pending_remote_msat: int
    onchain_sat: int
