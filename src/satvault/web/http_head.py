"""The HTTP parser ``satvault serve`` runs: uvicorn's httptools protocol with a cap on the size
of a request's head (request line and headers).

httptools sets no such cap, and gathering a header that arrives in many pieces costs time that
grows with the square of its size: found from outside, one 96 MB header held the event loop,
and with it every request and worker of the process, for 14 s. uvicorn's h11 protocol caps the
head at ``h11_max_incomplete_event_size`` bytes; this one refuses a head that goes on past as
many (the same uvicorn setting, ``server_max_head_bytes`` for both) with ``431 Request
Header Fields Too Large`` and closes the connection, before the parser sees more of it. The
count is of the bytes received while a head is being read, so a request is refused at most one
read (256 KiB) after it passed the limit; a body is never counted.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["BoundedHttpTools", "protocol_for"]

_BODY = b"the request's headers are too large\n"
_REFUSAL = (b"HTTP/1.1 431 Request Header Fields Too Large\r\n"
            b"content-type: text/plain; charset=utf-8\r\n"
            b"content-length: " + str(len(_BODY)).encode() + b"\r\n"
            b"connection: close\r\n\r\n" + _BODY)


class BoundedHttpTools(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.limit: int = self.config.h11_max_incomplete_event_size or 16 * 1024
        self._in_head = True  # a connection starts with a request's head
        self._head_bytes = 0
        # After the head: bytes read and bytes of body handed on. What is neither (chunk
        # sizes, and the trailer after the last chunk, gathered by the same parser as the
        # head: found from outside, a 96 MB trailer held the event loop for 12 s) may not
        # pass the cap either.
        self._read_after_head = self._body_bytes = 0

    def data_received(self, data: bytes) -> None:
        if self._in_head:
            if self._head_bytes > self.limit:
                self._refuse()
                return
            self._head_bytes += len(data)
        else:
            if self._read_after_head - self._body_bytes > self.limit:
                # The app already has the request: no answer of ours can go in between.
                self.logger.warning("Request framing or trailer over %d bytes: connection "
                                    "closed.", self.limit)
                self.transport.close()
                return
            self._read_after_head += len(data)
        super().data_received(data)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head, self._head_bytes = True, 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._read_after_head = self._body_bytes = 0
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        super().on_body(body)

    def _refuse(self) -> None:
        self.logger.warning("Request head larger than %d bytes refused.", self.limit)
        self._in_head = False
        if not self.transport.is_closing():
            self.transport.write(_REFUSAL)
            self.transport.close()


def protocol_for(http: str) -> str | type[asyncio.Protocol]:
    """What to pass uvicorn as ``http`` for the setting ``server_http``: the bounded httptools
    for ``auto`` and ``httptools``; ``h11`` as it is (it caps the head itself). Either way
    the cap is uvicorn's ``h11_max_incomplete_event_size``."""
    return "h11" if http == "h11" else BoundedHttpTools
