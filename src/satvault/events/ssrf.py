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
from satvault.kernel.dns import resolve_addresses

__all__ = ["CheckedUrl", "check", "check_url", "refusal", "resolve"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_LENGTH = 2000
RESOLVE_TIMEOUT = 5.0
# Instance metadata services: AWS/GCP/Azure/OpenStack (link-local anyway), AWS over IPv6,
# Alibaba (in the shared 100.64/10 block anyway) and Azure's wire server, which is a *public*
# address and so must be named.
METADATA_ADDRESSES = frozenset(ipaddress.ip_address(a) for a in (
    "169.254.169.254", "fd00:ec2::254", "100.100.100.200", "168.63.129.16",
))
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# The special-purpose blocks IANA lists as not globally reachable (its IPv4 and IPv6
# Special-Purpose Address Registries), named here rather than left to the interpreter's
# ``is_*`` flags: those miss some (IPv6 site-local fec0::/10 on every version, most of
# 192.0.0.0/24 before CVE-2024-4032's fix). Outside IPv6's global unicast 2000::/3 nothing
# is public either.
_SPECIAL = tuple(ipaddress.ip_network(n) for n in (
    "0.0.0.0/8", "10.0.0.0/8", "100.64.0.0/10", "127.0.0.0/8", "169.254.0.0/16",
    "172.16.0.0/12", "192.0.0.0/24", "192.0.2.0/24", "192.88.99.0/24", "192.168.0.0/16",
    "198.18.0.0/15", "198.51.100.0/24", "203.0.113.0/24", "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128", "::1/128", "64:ff9b:1::/48", "100::/64", "2001::/23", "2001:db8::/32",
    "2002::/16", "3fff::/20", "5f00::/16", "fc00::/7", "fe80::/10", "fec0::/10",
))
_GLOBAL_UNICAST_V6 = ipaddress.ip_network("2000::/3")


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


def _embedded(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """IPv4 addresses an IPv6 address routes to (mapped, NAT64, 6to4, Teredo)."""
    found = [ip.ipv4_mapped, ip.sixtofour]
    if ip.teredo is not None:
        found.extend(ip.teredo)
    if ip in _NAT64:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF))
    return [a for a in found if a is not None]


def refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why we must not connect to ``address``, or None if it is a public address."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in _embedded(ip):
            reason = refusal(str(inner), allow_loopback=allow_loopback)
            if reason is not None:
                return reason
    if ip in METADATA_ADDRESSES:
        return "a cloud metadata address"
    if ip.is_loopback:
        return None if allow_loopback else "a loopback address"
    checks = (("is_unspecified", "an unspecified address"), ("is_link_local", "link-local"),
              ("is_multicast", "multicast"), ("is_reserved", "a reserved address"),
              ("is_private", "a private address"))
    for attribute, reason in checks:
        if getattr(ip, attribute):
            return reason
    if any(ip in net for net in _SPECIAL if net.version == ip.version):
        return "a special-purpose address, not globally reachable"
    if not ip.is_global or (ip.version == 6 and ip not in _GLOBAL_UNICAST_V6):
        return "not a globally routable address"
    return None


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
    except OSError as exc:
        raise InvalidWebhook(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise InvalidWebhook(f"{host} has no address")
    allow_loopback = environment == "development"
    for address in addresses:
        reason = refusal(address, allow_loopback=allow_loopback)
        if reason is not None:
            raise UnsafeUrl(f"{host} resolves to {address}, {reason}; refusing to send there")
    return CheckedUrl(parsed, tuple(addresses))


async def check_url(url: str, *, environment: str) -> list[str]:
    """The addresses ``url``'s host resolves to, all checked; raises :class:`UnsafeUrl`
    (refused) or :class:`InvalidWebhook` (malformed, unresolvable)."""
    return list((await check(url, environment=environment)).addresses)
