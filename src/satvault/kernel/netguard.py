"""Which IP addresses satvault may connect to when a user chose the host (a webhook's URL,
an LNURL or Lightning Address): public ones only. Private, loopback, link-local, multicast,
reserved, unspecified, shared (CGNAT), every other special-purpose block IANA lists as not
globally reachable (named here, not left to the interpreter's tables), IPv6 outside global
unicast (2000::/3) and cloud metadata addresses are refused, also when they hide inside an
IPv6 form (IPv4-mapped, NAT64, 6to4, Teredo). One guard for every such caller (found from
outside: the LNURL client had a check of its own, which let a NAT64 or 6to4 form of a
private address and a cloud's public metadata address through)."""

from __future__ import annotations

import ipaddress

__all__ = ["METADATA_ADDRESSES", "refusal"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

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


def _embedded(ip: ipaddress.IPv6Address) -> list[tuple[str, ipaddress.IPv4Address]]:
    """IPv4 addresses an IPv6 address routes to (mapped, NAT64, 6to4, Teredo), each with the
    name of the form that holds it."""
    found: list[tuple[str, ipaddress.IPv4Address | None]] = [
        ("an IPv4-mapped address", ip.ipv4_mapped), ("a 6to4 address", ip.sixtofour)]
    if ip.teredo is not None:
        server, client = ip.teredo
        found += [("a Teredo address", server), ("a Teredo address", client)]
    if ip in _NAT64:
        found.append(("a NAT64 address", ipaddress.IPv4Address(int(ip) & 0xFFFF_FFFF)))
    return [(kind, a) for kind, a in found if a is not None]


def refusal(address: str, *, allow_loopback: bool = False) -> str | None:
    """Why we must not connect to ``address``, or None if it is a public address."""
    try:
        ip: IPAddress = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        for kind, inner in _embedded(ip):
            reason = refusal(str(inner), allow_loopback=allow_loopback)
            if reason is not None:
                # The form and what it holds (found from outside: the Teredo address
                # 2001::a00:1 was called "an unspecified address", its server's 0.0.0.0).
                return f"{kind} embedding {inner}, {reason}"
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
