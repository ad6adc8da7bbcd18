"""The API reference pages (/docs: Swagger UI, /redoc: ReDoc), served without a CDN.

FastAPI's default pages load Swagger UI's and ReDoc's JavaScript and CSS from a CDN, so they
stay blank on a machine without internet. The same files ship in the ``fastapi-offline``
package (MIT; Swagger UI and ReDoc keep their own licences, named in the bundles' headers);
they are served from that package under ``/docs-assets``. Nothing else is fetched: Swagger
UI's online validator badge is off, ReDoc loads no web fonts, and both pages carry a
Content-Security-Policy that lets the browser load nothing from another origin (ReDoc's
bundle still points its "API docs by Redocly" logo at a CDN; the policy keeps it from
loading, and ReDoc then hides the image).
"""

from __future__ import annotations

from pathlib import Path

import fastapi_offline
from fastapi import FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

__all__ = ["ASSETS_URL", "CSP", "install_docs"]

ASSETS_URL = "/docs-assets"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"
# The pages boot with an inline script; ReDoc runs its search in a blob: worker.
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' blob:; "
       "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
       "connect-src 'self'; font-src 'self' data:")


def _no_other_origin(page: HTMLResponse) -> HTMLResponse:
    page.headers["Content-Security-Policy"] = CSP
    return page


def install_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Mount the assets and add both pages. The app must be built with ``docs_url=None`` and
    ``redoc_url=None`` (FastAPI's own pages point at the CDN)."""
    openapi_url = app.openapi_url or "/openapi.json"
    oauth2_redirect = f"{docs_url}/oauth2-redirect"
    app.mount(ASSETS_URL, StaticFiles(directory=_ASSETS), name="docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _no_other_origin(get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}", title=f"{app.title} API",
            swagger_js_url=f"{root}{ASSETS_URL}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_URL}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_URL}/favicon.png",
            oauth2_redirect_url=f"{root}{oauth2_redirect}",
            swagger_ui_parameters={"validatorUrl": None}))

    @app.get(oauth2_redirect, include_in_schema=False)
    async def swagger_ui_redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return _no_other_origin(get_redoc_html(
            openapi_url=f"{root}{openapi_url}", title=f"{app.title} API",
            redoc_js_url=f"{root}{ASSETS_URL}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_URL}/favicon.png", with_google_fonts=False))
