"""API shapes for webhooks and their delivery log."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field

from satvault.kernel.strictjson import STRICT_BODY, StrictBool, StrictInt

__all__ = ["AttemptOut", "DeliveryOut", "DeliveryPage", "SecretRotatedOut", "SecretRotationIn",
           "WebhookCreatedOut", "WebhookIn", "WebhookOut", "WebhookPatch"]


# A request body is strict (found from outside: ``{"enabled": "yes"}`` enabled a webhook,
# ``"10"``, ``true`` and ``1e3`` were an overlap in seconds, and a ``secret`` on a PATCH
# answered 200 and changed nothing): booleans and integers are JSON's own, as everywhere in
# the API, and a field the body does not have is refused, not ignored.

# An http(s) URL; whether its host may be called (not private, resolvable) is checked later.
_HTTP_URL = r"^[hH][tT][tT][pP][sS]?://"


class WebhookIn(BaseModel):
    model_config = STRICT_BODY

    url: str = Field(max_length=2000, pattern=_HTTP_URL)
    events: list[str] = Field(min_length=1, max_length=30)
    secret: str | None = Field(default=None, min_length=16, max_length=200,
                               description="The HMAC key; generated (whsec_…) if absent.")


class WebhookPatch(BaseModel):
    """What a PATCH may change; the secret changes by rotation only (``rotate-secret``)."""

    model_config = STRICT_BODY

    url: str | None = Field(default=None, max_length=2000)
    events: list[str] | None = Field(default=None, min_length=1, max_length=30)
    enabled: StrictBool | None = None


class WebhookOut(BaseModel):
    id: str
    store_id: str
    url: str
    events: list[str]
    enabled: bool
    created_at: datetime


class WebhookCreatedOut(WebhookOut):
    secret: str = Field(description="Shown once: store it now, it cannot be read again.")


class SecretRotationIn(BaseModel):
    model_config = STRICT_BODY

    overlap_seconds: StrictInt = Field(
        default=86_400, ge=0, le=7 * 86_400,
        description="How long deliveries are signed with the old secret too (0: not at all).")


class SecretRotatedOut(WebhookCreatedOut):
    previous_secret_expires_at: datetime | None = Field(
        description="Until then deliveries carry a v1= under the old secret as well.")


class AttemptOut(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: int
    url: str
    request_headers: dict[str, str]
    status_code: int | None
    response_excerpt: str | None
    error: str | None
    next_attempt_at: datetime | None


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event_id: int
    event_type: str
    status: str
    attempts: int
    next_attempt_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    last_duration_ms: int | None
    request_body: str
    created_at: datetime
    updated_at: datetime
    attempt_log: list[AttemptOut] = []


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_before: int | None = Field(
        description="Pass as ?before= for the next (older) page; null on the last page.")
