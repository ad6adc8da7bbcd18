"""Times every HTTP request into ``satvault_http_request_duration_seconds`` (satvault.telemetry),
labelled with the matched route's template (``/api/v1/invoices/{invoice_id}``), never the raw
path, so an id in a URL does not make a new series; requests no route matched share
``unmatched``. The method label is one of the methods HTTP defines for the API, or
``other``: any token is a method to HTTP/1.1, and a label taken as sent would let every
client add series at will."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from satvault.telemetry import HTTP_SECONDS

__all__ = ["HttpMetrics"]

METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class HttpMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, sending)
        finally:
            route: Any = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "")
            HTTP_SECONDS.labels(method if method in METHODS else "other", template,
                                f"{status // 100}xx").observe(time.perf_counter() - started)
