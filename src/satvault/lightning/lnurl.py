"""Paying LNURL-pay links and Lightning Addresses: from what a user pasted to a checked invoice.

A destination is one of

* a bech32 ``LNURL1…`` string, either case, optionally behind ``lightning:`` (LUD-01), or an
  ``https://…?lightning=LNURL1…`` fallback link;
* a LUD-17 URL: ``lnurlp://host/path`` means ``https://host/path`` (also ``lnurlw``,
  ``lnurlc``, ``keyauth``: they are LNURLs, though only a payRequest can be paid);
* a Lightning Address ``name@domain`` (LUD-16): ``https://domain/.well-known/lnurlp/name``.

:func:`resolve_pay_request` fetches the payRequest (LUD-06), checks the amount against
``minSendable``/``maxSendable`` and the comment against ``commentAllowed`` (LUD-12), calls the
callback, and accepts the returned invoice only if it is a valid BOLT11 for exactly the amount
asked and its ``description_hash`` is the SHA-256 of the metadata string; an unsupported
``successAction`` stops it too (LUD-09). Any refusal is a :class:`LnurlError` raised before a
single msat moves.

Whoever gives us a destination chooses the server we call, so every request is guarded
against server-side request forgery: unless ``allow_private_hosts`` (development, tests) the
host must resolve only to public addresses, and the connection goes to the address that was
checked (the ``Host`` header and TLS SNI keep the name), so a DNS answer that changes between
the check and the connection cannot point us inside. Redirects are never followed; each
exchange has a deadline and a response-size cap. Status codes mean nothing in LNURL (LUD-01):
the body decides, and ``{"status": "ERROR", "reason": …}`` becomes an :class:`LnurlError`.
"""

from __future__ import annotations

import asyncio
import hashlib
import ipaddress
import re
from dataclasses import dataclass
from typing import Any

import httpx
import lnurl as lnurl_lib

from satvault.kernel import strictjson
from satvault.kernel.dns import InvalidHostName, resolve_addresses
from satvault.kernel.netguard import refusal
from satvault.lightning.bolt11check import decode
from satvault.lightning.errors import InvalidInvoice, LnurlError
from satvault.logs import get_logger

__all__ = [
    "LnurlPayResult",
    "decode_lnurl",
    "encode_lnurl",
    "is_lnurl_destination",
    "pay_link_forms",
    "resolve_pay_request",
]

log = get_logger(__name__)
MAX_RESPONSE_BYTES = 256 * 1024  # a payRequest may carry a ~136 kB base64 image (LUD-06)
REQUEST_TIMEOUT = httpx.Timeout(5.0, connect=3.0)
EXCHANGE_DEADLINE = 10.0  # seconds for one whole request, however slowly the body drips
MAX_SUCCESS_TEXT = 144  # LUD-09
_LUD17 = ("lnurlp", "lnurlw", "lnurlc", "keyauth")
_ADDRESS = re.compile(r"(?P<user>[a-z0-9._+-]+)@(?P<host>[a-z0-9.-]+)(?::(?P<port>\d{1,5}))?")
_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")
# Names that only ever mean "this machine or this network"; used to pick http in development.
_LOCAL_SUFFIXES = (".localhost", ".local", ".test", ".internal", ".lan", ".home.arpa")


@dataclass(frozen=True, slots=True)
class LnurlPayResult:
    """A checked invoice from an LNURL-pay service, ready to be paid."""

    bolt11: str
    success_action: dict[str, Any] | None
    metadata: str
    min_msat: int
    max_msat: int
    description: str = ""  # the metadata's text/plain entry, for display
    # The Lightning Addresses the metadata names (``text/identifier``, ``text/email``:
    # LUD-16), lower-cased: the risk lists screen them like the destination.
    identifiers: tuple[str, ...] = ()


# ------------------------------------------------------------------------ parsing destinations

def encode_lnurl(url: str) -> str:
    """The upper-case bech32 LNURL of a URL (LUD-01: upper case suits QR codes)."""
    return lnurl_lib.url_encode(url)


def decode_lnurl(text: str) -> str:
    """The URL inside a bech32 LNURL (``lightning:`` prefix and either case accepted)."""
    raw = _strip_lightning(text.strip())
    try:
        return lnurl_lib.url_decode(raw)
    except Exception as exc:  # the library raises ValueError, InvalidLnurl or AssertionError
        raise LnurlError("not a valid bech32 LNURL") from exc


def _strip_lightning(text: str) -> str:
    if text.lower().startswith("lightning:"):
        text = text[len("lightning:"):]
        if text.startswith("//"):
            text = text[2:]
    return text


_WELL_KNOWN = re.compile(r"/\.well-known/lnurlp/([a-z0-9._+-]+)")


def pay_link_forms(destination: str) -> frozenset[str]:
    """Every lower-case form that names the same LNURL-pay service as ``destination``, a
    Lightning Address, bech32 LNURL, LUD-17 ``lnurlp://`` link or LUD-01 fallback
    ``https://…?lightning=LNURL1…`` link: the LNURL it carries, the LNURL of the URL it opens
    (over https and http), and ``name@host`` when that URL is a Lightning Address's. Empty for
    anything else. Pure, no network: what a list naming the service in one form must also
    match (found from outside: a listed ``bob@host`` was paid as
    ``lnurlp://host/.well-known/lnurlp/bob``, a listed LNURL inside a fallback link).

    The URL is also taken with its path normalised (repeated slashes collapsed, a trailing
    one dropped), and a Lightning Address's without its LUD-16 ``+tag`` and query: servers
    answer those variants as the plain address (found from outside: a listed ``bob@host``
    was paid as ``bob+x@host``, ``…/lnurlp/bob/``, ``…//.well-known/lnurlp/bob`` and
    ``…/lnurlp/bob?x=1``)."""
    try:
        url = _first_url(destination, allow_private_hosts=True)
    except LnurlError:
        return frozenset()
    path = re.sub("/{2,}", "/", url.path)
    if len(path) > 1:
        path = path.rstrip("/")
    query = b"?" + url.query if url.query else b""
    urls = {url, url.copy_with(raw_path=path.encode("utf-8") + query)}
    forms: set[str] = set()
    name = _WELL_KNOWN.fullmatch(path.lower())
    if name is not None:
        user = name[1].split("+", 1)[0]
        urls.add(url.copy_with(raw_path=f"/.well-known/lnurlp/{user}".encode()))
        port = f":{url.port}" if url.port is not None else ""
        forms.add(f"{user}@{url.host.lower()}{port}")
    forms |= {encode_lnurl(str(u.copy_with(scheme=scheme))).lower()
              for u in urls for scheme in ("https", "http")}
    raw = _strip_lightning(destination.strip())
    inner = raw if raw.lower().startswith("lnurl1") else None
    if inner is None and raw.partition("://")[0].lower() in ("https", "http"):
        inner = httpx.URL(raw).params.get("lightning")  # parsed by _first_url already
    if inner:
        forms.add(inner.lower())
    return frozenset(forms)


def _valid_hostname(host: str) -> bool:
    return 0 < len(host) <= 253 and all(_LABEL.fullmatch(p) for p in host.split("."))


def _is_local_name(host: str) -> bool:
    """A name that can only be local (used in development to choose http over https)."""
    try:
        return not ipaddress.ip_address(host).is_global
    except ValueError:
        return host == "localhost" or "." not in host or host.endswith(_LOCAL_SUFFIXES)


def _first_url(text: str, *, allow_private_hosts: bool) -> httpx.URL:
    """The URL to GET first for a destination, or :class:`LnurlError`."""
    raw = _strip_lightning(text.strip())
    low = raw.lower()
    if low.startswith("lnurl1"):
        return _checked_url(decode_lnurl(raw), allow_private_hosts=allow_private_hosts)
    scheme, sep, rest = raw.partition("://")
    if sep and scheme.lower() in _LUD17:
        # LUD-17: https for clearnet; http only for a local name while private hosts are allowed.
        try:
            host = httpx.URL(f"https://{rest}").host
        except httpx.InvalidURL as exc:
            raise LnurlError(f"not a valid {scheme.lower()}:// URL") from exc
        plain = allow_private_hosts and _is_local_name(host)
        return _checked_url(f"{'http' if plain else 'https'}://{rest}",
                            allow_private_hosts=allow_private_hosts)
    if sep and scheme.lower() in ("https", "http"):
        # LUD-01 fallback scheme: the LNURL rides in a ``lightning`` query parameter.
        try:
            inner = httpx.URL(raw).params.get("lightning")
        except httpx.InvalidURL as exc:
            raise LnurlError("not a valid URL") from exc
        if inner and inner.lower().startswith("lnurl1"):
            return _checked_url(decode_lnurl(inner), allow_private_hosts=allow_private_hosts)
        raise LnurlError("a web link is not an LNURL unless it carries lightning=LNURL1…")
    if "@" in raw and not sep:
        return _address_url(low, allow_private_hosts=allow_private_hosts)
    raise LnurlError("not an LNURL, lnurlp:// link or Lightning Address")


def _address_url(address: str, *, allow_private_hosts: bool) -> httpx.URL:
    m = _ADDRESS.fullmatch(address)
    if m is None or not _valid_hostname(m["host"]):
        raise LnurlError(f"{address!r} is not a Lightning Address (name@domain, the name "
                         "made of a-z 0-9 - _ .)")
    host, port = m["host"], m["port"]
    if port and not allow_private_hosts:
        raise LnurlError("a Lightning Address has no port")
    plain = allow_private_hosts and _is_local_name(host)
    netloc = f"{host}:{port}" if port else host
    return _checked_url(f"{'http' if plain else 'https'}://{netloc}/.well-known/lnurlp/"
                        f"{m['user']}", allow_private_hosts=allow_private_hosts)


def _checked_url(url: str | httpx.URL, *, allow_private_hosts: bool) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError) as exc:
        raise LnurlError("the LNURL does not contain a valid URL") from exc
    if parsed.scheme not in ("https", "http") or not parsed.host:
        raise LnurlError("an LNURL must point to an https:// URL")
    if parsed.scheme == "http" and not allow_private_hosts:
        raise LnurlError("an LNURL must use https:// (plain http is only for onion services, "
                         "which this platform does not reach)")
    if parsed.host.endswith(".onion"):
        raise LnurlError("onion services are not supported")
    if parsed.userinfo:
        raise LnurlError("an LNURL must not carry credentials")
    return parsed


def is_lnurl_destination(text: str) -> bool:
    """True for anything :func:`resolve_pay_request` would try to resolve."""
    try:
        _first_url(text, allow_private_hosts=True)
    except LnurlError:
        return False
    return True


# ------------------------------------------------------------------------------- guarded HTTP

async def _resolve_host(host: str, port: int) -> list[str]:
    """Every address the name resolves to (a seam: tests replace it)."""
    return await resolve_addresses(host, port)


async def _public_address(host: str, port: int) -> str:
    """The first address ``host`` resolves to, if every one is public
    (:func:`satvault.kernel.netguard.refusal`). A name that does not resolve, has no address
    or a non-public one gets one refusal, so that a payer cannot map our internal DNS by the
    difference; the operator's log says which."""
    try:
        addresses = await _resolve_host(host, port)
    except InvalidHostName as exc:
        raise LnurlError(str(exc)) from exc
    except OSError as exc:
        why = f"cannot resolve: {exc}"
    else:
        refused = [(a, r) for a in addresses if (r := refusal(a)) is not None]
        if addresses and not refused:
            return addresses[0]
        why = "no address" if not addresses else f"{refused[0][0]}: {refused[0][1]}"
    log.info("lnurl_host_refused", host=host, why=why)
    raise LnurlError(f"{host} does not resolve to a public address; refusing to call it")


async def _get_json(http: httpx.AsyncClient, url: httpx.URL, *,
                    allow_private_hosts: bool) -> dict[str, Any]:
    url = _checked_url(url, allow_private_hosts=allow_private_hosts)
    host = url.host
    target, headers = url, {"Accept": "application/json"}
    extensions: dict[str, Any] = {}
    if not allow_private_hosts:
        # Connect to the address we checked, not to whatever a second lookup would say.
        target = url.copy_with(host=await _public_address(host, url.port or
                                                          (443 if url.scheme == "https" else 80)))
        headers["Host"] = url.netloc.decode("ascii")
        if url.scheme == "https":
            extensions["sni_hostname"] = host
    request = http.build_request("GET", target, headers=headers, timeout=REQUEST_TIMEOUT,
                                 extensions=extensions)
    body = bytearray()
    try:
        async with asyncio.timeout(EXCHANGE_DEADLINE):
            response = await http.send(request, stream=True, follow_redirects=False)
            try:
                status = response.status_code
                if 300 <= status < 400:
                    raise LnurlError(f"{host} answered with a redirect (HTTP {status}); "
                                     "redirects are not followed")
                async for chunk in response.aiter_bytes():
                    body += chunk
                    if len(body) > MAX_RESPONSE_BYTES:
                        raise LnurlError(f"{host} sent more than {MAX_RESPONSE_BYTES} bytes")
            finally:
                await response.aclose()
    except TimeoutError as exc:
        raise LnurlError(f"{host} did not answer within {EXCHANGE_DEADLINE:g} s") from exc
    except httpx.HTTPError as exc:
        raise LnurlError(f"could not reach {host}: {type(exc).__name__}") from exc
    try:
        # Depth-limited: a deeper answer crashed the parser (found from outside), and no
        # LNURL answer needs more; what we keep of it (a successAction) is stored and shown.
        data = strictjson.foreign(bytes(body), max_depth=strictjson.MAX_DEPTH)
    except ValueError as exc:
        raise LnurlError(f"{host} did not answer with JSON (HTTP {status}), or nested it "
                         f"more than {strictjson.MAX_DEPTH} deep") from exc
    if not isinstance(data, dict):
        raise LnurlError(f"{host} answered with something other than a JSON object")
    if str(data.get("status", "")).upper() == "ERROR":
        reason = str(data.get("reason") or "no reason given")[:300]
        raise LnurlError(f"the LNURL service refused: {reason}")
    return data


# ------------------------------------------------------------------------- the payRequest flow

def _msat(data: dict[str, Any], field: str) -> int:
    value = data.get(field)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise LnurlError(f"the service sent no valid {field}")
    return value


def _metadata(metadata: Any) -> tuple[str, str, tuple[str, ...]]:
    """(the metadata string, its text/plain entry, which must be there exactly once: LUD-06,
    the addresses its ``text/identifier`` and ``text/email`` entries name: LUD-16)."""
    if not isinstance(metadata, str):
        raise LnurlError("the service sent no metadata string")
    try:
        entries = strictjson.foreign(metadata, max_depth=strictjson.MAX_DEPTH)
    except ValueError as exc:
        raise LnurlError("the service's metadata is not JSON, or nests too deep") from exc
    if not isinstance(entries, list) or not all(
        isinstance(e, list) and e and isinstance(e[0], str) for e in entries
    ):
        raise LnurlError("the service's metadata is not a list of [type, value] entries")
    plain = [e for e in entries if e[0] == "text/plain"]
    if len(plain) != 1 or len(plain[0]) < 2 or not isinstance(plain[0][1], str):
        raise LnurlError("the service's metadata needs exactly one text/plain entry")
    names = tuple(sorted({e[1].strip().lower() for e in entries
                          if e[0] in ("text/identifier", "text/email") and len(e) > 1
                          and isinstance(e[1], str) and e[1].strip()}))
    return metadata, plain[0][1], names


def _success_action(value: Any, callback: httpx.URL) -> dict[str, Any] | None:
    """LUD-09/10: pass on a message, url or aes action; refuse any other (do not pay)."""
    if value is None:
        return None
    if not isinstance(value, dict):
        raise LnurlError("the service sent a malformed successAction")
    tag = value.get("tag")
    if tag == "message":
        if not isinstance(value.get("message"), str) or len(value["message"]) > MAX_SUCCESS_TEXT:
            raise LnurlError("the service sent a malformed message successAction")
    elif tag == "url":
        try:
            target = httpx.URL(str(value.get("url", "")))
        except httpx.InvalidURL as exc:
            raise LnurlError("the service sent a malformed url successAction") from exc
        if target.scheme not in ("https", "http") or target.host != callback.host:
            raise LnurlError("the successAction url is not on the service's own domain")
        if len(str(value.get("description", ""))) > MAX_SUCCESS_TEXT:
            raise LnurlError("the successAction description is too long")
    elif tag == "aes":
        if not all(isinstance(value.get(k), str) for k in ("ciphertext", "iv", "description")):
            raise LnurlError("the service sent a malformed aes successAction")
    else:
        raise LnurlError(f"unsupported successAction {tag!r}; not paying (LUD-09)")
    return dict(value)


def _checked_invoice(pr: Any, *, amount_msat: int, metadata: str) -> str:
    if not isinstance(pr, str) or not pr.strip():
        raise LnurlError("the service returned no invoice")
    text = _strip_lightning(pr.strip()).lower()
    try:
        inv = decode(text)  # remembered: the withdrawal that follows decodes it again
    except InvalidInvoice as exc:
        raise LnurlError("the service returned an invalid BOLT11 invoice") from exc
    if inv.amount_msat is None or int(inv.amount_msat) != amount_msat:
        raise LnurlError(f"the service's invoice is for {inv.amount_msat or 'any'} msat, "
                         f"not the {amount_msat} msat asked for; not paying")
    expected = hashlib.sha256(metadata.encode("utf-8")).hexdigest()
    if (inv.description_hash or "").lower() != expected:
        raise LnurlError("the service's invoice does not commit to its metadata "
                         "(its description_hash is not sha256(metadata)); not paying")
    return text


async def resolve_pay_request(
    destination: str, amount_msat: int, *, comment: str | None = None,
    http: httpx.AsyncClient, allow_private_hosts: bool,
) -> LnurlPayResult:
    """Ask an LNURL-pay service or Lightning Address for an invoice of ``amount_msat``."""
    if amount_msat <= 0:
        raise LnurlError("the amount must be positive")
    url = _first_url(destination, allow_private_hosts=allow_private_hosts)
    scheme = _strip_lightning(destination.strip()).partition("://")[0].lower()
    # LUD-17 schemes and a ``tag`` query parameter (LUD-01) say what an LNURL is up front;
    # only a payRequest is fetched (a login must never be called without a signature).
    query_tag = url.params.get("tag")
    if scheme in ("lnurlw", "lnurlc", "keyauth") or query_tag not in (None, "payRequest"):
        what = query_tag or f"{scheme}://"
        raise LnurlError(f"this LNURL is a {what} request, not a payRequest; it cannot be paid")
    data = await _get_json(http, url, allow_private_hosts=allow_private_hosts)
    tag = data.get("tag")
    if tag != "payRequest":
        raise LnurlError(f"this LNURL is a {tag or 'untagged'} request, not a payRequest; "
                         "it cannot be paid")
    callback = data.get("callback")
    if not isinstance(callback, str):
        raise LnurlError("the service sent no callback URL")
    callback_url = _checked_url(callback, allow_private_hosts=allow_private_hosts)
    low, high = _msat(data, "minSendable"), _msat(data, "maxSendable")
    if not 1 <= low <= high:
        raise LnurlError(f"the service's amount range {low} to {high} msat is invalid")
    metadata, description, identifiers = _metadata(data.get("metadata"))
    if not low <= amount_msat <= high:
        raise LnurlError(f"{amount_msat} msat is outside what this recipient accepts: "
                         f"{low} to {high} msat")
    params = {"amount": str(amount_msat)}
    if comment:
        allowed = data.get("commentAllowed") or 0
        if not isinstance(allowed, int) or isinstance(allowed, bool):
            allowed = 0
        if allowed <= 0:
            raise LnurlError("this recipient accepts no comment")
        if len(comment) > allowed:
            raise LnurlError(f"the comment has {len(comment)} characters; this recipient "
                             f"accepts at most {allowed}")
        params["comment"] = comment
    answer = await _get_json(http, callback_url.copy_merge_params(params),
                             allow_private_hosts=allow_private_hosts)
    success = _success_action(answer.get("successAction"), callback_url)
    pr = _checked_invoice(answer.get("pr"), amount_msat=amount_msat, metadata=metadata)
    return LnurlPayResult(bolt11=pr, success_action=success, metadata=metadata, min_msat=low,
                          max_msat=high, description=description, identifiers=identifiers)
