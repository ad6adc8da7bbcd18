"""The SSRF guard: https only outside development, every resolved address public (names that
resolve inside are refused too), loopback only in development, metadata never."""

from __future__ import annotations

import pytest

from satvault.events.errors import InvalidWebhook, UnsafeUrl
from satvault.events.ssrf import check, check_url, refusal

PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:2800:21f:cb07:6820:80da:af6b:8b2c"


@pytest.mark.parametrize(("address", "reason"), [
    ("127.0.0.1", "loopback"), ("127.8.9.10", "loopback"), ("::1", "loopback"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"),
    ("fd12:3456::1", "private"), ("169.254.169.254", "metadata"), ("fd00:ec2::254", "metadata"),
    ("168.63.129.16", "metadata"), ("100.100.100.200", "metadata"),
    ("169.254.1.1", "link-local"), ("fe80::1", "link-local"), ("0.0.0.0", "unspecified"),
    ("::", "unspecified"), ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "special-purpose"),
    ("::ffff:127.0.0.1", "loopback"), ("::ffff:10.0.0.1", "private"),
    ("64:ff9b::a00:1", "private"), ("2002:a00:1::", "private"),
    ("192.0.2.1", "private"),  # documentation range
    # Found from outside: not globally reachable, yet passed by the interpreter's flags
    # (IPv6 site-local on every Python; 192.0.0.0/24 before CVE-2024-4032's fix).
    ("fec0::1", "special-purpose"), ("fec0::a:1", "special-purpose"),
    ("192.0.0.8", "special-purpose"), ("192.0.0.100", "special-purpose"),
])
def test_refused_addresses(address, reason):
    found = refusal(address)
    assert found is not None and reason in found


def test_public_addresses_and_development_loopback():
    assert refusal(PUBLIC_V4) is None and refusal(PUBLIC_V6) is None
    assert refusal("127.0.0.1", allow_loopback=True) is None
    assert refusal("::1", allow_loopback=True) is None
    assert refusal("10.0.0.1", allow_loopback=True) is not None
    assert refusal("169.254.169.254", allow_loopback=True) is not None
    assert refusal("::ffff:169.254.169.254", allow_loopback=True) is not None


async def test_scheme_and_literal_hosts(fake_dns):
    with pytest.raises(UnsafeUrl, match="https"):
        await check_url(f"http://{PUBLIC_V4}/hook", environment="production")
    assert await check_url(f"https://{PUBLIC_V4}/hook", environment="production") == [PUBLIC_V4]
    assert await check_url(f"http://{PUBLIC_V4}/hook", environment="development") \
        == [PUBLIC_V4]
    for url in ("https://127.0.0.1/hook", "https://10.0.0.7/hook",
                "https://169.254.169.254/latest/meta-data/", "https://[::1]:8443/hook",
                "https://[fd00:ec2::254]/", "https://2130706433/",  # 127.0.0.1 as one number
                "https://0x7f.1/"):
        with pytest.raises(UnsafeUrl):
            await check_url(url, environment="production")
    for url in ("ftp://example.com/x", "https:///nohost", "https://user:pw@example.com/",
                "not a url", "https://" + "a" * 2000 + ".com/"):
        with pytest.raises(InvalidWebhook):
            await check_url(url, environment="production")


async def test_names_are_resolved_and_every_address_checked(fake_dns):
    fake_dns["hooks.example"] = [PUBLIC_V4, PUBLIC_V6]
    fake_dns["internal.example"] = ["10.20.30.40"]
    fake_dns["mixed.example"] = [PUBLIC_V4, "192.168.0.10"]
    fake_dns["metadata.example"] = ["169.254.169.254"]
    fake_dns["localhost.example"] = ["127.0.0.1"]
    checked = await check("https://hooks.example:8443/in?x=1#frag", environment="production")
    assert checked.addresses == (PUBLIC_V4, PUBLIC_V6)
    assert checked.host_header == "hooks.example:8443" and checked.hostname == "hooks.example"
    assert str(checked.pinned(PUBLIC_V6)) == f"https://[{PUBLIC_V6}]:8443/in?x=1"
    for name in ("internal", "mixed", "metadata", "localhost"):
        with pytest.raises(UnsafeUrl, match="does not resolve to a public address") as refused:
            await check_url(f"https://{name}.example/hook", environment="production")
        # Found from outside: the refusal named the internal address a name resolved to.
        assert not any(a in str(refused.value) for a in ("10.20", "192.168", "169.254", "127."))
    # Development lets a local receiver in, nothing else.
    assert await check_url("http://localhost.example/h", environment="development") \
        == ["127.0.0.1"]
    for name in ("internal", "mixed", "metadata"):
        with pytest.raises(UnsafeUrl):
            await check_url(f"http://{name}.example/hook", environment="development")


async def test_unresolvable_names_are_refused_as_names_resolving_inside_are(fake_dns):
    """Found from outside: "cannot resolve" for a name that does not exist against "resolves
    to 10.20.30.40, a private address" for an internal one let any key with webhooks:write
    map internal names to their addresses. Every such name gets one answer now."""
    fake_dns["empty.example"] = []
    fake_dns["nxdomain.example"] = None
    fake_dns["billing-db.example"] = ["10.20.30.40"]
    answers = set()
    for name in ("empty", "nxdomain", "billing-db"):
        with pytest.raises(UnsafeUrl) as refused:
            await check_url(f"https://{name}.example/", environment="production")
        answers.add(str(refused.value).replace(f"{name}.example", "<host>"))
    assert answers == {"<host> does not resolve to a public address; refusing to send there"}


@pytest.mark.parametrize(("address", "kind", "inner"), [
    ("2001::a00:1", "Teredo", "0.0.0.0"), ("::ffff:127.0.0.1", "IPv4-mapped", "127.0.0.1"),
    ("64:ff9b::a00:1", "NAT64", "10.0.0.1"), ("2002:a00:1::", "6to4", "10.0.0.1")])
async def test_an_ipv6_form_is_named_with_the_ipv4_it_embeds(fake_dns, address, kind, inner):
    """Found from outside: ``http://[2001::a00:1]/`` was refused (rightly) as "2001::a00:1 is
    an unspecified address", which it is not: it is a Teredo address whose embedded server
    address is 0.0.0.0. The reason names the form and the IPv4 address inside."""
    found = refusal(address)
    assert found is not None and kind in found and inner in found, found
    with pytest.raises(UnsafeUrl) as refused:
        await check_url(f"https://[{address}]/hook", environment="production")
    assert f"{address} is an unspecified" not in str(refused.value)
    assert kind in str(refused.value) and inner in str(refused.value), refused.value
