"""Name resolution for the guarded outbound calls (webhooks, LNURL): every address a host
resolves to, on the event loop's resolver.

A host name the IDNA codec cannot encode (an empty label, ``a..example.com`` or
``.example.com``, or a label over 63 characters) makes ``getaddrinfo`` raise ``UnicodeError``,
not ``OSError``; callers that caught only the latter answered a 500 for such a URL (found
from outside, for webhook URLs and LNURL destinations alike). Here it is an ``OSError`` like
any other name that does not resolve.
"""

from __future__ import annotations

import asyncio
import socket

__all__ = ["InvalidHostName", "resolve_addresses"]


class InvalidHostName(OSError):
    """A host name that cannot be encoded: an error in what the user typed, which callers
    may say as it is (unlike why a well-formed name does not resolve)."""


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address ``host`` resolves to, in resolver order, without duplicates or zone ids;
    raises ``OSError`` when it does not resolve (a name that cannot be encoded included)."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port,
                                                             type=socket.SOCK_STREAM)
    except UnicodeError as exc:
        raise InvalidHostName(f"{host!r} is not a valid host name ({exc})") from exc
    seen: dict[str, None] = {}
    for info in infos:
        seen.setdefault(str(info[4][0]).split("%", 1)[0], None)
    return list(seen)
