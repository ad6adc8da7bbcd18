"""The pages' static files, served by satvault (no CDN): this package's ``static/`` folder,
and htmx from the npm install beside the source (``make install``). URLs carry a content hash
(``?v=``), so files are cached for a year and a new release is fetched at once."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import Response

from satvault.kernel.errors import NotFound

__all__ = ["asset_url", "router"]

STATIC_DIR = Path(__file__).parent / "static"
_TYPES = {".css": "text/css", ".js": "text/javascript", ".svg": "image/svg+xml"}
# npm's files, by the name the pages use: (package folder, file inside it).
_VENDOR = {"htmx.min.js": ("htmx.org", "dist/htmx.min.js")}


def _node_modules() -> Path:
    configured = os.environ.get("SATVAULT_NODE_MODULES")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[4] / "node_modules"  # the source checkout's


@dataclass(frozen=True, slots=True)
class _Asset:
    body: bytes
    media_type: str
    version: str


@cache
def _assets() -> dict[str, _Asset]:
    found: dict[str, _Asset] = {}
    paths = [p for p in sorted(STATIC_DIR.iterdir()) if p.is_file()]
    paths += [_node_modules() / package / inside for package, inside in _VENDOR.values()]
    for path in paths:
        media_type = _TYPES.get(path.suffix)
        if media_type and path.is_file():
            body = path.read_bytes()
            found[path.name] = _Asset(body, media_type, hashlib.sha256(body).hexdigest()[:10])
    return found


def asset_url(name: str) -> str | None:
    """The versioned URL of a static file, or None when it is not installed (htmx without
    npm): the layout then leaves the script out and the pages work without it."""
    found = _assets().get(name)
    return None if found is None else f"/static/{name}?v={found.version}"


router = APIRouter(include_in_schema=False)


@router.get("/static/{name}")
async def static_file(name: str) -> Response:
    found = _assets().get(name)
    if found is None:
        raise NotFound(f"no static file {name!r}")
    return Response(found.body, media_type=found.media_type,
                    headers={"Cache-Control": "public, max-age=31536000, immutable",
                             "X-Content-Type-Options": "nosniff"})
