"""The invoice as the API, webhooks and the checkout page show it (one shape for all three)."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from sqlalchemy.ext.asyncio import AsyncSession

from satvault.invoices.models import StoreInvoice
from satvault.kernel import strictjson

if TYPE_CHECKING:
    from satvault.invoices.service import Destinations

__all__ = ["invoice_payload"]


def _metadata(stored: str) -> Any:
    """The stored metadata. Invoices created before the edge guard may hold a lone surrogate
    (stored as a ``\\ud800`` escape); it is shown as U+FFFD so the invoice stays readable.
    They may also nest deeper than the guard allows (the answer's serializer stops at a
    depth: every read was a 500); what lies below the depth is shown as its JSON text."""
    value = json.loads(stored)
    if stored.count("{") + stored.count("[") > strictjson.MAX_DEPTH:  # else it cannot be
        value = strictjson.clip(value)
    text = json.dumps(value, ensure_ascii=False)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        value = json.loads(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))
    return value


async def invoice_payload(session: AsyncSession, inv: StoreInvoice,
                          public_url: str = "", *, known: Destinations | None = None
                          ) -> dict[str, Any]:
    from satvault.invoices.service import destinations

    d = known or await destinations(session, inv)
    methods = inv.payment_methods.split(",")
    return {
        "id": inv.id, "store_id": inv.store_id, "status": inv.status,
        "additional_status": inv.additional_status, "currency": inv.currency,
        "amount": inv.amount, "amount_msat": inv.due_msat,
        "rate": None if inv.rate_minor_per_btc is None else {
            "minor_units_per_btc": inv.rate_minor_per_btc, "source": inv.rate_source,
            "at": inv.rate_at.isoformat() if inv.rate_at else None},
        "order_id": inv.order_id, "metadata": _metadata(inv.metadata_json),
        "payment_methods": {
            "onchain": {"address": d.address, "amount_sat": d.onchain_due_sat,
                        "bip21": d.bip21} if "onchain" in methods else None,
            "lightning": {"bolt11": d.bolt11, "amount_msat": d.lightning_due_msat}
            if "lightning" in methods else None,
        },
        "payment_under_review": d.under_review,
        "paid_msat": inv.confirmed_msat, "seen_msat": inv.seen_msat,
        "due_msat": max(0, inv.due_msat - inv.seen_msat),
        "speed_policy": inv.speed_policy, "payment_tolerance_bp": inv.tolerance_bp,
        "redirect_url": inv.redirect_url, "checkout_url": f"{public_url}/i/{inv.id}",
        "expires_at": inv.expires_at.isoformat(), "created_at": inv.created_at.isoformat(),
        "updated_at": inv.updated_at.isoformat(),
        "settled_at": inv.settled_at.isoformat() if inv.settled_at else None,
    }
