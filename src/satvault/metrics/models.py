"""The alerts worker's memory: one row per critical condition, whether it holds now and, per
notification channel, which state that channel was last told about. A channel is told once
when a condition starts and once when it ends; a send that failed is tried again at the next
tick; a restart neither repeats nor forgets a notification."""

from __future__ import annotations

import json
from datetime import datetime

from sqlalchemy import Boolean, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from satvault.db import Base, UtcDateTime

__all__ = ["AlertState"]


class AlertState(Base):
    __tablename__ = "alert_states"

    name: Mapped[str] = mapped_column(String(40), primary_key=True)
    firing: Mapped[bool] = mapped_column(Boolean)
    summary: Mapped[str] = mapped_column(Text)
    # When ``firing`` last changed.
    since: Mapped[datetime] = mapped_column(UtcDateTime)
    # JSON: channel → the firing state it was last told about (absent: told nothing yet).
    notified: Mapped[str] = mapped_column(Text, default="{}")
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)

    def told(self) -> dict[str, bool]:
        value = json.loads(self.notified or "{}")
        return {str(k): bool(v) for k, v in value.items()}
