"""The guard against server-side request forgery for URLs that users give us (webhooks).

Whoever registers a webhook chooses where our server sends requests, so a URL is accepted only
if it cannot point inside our network:

* ``https`` only (``http`` too in development);
* no credentials in the URL (the signature authenticates us to the receiver);
* the host is resolved and *every* address it resolves to must be public: private, loopback,
  link-local, multicast, reserved, unspecified, shared (CGNAT), every other special-purpose
  block IANA lists as not globally reachable (named here, not left to the interpreter's
  tables), IPv6 outside global unicast (2000::/3) and cloud metadata addresses are refused,
  also when they hide inside an IPv6 form (IPv4-mapped, NAT64, 6to4, Teredo).
  Development allows loopback, so tests and a local receiver work; it never allows the rest.

The check runs when a webhook is created and again before every attempt; the request then
goes to the address that was just checked (:meth:`CheckedUrl.pinned`) with the original name
in the ``Host`` header and as the TLS SNI / certificate name, so a DNS answer that changes
between the check and the connection (DNS rebinding) cannot send us anywhere else. Redirects
are never followed (the dispatcher treats a 3xx as a failed attempt).
"""

from __future__ import annotations

import asyncio
import ipaddress
from dataclasses import dataclass

import httpx

from satvault.events.errors import InvalidWebhook, UnsafeUrl
from satvault.kernel.dns import InvalidHostName, resolve_addresses
from satvault.kernel.netguard import METADATA_ADDRESSES, refusal
from satvault.logs import get_logger

__all__ = ["METADATA_ADDRESSES", "CheckedUrl", "check", "check_url", "refusal", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
log = get_logger(__name__)

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class CheckedUrl:
    """A URL that passed the guard, with the addresses its host resolved to just now."""

    url: httpx.URL
    addresses: tuple[str, ...]

    @property
    def host_header(self) -> str:
        return self.url.netloc.decode("ascii")

    @property
    def hostname(self) -> str:
        return self.url.raw_host.decode("ascii")

    def pinned(self, address: str) -> httpx.URL:
        """The same URL with its host replaced by one of the checked addresses."""
        return self.url.copy_with(host=address)


async def resolve(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in resolver order, without duplicates (a seam:
    tests replace it)."""
    return await resolve_addresses(host, port)


def _parse(url: str, *, environment: str) -> httpx.URL:
    if len(url) > MAX_URL_LENGTH:
        raise InvalidWebhook(f"the URL is longer than {MAX_URL_LENGTH} characters")
    try:
        parsed = httpx.URL(url.strip())
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise InvalidWebhook(f"{url!r} is not a URL") from exc
    allowed = ("https", "http") if environment == "development" else ("https",)
    if parsed.scheme not in allowed:
        raise UnsafeUrl(f"the URL must use {' or '.join(allowed)} (got {parsed.scheme!r})")
    if not parsed.raw_host:
        raise InvalidWebhook("the URL has no host")
    if parsed.port is not None and not 1 <= parsed.port <= 65535:
        raise InvalidWebhook(f"port {parsed.port} is not a TCP port (1-65535)")
    if parsed.userinfo:
        raise InvalidWebhook("credentials in the URL are not allowed; verify the signature")
    parsed = parsed.copy_with(fragment=None)
    if len(str(parsed)) > MAX_URL_LENGTH:
        # As it is stored and sent: percent-encoding and punycode make it longer than typed
        # (found from outside: 927 characters became 5,427, a 500 on PostgreSQL's column).
        raise InvalidWebhook(f"the URL, encoded, is longer than {MAX_URL_LENGTH} characters")
    return parsed


async def check(url: str, *, environment: str) -> CheckedUrl:
    """Parse, resolve and check ``url``; raises :class:`UnsafeUrl` or
    :class:`InvalidWebhook`, else returns the URL with its checked addresses."""
    parsed = _parse(url, environment=environment)
    host = parsed.raw_host.decode("ascii")
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT):
            addresses = await resolve(host.strip("[]"), port)
    except TimeoutError as exc:
        raise InvalidWebhook(f"resolving {host} took longer than {RESOLVE_TIMEOUT:g} s") from exc
    except InvalidHostName as exc:
        raise InvalidWebhook(str(exc)) from exc
    except OSError as exc:
        raise _not_public(host, f"cannot resolve: {exc}") from exc
    if not addresses:
        raise _not_public(host, "no address")
    allow_loopback = environment == "development"
    for address in addresses:
        reason = refusal(address, allow_loopback=allow_loopback)
        if reason is not None:
            if _literal(host):  # the client's own address: nothing to hide about it
                raise UnsafeUrl(f"{host} is {reason}; refusing to send there")
            raise _not_public(host, f"{address}: {reason}")
    return CheckedUrl(parsed, tuple(addresses))


def _literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def _not_public(host: str, why: str) -> UnsafeUrl:
    """One refusal for a name that does not exist, has no address or has a non-public one:
    whoever registers a webhook must not learn our internal DNS from the difference (found
    from outside: "billing-db.corp.internal resolves to 10.20.30.40" against "cannot resolve"
    mapped internal names to their addresses). The operator's log says which it was."""
    log.info("webhook_host_refused", host=host, why=why)
    return UnsafeUrl(f"{host} does not resolve to a public address; refusing to send there")


async def check_url(url: str, *, environment: str) -> list[str]:
    """The addresses ``url``'s host resolves to, all checked; raises :class:`UnsafeUrl`
    (refused: not https, or not public, unresolvable included) or :class:`InvalidWebhook`
    (malformed, or the resolver too slow)."""
    return list((await check(url, environment=environment)).addresses)
