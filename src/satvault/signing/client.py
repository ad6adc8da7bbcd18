"""The web process's side of the signer socket: :class:`UnixSocketSigner`.

Each call opens a connection, sends one request line, reads one response line and closes.
No answer within ``timeout`` seconds, a missing socket, or a refused or dropped connection
raises :class:`SignerUnavailable`. A signing request that timed out may still have been
signed on the other side; that is harmless (nothing is broadcast by the signer) and the
payout job simply asks again. Errors the signer reports are raised as the same classes.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from satvault.signing.base import Payer, Payment, SignedTx
from satvault.signing.errors import SignerProtocolError, SignerUnavailable
from satvault.signing.wire import (
    MAX_LINE,
    decode_line,
    encode_line,
    error_from_wire,
    payers_from_wire,
    payments_to_wire,
    signed_from_wire,
)

__all__ = ["UnixSocketSigner"]


class UnixSocketSigner:
    """A :class:`~satvault.signing.base.Signer` reached through ``satvault signer serve``."""

    def __init__(self, path: str | os.PathLike[str], *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self._ids = itertools.count(1)

    async def _exchange(self, line: bytes) -> bytes:
        reader, writer = await asyncio.open_unix_connection(str(self.path), limit=MAX_LINE)
        try:
            writer.write(line)
            await writer.drain()
            return await reader.readline()
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        request_id = next(self._ids)
        line = encode_line({"id": request_id, "method": method, "params": params})
        try:
            async with asyncio.timeout(self.timeout):
                answer = await self._exchange(line)
        except TimeoutError as exc:
            raise SignerUnavailable(f"the signer at {self.path} did not answer {method} within "
                                    f"{self.timeout:g} s") from exc
        except (OSError, ValueError) as exc:  # missing socket, refused, reset, too long
            raise SignerUnavailable(f"cannot reach the signer at {self.path}: {exc}") from exc
        if not answer:
            raise SignerUnavailable(f"the signer at {self.path} closed the connection without "
                                    "answering")
        message = decode_line(answer)
        if message.get("id") is None and "error" in message:
            # refused before the request was read (a peer the signer does not serve, a line
            # too long): the error is the answer
            raise error_from_wire(message["error"])
        if message.get("id") != request_id:
            raise SignerProtocolError(f"answer for request {message.get('id')!r}, expected "
                                      f"{request_id}")
        if "error" in message:
            raise error_from_wire(message["error"])
        if "result" not in message:
            raise SignerProtocolError("an answer without result or error")
        return message["result"]

    async def descriptors(self) -> dict[str, str]:
        result = await self._call("descriptors", {})
        if not isinstance(result, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in result.items()):
            raise SignerProtocolError("descriptors must be an object of strings")
        return dict(result)

    async def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *,
                          max_fee_sat: int, max_feerate_sat_vb: int) -> SignedTx:
        result = await self._call("sign_payout", {
            "psbt": psbt_b64, "payments": payments_to_wire(payments),
            "max_fee_sat": max_fee_sat, "max_feerate_sat_vb": max_feerate_sat_vb})
        return signed_from_wire(result)

    async def abandon(self, txid: str, *, reason: str) -> bool:
        result = await self._call("abandon", {"txid": txid, "reason": reason})
        if not isinstance(result, dict) or not isinstance(result.get("abandoned"), bool):
            raise SignerProtocolError("abandon must answer {\"abandoned\": <bool>}")
        return bool(result["abandoned"])

    async def payers(self, refs: Sequence[str]) -> list[Payer]:
        return payers_from_wire(await self._call("payers", {"refs": list(refs)}))

    async def sign_reserves(self, psbt_b64: str, message: str) -> str:
        result = await self._call("sign_reserves", {"psbt": psbt_b64, "message": message})
        if not isinstance(result, dict) or not isinstance(result.get("psbt"), str):
            raise SignerProtocolError("sign_reserves must answer {\"psbt\": <base64>}")
        return str(result["psbt"])
