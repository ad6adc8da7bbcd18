"""``GET /metrics``: Prometheus' text format (satvault.metrics). With ``metrics_token`` set a
scraper must send it as ``Authorization: Bearer <token>``; without one the endpoint is open
to whoever reaches the port. Left out of the OpenAPI document: it is for a scraper, not for
API clients."""

from __future__ import annotations

import hmac

from fastapi import APIRouter, Request, Response

from satvault.metrics.exposition import CONTENT_TYPE, render

__all__ = ["router"]

router = APIRouter(tags=["ops"])


def _authorized(request: Request) -> bool:
    token = request.app.state.settings.metrics_token
    if token is None or not token.get_secret_value():
        return True
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        given.strip().encode(), token.get_secret_value().encode())


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    settings = request.app.state.settings
    if not settings.metrics_enabled:
        return Response(status_code=404)
    if not _authorized(request):
        return Response("a bearer token is required\n", status_code=401,
                        media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
    rt = request.app.state.runtime
    body = await render(request.app.state.sessions,
                        backend=rt.backend if rt is not None else None,
                        lightning=rt.lightning if rt is not None else None)
    return Response(body, media_type=CONTENT_TYPE)
