"""What the payer may see of an invoice, and what the page says about it.

The checkout page is public (its URL holds the unguessable invoice id), so it shows only what a
payer needs: amounts, where to pay, the status and the way back to the shop. The merchant's own
fields (order id, metadata, rate source) stay in the authenticated API and in webhooks.

One status document serves the first render and every update (``GET /i/{id}/status``)::

    {"id", "status", "additional_status", "state", "amount_msat", "paid_msat", "seen_msat",
     "due_msat", "confirmations": {"count", "required"} | null, "expires_at", "now",
     "destinations": {"bip21", "address", "onchain_amount_sat", "onchain_uri", "bolt11",
                      "lightning_amount_msat", "lightning_uri", "version"},
     "redirect_url"}

``state`` is the page's reading of ``status`` + ``additional_status`` (one of :data:`STATES`),
and ``review`` while a payment of one of its BOLT11s is held for review (nothing to pay then:
``destinations`` are all null); it is computed here only, and the page's script renders
whatever it says.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.checkout.i18n import N_
from satvault.db import utcnow
from satvault.invoices.models import StoreInvoice
from satvault.invoices.service import check_redirect_url, destinations
from satvault.invoices.status import Additional, Status
from satvault.kernel.errors import InvalidInput
from satvault.onchain.bip21 import make_bip21
from satvault.onchain.models import ChainBlock, OnchainPayment, OnchainPaymentStatus

__all__ = ["FINAL_STATES", "NO_COUNT", "OPEN_STATES", "STATES", "LivePayment", "StateText",
           "live_payment", "public_status", "qr_data", "ui_state"]


@dataclass(frozen=True, slots=True)
class StateText:
    title: str
    detail: str


# Every state the page can show, with its heading and its explanation. ``%(amount)s`` is what
# is still due; ``%(n)s``/``%(total)s`` are the on-chain confirmations.
STATES: dict[str, StateText] = {
    "waiting": StateText(N_("Waiting for payment"),
                         N_("Scan the code with your wallet, or copy the details below.")),
    "partial": StateText(N_("Partly paid"),
                         N_("%(amount)s still due. Pay the rest with the updated code below.")),
    "received": StateText(N_("Payment received"),
                          N_("Waiting for confirmations: %(n)s of %(total)s.")),
    "confirming": StateText(N_("Confirming payment"),
                            N_("Waiting for confirmations: %(n)s of %(total)s.")),
    "review": StateText(
        N_("Payment under review"),
        N_("A payment of this invoice is being reviewed. Please don't send another one: "
           "this page changes once the review is done.")),
    "paid": StateText(N_("Payment complete"), N_("Thank you! Your payment has been received.")),
    "expired": StateText(
        N_("Invoice expired"),
        N_("Please don't send any payment to this invoice. Ask the shop for a new one.")),
    "expired_partial": StateText(
        N_("Invoice expired"),
        N_("It was only partly paid. Please contact the shop about the amount you sent.")),
    "expired_late": StateText(
        N_("Invoice expired"),
        N_("Your payment arrived after it expired. Please contact the shop.")),
    "invalid": StateText(
        N_("Payment not confirmed"),
        N_("The payment was not confirmed in time. Please contact the shop.")),
    # The shop marked the invoice invalid (voided it) by hand.
    "invalid_cancelled": StateText(
        N_("Invoice cancelled"),
        N_("The shop cancelled this invoice. Please don't send any payment to it.")),
    "invalid_cancelled_paid": StateText(
        N_("Invoice cancelled"),
        N_("The shop cancelled this invoice. Please contact the shop about the payment you "
           "sent.")),
}
# Said instead of the confirmation count when there is none to give.
NO_COUNT = N_("Waiting for network confirmation.")
# States in which the payer still has something to pay.
OPEN_STATES = frozenset({"waiting", "partial"})
# States that never change again: the page stops listening. Not ``paid``: an on-chain payment
# a reorg takes away sends a settled invoice back (``invoice.payment_reversed``).
FINAL_STATES = frozenset({"invalid", "invalid_cancelled", "invalid_cancelled_paid"})


def ui_state(status: Status, additional: Additional, confirmations: dict[str, int] | None,
             under_review: bool = False, seen_msat: int = 0) -> str:
    if status == Status.SETTLED:
        return "paid"
    if status == Status.PROCESSING:
        return "confirming" if confirmations and confirmations["count"] > 0 else "received"
    if status == Status.EXPIRED:
        return {Additional.PAID_PARTIAL: "expired_partial",
                Additional.PAID_LATE: "expired_late"}.get(additional, "expired")
    if status == Status.INVALID:
        if additional == Additional.MARKED:  # voided by the shop, not timed out
            return "invalid_cancelled_paid" if seen_msat > 0 else "invalid_cancelled"
        return "invalid"
    if under_review:
        return "review"
    return "partial" if additional == Additional.PAID_PARTIAL else "waiting"


async def _confirmations(session: AsyncSession, inv: StoreInvoice) -> dict[str, int] | None:
    """The least-confirmed on-chain payment of the invoice against what it needs (None when
    nothing arrived on-chain)."""
    if not inv.deposit_id:
        return None
    rows = (await session.execute(
        select(OnchainPayment.block_height, OnchainPayment.required_confirmations)
        .where(OnchainPayment.request_id == inv.deposit_id,
               OnchainPayment.status != OnchainPaymentStatus.CONFLICTED))).all()
    if not rows:
        return None
    tip = (await session.execute(select(func.max(ChainBlock.height)))).scalar_one_or_none()
    counts = [0 if height is None or tip is None or height > tip else tip - height + 1
              for height, _ in rows]
    required = max(max(req for _, req in rows), inv.speed_policy)
    return {"count": min(min(counts), required), "required": required}


@dataclass(frozen=True, slots=True)
class LivePayment:
    """Where and how much to pay now (all None once nothing is due)."""

    bip21: str | None  # unified: bitcoin:ADDR?amount=…&lightning=BOLT11 (or on-chain only)
    address: str | None
    onchain_amount_sat: int | None
    onchain_uri: str | None
    bolt11: str | None
    lightning_amount_msat: int | None
    under_review: bool = False  # a payment held for review: nothing to pay meanwhile

    @property
    def lightning_uri(self) -> str | None:
        return f"lightning:{self.bolt11}" if self.bolt11 else None

    @property
    def version(self) -> str:
        """Changes whenever a QR code would: the page reloads its images only then."""
        text = f"{self.bip21}|{self.onchain_uri}|{self.bolt11}"
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    def as_dict(self) -> dict[str, Any]:
        return {"bip21": self.bip21, "address": self.address,
                "onchain_amount_sat": self.onchain_amount_sat, "onchain_uri": self.onchain_uri,
                "bolt11": self.bolt11, "lightning_amount_msat": self.lightning_amount_msat,
                "lightning_uri": self.lightning_uri, "version": self.version}


async def live_payment(session: AsyncSession, inv: StoreInvoice) -> LivePayment:
    if inv.status != Status.NEW:
        return LivePayment(None, None, None, None, None, None)
    d = await destinations(session, inv)
    onchain_uri = make_bip21(d.address, amount_sat=d.onchain_due_sat,
                             label=f"Invoice {inv.id}") if d.address and d.onchain_due_sat \
        else None
    # Without an address (a Lightning-only invoice) the one code is the BOLT11 itself.
    unified = d.bip21 or (f"lightning:{d.bolt11}" if d.bolt11 else None)
    return LivePayment(unified, d.address, d.onchain_due_sat, onchain_uri, d.bolt11,
                       d.lightning_due_msat, d.under_review)


def qr_data(pay: LivePayment, kind: str) -> str | None:
    """What the QR code of ``kind`` (unified, onchain, lightning) encodes."""
    if kind == "unified":
        if pay.bip21 and not pay.address and pay.bolt11:  # Lightning only
            return f"LIGHTNING:{pay.bolt11.upper()}"
        return pay.bip21
    if kind == "onchain":
        return pay.onchain_uri
    if kind == "lightning" and pay.bolt11:
        # Upper case lets the QR code use its denser alphanumeric mode; BOLT11 allows it.
        return f"LIGHTNING:{pay.bolt11.upper()}"
    return None


async def public_status(session: AsyncSession, inv: StoreInvoice) -> dict[str, Any]:
    confirmations = await _confirmations(session, inv) if inv.status == Status.PROCESSING else None
    pay = await live_payment(session, inv)
    return {
        "id": inv.id, "status": inv.status, "additional_status": inv.additional_status,
        "state": ui_state(inv.status, inv.additional_status, confirmations,
                          pay.under_review, inv.seen_msat),
        "amount_msat": inv.due_msat, "paid_msat": inv.confirmed_msat,
        "seen_msat": inv.seen_msat, "due_msat": max(0, inv.due_msat - inv.seen_msat),
        "confirmations": confirmations,
        "expires_at": inv.expires_at.isoformat(), "now": utcnow().isoformat(),
        "destinations": pay.as_dict(), "redirect_url": _way_back(inv.redirect_url),
    }


def _way_back(url: str | None) -> str | None:
    """The redirect URL, unless it is one creation refuses now (found from outside:
    credentials before the host, a link that reads as the shop's and leads elsewhere): an
    invoice stored before that check shows no way back rather than that link."""
    if not url:
        return None
    try:
        check_redirect_url(url)
    except InvalidInput:
        return None
    return url
