"""The edge guard: one check of every request's text before any route runs.

Nothing a client sends may reach a route (and so the database) if it contains a NUL
character (PostgreSQL cannot store one in text) or a lone UTF-16 surrogate (``"\\ud800"`` in
JSON: it cannot be encoded as UTF-8, so it would fail on the way into or, worse, out of the
database). The guard looks at the path, the query string, header values, JSON bodies (keys and
values at every depth, metadata included) and forms (urlencoded or multipart: field names,
values and file names), and answers 422 problem+json. A JSON body may nest at most
``MAX_JSON_DEPTH`` objects and arrays deep: a deeper one was accepted (its size well under
the limits), stored as invoice metadata, and then failed every read of it with a 500 (the
answer's serializer stops at a depth), the store's invoice list included (found from
outside).

The guard reads the body as the app will: a request that names its Content-Type,
Content-Length or Transfer-Encoding twice is a 400 (Starlette reads the first of two headers;
a guard reading another one would check a different body than the route parses), and a body
that parses as JSON is checked whatever type it declares (FastAPI reads a body without a type
as JSON, and a route may call ``request.json()`` itself).

It also bounds the body: a ``Content-Length`` above ``max_body_bytes`` is a 413 before a byte
is read; a body without one (chunked) is counted while it streams in and refused with a 413
as soon as it passes the limit. The body it has read is handed on to the app unchanged.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import AsyncGenerator, Iterator
from typing import Any
from urllib.parse import parse_qsl

from python_multipart.multipart import parse_options_header
from starlette.datastructures import Headers
from starlette.formparsers import FormParser, MultiPartException, MultiPartParser
from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from satvault.kernel import strictjson
from satvault.web.problems import lnurl_error, problem

__all__ = ["InputGuard", "bad_text"]

_BAD = re.compile("[\x00\ud800-\udfff]")
MAX_JSON_DEPTH = strictjson.MAX_DEPTH
# The wallet-facing LNURL endpoints (``satvault.web.routes.lnurl``): Lightning Addresses'
# payRequests and callbacks, withdraw links and their callbacks.
_LNURL_PREFIXES = ("/.well-known/lnurlp/", "/lnurlp/", "/lnurlw/")
_METHODS_WITHOUT_BODY = frozenset({"GET", "HEAD", "OPTIONS"})
# How the body is typed and framed: one of each, or the guard and the app may disagree.
_ONCE_ONLY = (b"content-type", b"content-length", b"transfer-encoding")


def bad_text(value: str) -> str | None:
    """Why ``value`` may not enter the system, or None."""
    found = _BAD.search(value)
    if found is None:
        return None
    return "contains a NUL character" if found.group() == "\x00" else \
        "contains a lone UTF-16 surrogate (not valid Unicode)"


def _repeated_header(headers: list[tuple[bytes, bytes]]) -> str | None:
    """The first of the typing and framing headers that ``headers`` carries more than once."""
    names = [name.lower() for name, _ in headers]
    return next((n.decode("latin-1") for n in _ONCE_ONLY if names.count(n) > 1), None)


def _walk(value: Any) -> Iterator[tuple[list[Any], str]]:
    """(location, text) of every string in a parsed JSON document, keys included; iterative,
    so a deeply nested document cannot exhaust the stack."""
    stack: list[tuple[list[Any], Any]] = [([], value)]
    while stack:
        loc, item = stack.pop()
        if isinstance(item, str):
            yield loc, item
        elif isinstance(item, dict):
            for k, v in item.items():
                yield [*loc, k], k
                stack.append(([*loc, k], v))
        elif isinstance(item, list):
            stack.extend(([*loc, i], v) for i, v in enumerate(item))


def _too_deep() -> Any:
    return problem(422, "invalid-request",
                   f"the JSON body nests deeper than {MAX_JSON_DEPTH} objects and arrays",
                   errors=[{"loc": ["body"], "msg": "nests too deep"}])


def _invalid(loc: list[Any], why: str, *, lnurl: bool = False) -> Any:
    """The refusal of a bad character at ``loc``: problem+json, or for a wallet-facing LNURL
    endpoint (``lnurl``) the LNURL way, HTTP 200 ``{"status": "ERROR", "reason": …}``, which
    is all a LUD-01 wallet reads (found from outside: a NUL in a callback's comment got the
    API's 422 problem, which a wallet shows as a failed request, not a reason)."""
    shown = [x if isinstance(x, int) or bad_text(x) is None else x.encode(
        "unicode_escape").decode("ascii") for x in loc]
    detail = f"{'.'.join(map(str, shown))} {why}"
    if lnurl:
        return lnurl_error(detail)
    return problem(422, "invalid-characters", detail, errors=[{"loc": shown, "msg": why}])


def _wallet_facing(path: str) -> bool:
    """Whether ``path`` is one of the LNURL endpoints a Lightning wallet calls (LUD-01
    answers), not the API's."""
    return path.startswith(_LNURL_PREFIXES) or path == "/lnurl-auth/callback"


class InputGuard:
    """Pure ASGI middleware (no BaseHTTPMiddleware: streaming responses pass untouched)."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self._check_target(scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        twice = _repeated_header(scope.get("headers", []))
        if twice is not None:
            await problem(400, "bad-request", f"the request has more than one {twice} header")(
                scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope.get("headers", [])}  # each name once now
        length = headers.get(b"content-length")
        if length is not None:
            if not length.isdigit() or len(length) > 18:
                await problem(400, "bad-request", "Content-Length is not a number")(
                    scope, receive, send)
                return
            if int(length) > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
        if scope["method"] in _METHODS_WITHOUT_BODY and length is None \
                and b"transfer-encoding" not in headers:
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":  # the client left
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refusal = await self._check_body(body, scope)
        if refusal is not None:
            await refusal(scope, receive, send)
            return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # then the real channel: the app hears a disconnect

        await self.app(scope, replay, send)

    async def _too_large(self, scope: Scope, receive: Receive, send: Send) -> None:
        resp = problem(413, "payload-too-large",
                       f"the request body is larger than {self.max_body_bytes} bytes")
        resp.headers["Connection"] = "close"
        await resp(scope, receive, send)

    @staticmethod
    def _check_target(scope: Scope) -> Any:
        path = scope.get("path", "")
        lnurl = _wallet_facing(path)
        why = bad_text(path)
        if why is not None:
            return _invalid(["path"], why, lnurl=lnurl)
        query = scope.get("query_string", b"").decode("latin-1")
        for key, value in parse_qsl(query, keep_blank_values=True):
            for text in (key, value):
                why = bad_text(text)
                if why is not None:
                    return _invalid(["query", key], why, lnurl=lnurl)
        for name, value in scope.get("headers", []):
            if b"\x00" in value:
                return _invalid(["header", name.decode("latin-1")], "contains a NUL character",
                                lnurl=lnurl)
        return None

    async def _check_body(self, body: bytes, scope: Scope) -> Any:
        if not body:
            return None
        bad = await _check_form(body, Headers(scope=scope), self.max_body_bytes)
        if bad is None:
            return _check_json(body)
        name, why = bad
        path = scope.get("path", "")
        pages = getattr(scope["app"].state, "page_errors", None) if "app" in scope else None
        if pages is not None and not path.startswith("/api/") and not _wallet_facing(path):
            # A form of a page: a page saying which field, not the API's problem+json
            # (found from outside: a NUL in a dashboard form's field answered raw JSON).
            return pages(Request(scope), 422, f"The field {name!r} holds a character that "
                         f"cannot be stored ({why.removeprefix('contains ')}). Go back, "
                         "remove it and send the form again. Nothing was changed.")
        return _invalid(["body", name], why)


async def _check_form(body: bytes, headers: Headers, max_bytes: int
                      ) -> tuple[str, str] | None:
    """The form a route would read from ``body``, read the way ``request.form()`` reads it:
    the same header, the same test of its type, Starlette's own parsers (python-multipart)
    with no limit tighter than the body's own. Field names and values are checked, and a
    file's name; a file's bytes are the route's to judge (a binary PSBT holds NUL bytes).
    The first bad field's name and what is wrong with it, or None."""
    kind, _ = parse_options_header(headers.get("content-type"))
    parser: FormParser | MultiPartParser
    if kind == b"multipart/form-data":
        parser = MultiPartParser(headers, _once(body), max_files=math.inf,
                                 max_fields=math.inf, max_part_size=max_bytes)
    elif kind == b"application/x-www-form-urlencoded":
        parser = FormParser(headers, _once(body), max_fields=math.inf, max_part_size=max_bytes)
    else:
        return None
    try:
        form = await parser.parse()
    except MultiPartException:
        return None  # the route's request.form() fails the same way: a 400, no field read
    try:
        for name, value in form.multi_items():
            texts = [name, value] if isinstance(value, str) else [name, value.filename or ""]
            for text in texts:
                why = bad_text(text)
                if why is not None:
                    return name, why
    finally:
        await form.close()
    return None


async def _once(body: bytes) -> AsyncGenerator[bytes, None]:
    yield body


def _check_json(body: bytes) -> Any:
    """A refusal if ``body`` parses as JSON with a bad string in it, or nests too deep,
    whatever its declared type."""
    # Fewer brackets than the depth allowed cannot nest deeper (counting is C-fast).
    deep = body.count(b"{") + body.count(b"[") > MAX_JSON_DEPTH
    if not deep and b"\\u" not in body and b"\x00" not in body:
        # Fast path: without \u escapes and NUL bytes, a strict UTF-8 body cannot hold
        # either character (whether it is valid JSON is then FastAPI's question).
        try:
            body.decode("utf-8")
            return None
        except UnicodeDecodeError:
            pass
    try:
        document = json.loads(body)
    except RecursionError:
        return _too_deep()
    except ValueError:
        return None  # not JSON: no route will read it; FastAPI answers as it always does
    if deep and strictjson.depth(document) > MAX_JSON_DEPTH:
        return _too_deep()
    for loc, text in _walk(document):
        why = bad_text(text)
        if why is not None:
            return _invalid(["body", *loc], why)
    return None
