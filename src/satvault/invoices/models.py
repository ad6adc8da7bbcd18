"""Store invoices: what was asked (in the invoice's currency and, locked, in msat), how it can
be paid (an on-chain deposit request, one or more Lightning invoices), and where it stands."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Amount, Base, StrEnumType, UtcDateTime
from satvault.invoices.status import Additional, Status

__all__ = ["StoreInvoice"]


class StoreInvoice(Base):
    __tablename__ = "store_invoices"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    store_id: Mapped[str] = mapped_column(ForeignKey("stores.id"), index=True)
    wallet_id: Mapped[str] = mapped_column(ForeignKey("wallets.id"))
    status: Mapped[Status] = mapped_column(StrEnumType(Status, 12))
    additional_status: Mapped[Additional] = mapped_column(StrEnumType(Additional, 16))
    currency: Mapped[str] = mapped_column(String(8))
    amount: Mapped[str] = mapped_column(String(40))  # as asked, a decimal string
    amount_minor: Mapped[int] = mapped_column(Amount)  # in the currency's smallest unit
    due_msat: Mapped[int] = mapped_column(Amount)
    rate_minor_per_btc: Mapped[int | None] = mapped_column(Amount)
    rate_source: Mapped[str | None] = mapped_column(String(200))
    rate_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    order_id: Mapped[str | None] = mapped_column(String(120), index=True)
    metadata_json: Mapped[str] = mapped_column(Text)
    payment_methods: Mapped[str] = mapped_column(String(40))
    speed_policy: Mapped[int] = mapped_column(Integer)
    tolerance_bp: Mapped[int] = mapped_column(Integer)
    redirect_url: Mapped[str | None] = mapped_column(String(2000))
    deposit_id: Mapped[str | None] = mapped_column(ForeignKey("deposit_requests.id"))
    confirmed_msat: Mapped[int] = mapped_column(Amount)
    seen_msat: Mapped[int] = mapped_column(Amount)
    full_seen_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    settled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    # When the clock alone can next change the status (expiry, the end of the monitoring
    # window); None once it cannot. Payments wake the refresher by themselves.
    next_check_at: Mapped[datetime | None] = mapped_column(UtcDateTime, index=True)

    __table_args__ = (UniqueConstraint("deposit_id", name="deposit"),)
