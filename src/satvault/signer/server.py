"""``satvault signer serve``: the signer behind a unix socket.

The socket file is created with mode 0600 (only the signer's user may connect), without a
window in which it is wider: it is bound inside a fresh 0700 directory, chmod-ed, then
hard-linked into place. A stale socket left by a crashed signer is replaced; a live one (some
other signer answering) or any non-socket file at that path is an error.

Requests are handled one line at a time per connection (see :mod:`satvault.signing.wire` for
the protocol). Errors from the signer travel as their class names (``LimitExceeded`` among
them, so the web side can tell "try later" from "this PSBT is wrong"); anything unexpected
is logged here and answered as a bare ``SignerError`` without details.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import os
import socket
import stat
import struct
import tempfile
from collections.abc import Collection
from pathlib import Path
from typing import Any

from satvault.logs import get_logger
from satvault.signer.core import HotSigner
from satvault.signer.inprocess import InProcessSigner
from satvault.signing.base import Signer
from satvault.signing.errors import InvalidRequest, SignerError, SignerProtocolError
from satvault.signing.wire import (
    MAX_LINE,
    decode_line,
    encode_line,
    error_to_wire,
    payers_to_wire,
    payments_from_wire,
    refs_from_wire,
    signed_to_wire,
)

__all__ = ["check_socket_free", "serve", "start_server"]

log = get_logger(__name__)
_SUN_PATH_MAX = 107  # sockaddr_un.sun_path minus the terminating NUL (Linux)


async def _dispatch(message: dict[str, Any], signer: Signer) -> Any:
    method = message.get("method")
    params = message.get("params", {})
    if not isinstance(params, dict):
        raise SignerProtocolError("params must be an object")
    if method == "descriptors":
        return await signer.descriptors()
    if method == "sign_payout":
        psbt = params.get("psbt")
        if not isinstance(psbt, str):
            raise SignerProtocolError("params.psbt must be a base64 string")
        max_fee, max_rate = params.get("max_fee_sat"), params.get("max_feerate_sat_vb")
        if type(max_fee) is not int or type(max_rate) is not int:
            raise SignerProtocolError("max_fee_sat and max_feerate_sat_vb must be integers")
        signed = await signer.sign_payout(psbt, payments_from_wire(params.get("payments")),
                                          max_fee_sat=max_fee, max_feerate_sat_vb=max_rate)
        return signed_to_wire(signed)
    if method == "sign_reserves":
        psbt, text = params.get("psbt"), params.get("message")
        if not isinstance(psbt, str) or not isinstance(text, str):
            raise SignerProtocolError("params.psbt and params.message must be strings")
        return {"psbt": await signer.sign_reserves(psbt, text)}
    if method == "abandon":
        txid, reason = params.get("txid"), params.get("reason", "")
        if not isinstance(txid, str) or not isinstance(reason, str):
            raise SignerProtocolError("params.txid and params.reason must be strings")
        try:
            return {"abandoned": await signer.abandon(txid, reason=reason)}
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from exc
    if method == "payers":
        return payers_to_wire(await signer.payers(refs_from_wire(params.get("refs"))))
    raise SignerProtocolError(f"unknown method {method!r}")


async def _answer(line: bytes, signer: Signer) -> dict[str, Any]:
    request_id: Any = None
    try:
        message = decode_line(line)
        request_id = message.get("id")
        if request_id is not None and type(request_id) not in (int, str):
            request_id = None
            raise SignerProtocolError("id must be a string, an integer or null")
        result = await _dispatch(message, signer)
    except SignerError as exc:
        log.info("signer.refused", id=request_id, error=type(exc).__name__, message=str(exc))
        return {"id": request_id, "error": error_to_wire(exc)}
    except Exception:
        log.exception("signer.internal_error", id=request_id)
        return {"id": request_id, "error": {"type": "SignerError",
                                            "message": "internal signer error; see its log"}}
    return {"id": request_id, "result": result}


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  signer: Signer) -> None:
    try:
        while True:
            try:
                line = await reader.readline()
            except ValueError:  # longer than MAX_LINE: answer once, then hang up
                writer.write(encode_line({"id": None, "error": {
                    "type": "SignerProtocolError",
                    "message": f"request longer than {MAX_LINE} bytes"}}))
                await writer.drain()
                break
            if not line:
                break
            if not line.strip():
                continue
            writer.write(encode_line(await _answer(line, signer)))
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


def check_socket_free(path: str | os.PathLike[str]) -> None:
    """Raise :class:`SignerError` if another signer listens on ``path`` (a stale socket file
    is left for the listener to replace)."""
    _clear_stale(Path(path), remove=False)


def _clear_stale(path: Path, *, remove: bool = True) -> None:
    try:
        mode = path.lstat().st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise SignerError(f"{path} exists and is not a socket; refusing to replace it")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.settimeout(1.0)
        probe.connect(str(path))
    except (ConnectionRefusedError, FileNotFoundError):
        if remove:
            path.unlink(missing_ok=True)  # stale: nobody listens
        return
    except OSError as exc:
        raise SignerError(f"cannot probe the existing socket {path}: {exc}") from exc
    finally:
        probe.close()
    raise SignerError(f"another signer is already listening on {path}")


def group_id(group: str | int) -> int:
    """A group given by name or number, as a gid; :class:`SignerError` if there is none."""
    if isinstance(group, int) or (isinstance(group, str) and group.isdigit()):
        return int(group)
    try:
        return grp.getgrnam(group).gr_gid
    except KeyError:
        raise SignerError(f"no group named {group!r} on this machine") from None


def peer_uid(sock: socket.socket) -> int:
    """The user id of the process at the other end of a unix socket, as the kernel saw it
    when that process connected (``SO_PEERCRED``: it cannot be claimed, only had)."""
    raw = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _pid, uid, _gid = struct.unpack("3i", raw)
    return int(uid)


def _bind_private(path: Path, gid: int | None = None) -> socket.socket:
    """A listening-ready socket at ``path``, mode 0600 from the moment it is reachable (or
    0660 and group ``gid``, set before it is: the web side runs as another user of that
    group)."""
    if len(os.fsencode(path)) > _SUN_PATH_MAX:
        raise SignerError(f"socket path too long for a unix socket: {path}")
    _clear_stale(path)
    try:
        private_dir = tempfile.mkdtemp(prefix=".signer-", dir=path.parent)  # mode 0700
    except OSError as exc:  # found from outside: a traceback for a missing directory
        raise SignerError(f"cannot create the socket {path}: {exc}") from exc
    tmp = Path(private_dir) / "s"
    if len(os.fsencode(tmp)) > _SUN_PATH_MAX:
        os.rmdir(private_dir)
        raise SignerError(f"socket directory path too long: {path.parent}")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(str(tmp))
        if gid is not None:
            os.chown(tmp, -1, gid)
        os.chmod(tmp, 0o600 if gid is None else 0o660)
        os.link(tmp, path)  # fails, rather than replacing, if a file appeared meanwhile
    except OSError as exc:
        sock.close()
        raise SignerError(f"cannot create the socket {path}: {exc}") from exc
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
        with contextlib.suppress(OSError):
            os.rmdir(private_dir)
    return sock


async def _refuse_peer(writer: asyncio.StreamWriter, uid: int) -> None:
    log.warning("signer.peer_refused", uid=uid)
    writer.write(encode_line({"id": None, "error": {
        "type": "SignerProtocolError",
        "message": f"user {uid} may not use this signer (not in its --allow-uid list)"}}))
    with contextlib.suppress(ConnectionError):
        await writer.drain()
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def start_server(socket_path: str | os.PathLike[str], signer: Signer | HotSigner, *,
                       group: str | int | None = None,
                       allow_uids: Collection[int] | None = None) -> asyncio.Server:
    """Listen on ``socket_path`` (mode 0600; with ``group``, 0660 and that group) and answer
    requests with ``signer``; with ``allow_uids``, only connections whose peer (``SO_PEERCRED``)
    is one of those users, the others answered one refusal and closed unread. The caller
    closes the returned server and removes the socket file (``serve`` does both)."""
    target: Signer = InProcessSigner(signer) if isinstance(signer, HotSigner) else signer
    allowed = None if allow_uids is None else frozenset(allow_uids)
    sock = _bind_private(Path(socket_path), None if group is None else group_id(group))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if allowed is not None:
            uid = peer_uid(writer.get_extra_info("socket"))
            if uid not in allowed:
                await _refuse_peer(writer, uid)
                return
        await _handle(reader, writer, target)

    try:
        return await asyncio.start_unix_server(handler, sock=sock, limit=MAX_LINE)
    except BaseException:
        sock.close()
        Path(socket_path).unlink(missing_ok=True)
        raise


async def serve(socket_path: str | os.PathLike[str], signer: Signer | HotSigner, *,
                group: str | int | None = None,
                allow_uids: Collection[int] | None = None) -> None:
    """Serve until cancelled; then close the listener and remove the socket file."""
    path = Path(socket_path)
    server = await start_server(path, signer, group=group, allow_uids=allow_uids)
    inode = path.stat().st_ino
    log.info("signer.listening", socket=str(path))
    try:
        async with server:
            await server.serve_forever()
    finally:
        with contextlib.suppress(OSError):
            if path.stat().st_ino == inode:  # only our own socket file
                path.unlink()
        log.info("signer.stopped", socket=str(path))
