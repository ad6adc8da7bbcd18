"""The shared shape of an HTTP rate source: one GET, a JSON answer, one price inside it.

Subclasses name the request (``_request``) and walk the answer (``_price``); this class owns
the client and turns everything foreign into ``RateError``s:

- no connection, a timeout, HTTP 5xx or 429 → ``SourceUnreachable`` (try the next source);
- any other non-200 → ``BadRateResponse``, unless the subclass knows it means "no such pair"
  (``_status_error``) → ``UnsupportedCurrency``;
- not JSON, a missing key, a price that is not a positive number → ``BadRateResponse``.

``fetched_at`` is our clock at the moment the answer arrived, not the exchange's timestamp
(not every exchange sends one, and one clock keeps the rates comparable).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import httpx

from satvault.kernel.tls import default_context
from satvault.rates.base import Clock, Rate, load_json, normalize_currency, rate_from_price, utc_now
from satvault.rates.errors import BadRateResponse, RateError, SourceUnreachable

__all__ = ["DEFAULT_HEADERS", "DEFAULT_TIMEOUT", "HttpRateSource", "dig"]

DEFAULT_TIMEOUT = 5.0
DEFAULT_HEADERS = {"Accept": "application/json", "User-Agent": "satvault-rates"}


def dig(payload: Any, *path: str | int) -> Any:
    """``payload[path[0]][path[1]]…``, or BadRateResponse naming the path that is missing.
    A str key only indexes an object and an int key only a list, so a price sent as
    ``"67012"`` where ``["67012", "0.1"]`` was expected is refused, not read as ``"6"``."""
    node = payload
    for i, key in enumerate(path):
        where = "".join(f"[{k!r}]" for k in path[: i + 1])
        if isinstance(key, str):
            present = isinstance(node, dict) and key in node
        else:
            present = isinstance(node, list) and -len(node) <= key < len(node)
        if not present:
            raise BadRateResponse(f"answer has no {where}")
        node = node[key]
    return node


class HttpRateSource:
    name: str = "http"
    default_base_url: ClassVar[str] = ""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        client: httpx.AsyncClient | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        clock: Clock = utc_now,
    ) -> None:
        """Give either ``client`` (shared, not closed by ``close``) or ``transport`` (for a
        fake server in tests), or neither. ``timeout`` applies to every request either way."""
        if client is not None and transport is not None:
            raise ValueError("pass a client or a transport, not both")
        url = httpx.URL(base_url or self.default_base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{self.name}: base_url must be an http(s) URL, not {url!s}")
        self._base_url = str(url).rstrip("/")
        self._timeout = timeout
        self._clock = clock
        self._owns_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(
            transport=transport, verify=default_context())

    async def close(self) -> None:
        if self._owns_client:
            await self._client.aclose()

    async def fetch(self, currency: str) -> Rate:
        code = normalize_currency(currency)
        path, params = self._request(code)
        payload = await self._get_json(path, params, code)
        return rate_from_price(code, self._price(payload, code), source=self.name,
                               fetched_at=self._clock())

    # --- to override -----------------------------------------------------------------------
    def _request(self, code: str) -> tuple[str, Mapping[str, str]]:
        raise NotImplementedError

    def _headers(self) -> Mapping[str, str]:
        return DEFAULT_HEADERS

    def _price(self, payload: Any, code: str) -> object:
        raise NotImplementedError

    def _status_error(self, response: httpx.Response, code: str) -> RateError:
        """The error for a 4xx other than 429; sources whose URL names the pair map 404 to
        UnsupportedCurrency."""
        return BadRateResponse(f"HTTP {response.status_code} from {response.request.url}")

    # --- the one request -------------------------------------------------------------------
    async def _get_json(self, path: str, params: Mapping[str, str], code: str) -> Any:
        url = self._base_url + path
        try:
            response = await self._client.get(url, params=params, headers=self._headers(),
                                              timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise SourceUnreachable(f"no answer within {self._timeout}s from {url}") from exc
        except httpx.HTTPError as exc:
            raise SourceUnreachable(f"{type(exc).__name__} from {url}: {exc}") from exc
        status = response.status_code
        if status >= 500 or status == 429:
            raise SourceUnreachable(f"HTTP {status} from {response.request.url}")
        if status != 200:
            raise self._status_error(response, code)
        return load_json(response.content)
