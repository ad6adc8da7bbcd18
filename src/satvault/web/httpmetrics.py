"""Times every HTTP request into ``satvault_http_request_duration_seconds`` (satvault.telemetry),
labelled with the matched route's template (``/api/v1/invoices/{invoice_id}``), never the raw
path, so an id in a URL does not make a new series; requests no route matched share
``unmatched``."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from satvault.telemetry import HTTP_SECONDS

__all__ = ["HttpMetrics"]


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
            HTTP_SECONDS.labels(scope.get("method", ""), template,
                                f"{status // 100}xx").observe(time.perf_counter() - started)
