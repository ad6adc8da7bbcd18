"""The signer over its unix socket: same answers, same typed refusals, unavailability."""

from __future__ import annotations

import asyncio
import json
import socket
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from embit.psbt import PSBT

from satvault.signer import HotSigner, InProcessSigner
from satvault.signer.server import serve, start_server
from satvault.signing import Payment, PsbtOutput, Signer, UnixSocketSigner, make_psbt
from satvault.signing.errors import (
    BadChange,
    FeeTooHigh,
    MissingPayment,
    SignerError,
    SignerProtocolError,
    SignerUnavailable,
    UnknownInput,
)
from tests.signer.conftest import PAY_A, SEED, Builder
from tests.waiting import eventually


@pytest.fixture
async def server(tmp_path: Path, signer: HotSigner) -> AsyncIterator[Path]:
    path = tmp_path / "signer.sock"
    srv = await start_server(path, signer)
    try:
        yield path
    finally:
        srv.close()
        await srv.wait_closed()
        path.unlink(missing_ok=True)


def test_socket_is_private(server: Path) -> None:
    mode = server.stat().st_mode
    assert stat.S_ISSOCK(mode) and stat.S_IMODE(mode) == 0o600
    assert [p.name for p in server.parent.iterdir() if p.name.startswith(".signer-")] == []


async def test_round_trip_matches_in_process(server: Path, signer: HotSigner,
                                             builder: Builder, audit_path: Path) -> None:
    remote: Signer = UnixSocketSigner(server, timeout=5)
    local: Signer = InProcessSigner(signer)
    assert isinstance(remote, Signer) and isinstance(local, Signer)
    assert await remote.descriptors() == await local.descriptors() == signer.descriptors()
    payout = builder.payout()
    signed = await remote.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                      max_feerate_sat_vb=10)
    assert signed == signer.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                        max_feerate_sat_vb=10)  # RFC6979: deterministic
    assert len(audit_path.read_text().splitlines()) == 2


async def test_refusals_arrive_typed(server: Path, builder: Builder, audit_path: Path) -> None:
    remote = UnixSocketSigner(server, timeout=5)
    payout = builder.payout(fee=3_000)
    with pytest.raises(FeeTooHigh, match="limit of 2000"):
        await remote.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                 max_feerate_sat_vb=100)
    extra = Payment(b"\x00\x14" + b"\x09" * 20, 1_000, "wd_c")
    with pytest.raises(MissingPayment, match="wd_c"):
        await remote.sign_payout(payout.psbt, [*payout.payments, extra], max_fee_sat=10_000,
                                 max_feerate_sat_vb=100)
    psbt = PSBT.from_string(payout.psbt)
    psbt.outputs[1].value -= 1
    psbt.outputs[1].script_pubkey = psbt.outputs[0].script_pubkey
    with pytest.raises(BadChange):
        await remote.sign_payout(str(psbt.to_base64()), payout.payments, max_fee_sat=10_000,
                                 max_feerate_sat_vb=100)
    other = Builder(HotSigner(bytes(64), "regtest").descriptors()).payout()
    with pytest.raises(UnknownInput):
        await remote.sign_payout(other.psbt, other.payments, max_fee_sat=10_000,
                                 max_feerate_sat_vb=100)
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert [line["event"] for line in lines] == ["refused"] * 4  # no signature
    assert [line["error_type"] for line in lines] == ["FeeTooHigh", "MissingPayment",
                                                      "BadChange", "UnknownInput"]


async def test_malformed_requests(server: Path) -> None:
    reader, writer = await asyncio.open_unix_connection(str(server))
    try:
        for line in (b"not json\n", b'{"id": 7, "method": "steal_keys"}\n',
                     b'{"id": "x", "method": "sign_payout", "params": {"psbt": 1}}\n',
                     b'{"id": 8, "method": "descriptors"}\n'):
            writer.write(line)
            await writer.drain()
        answers = [json.loads(await reader.readline()) for _ in range(4)]
    finally:
        writer.close()
        await writer.wait_closed()
    assert [a.get("id") for a in answers] == [None, 7, "x", 8]
    assert [a.get("error", {}).get("type") for a in answers[:3]] == ["SignerProtocolError"] * 3
    assert set(answers[3]["result"]) == {"deposit", "hot"}


async def test_unavailable_when_nobody_listens(tmp_path: Path) -> None:
    with pytest.raises(SignerUnavailable):
        await UnixSocketSigner(tmp_path / "missing.sock", timeout=1).descriptors()


async def test_timeout_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "mute.sock"

    async def mute(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read()  # read until the client gives up; never answer
        writer.close()
        await writer.wait_closed()

    srv = await asyncio.start_unix_server(mute, path=str(path))
    try:
        with pytest.raises(SignerUnavailable, match="did not answer"):
            await UnixSocketSigner(path, timeout=0.2).descriptors()
    finally:
        srv.close()
        await srv.wait_closed()


async def test_stale_socket_is_replaced_live_one_is_not(tmp_path: Path,
                                                        signer: HotSigner) -> None:
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens
    task = asyncio.create_task(serve(path, signer))
    # The stale file is replaced by the server's own socket (mode 0600, live).
    await eventually(lambda: path.exists() and stat.S_IMODE(path.stat().st_mode) == 0o600)
    assert await UnixSocketSigner(path, timeout=2).descriptors() == signer.descriptors()
    with pytest.raises(SignerError, match="already listening"):
        await start_server(path, signer)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not path.exists()  # serve removes its socket on the way out

    (tmp_path / "file").write_text("x")
    with pytest.raises(SignerError, match="not a socket"):
        await start_server(tmp_path / "file", signer)


async def test_limit_exceeded_arrives_typed(tmp_path: Path, builder: Builder) -> None:
    from satvault.signing.errors import LimitExceeded, SigningRefused

    path = tmp_path / "capped.sock"
    audit = tmp_path / "capped.jsonl"
    capped = HotSigner(SEED, "regtest", audit_log=audit, max_tx_sat=100_000,
                       max_daily_sat=150_000)
    srv = await start_server(path, capped)
    try:
        remote = UnixSocketSigner(path, timeout=5)
        payout = builder.payout()  # 91 000 sat leave
        await remote.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                 max_feerate_sat_vb=10)
        other = builder.payout(change_index=4, fee=1_500)  # same inputs: a version, 91 500
        await remote.sign_payout(other.psbt, other.payments, max_fee_sat=2_000,
                                 max_feerate_sat_vb=10)
        fresh = Builder(builder.descriptors)
        inputs = [fresh.utxo("hot", 9, 80_000, txid="99" * 32)]
        psbt = make_psbt(inputs, [PsbtOutput(PAY_A, 60_000), fresh.change(5, 19_000)],
                         network="regtest", fingerprint_and_paths=fresh.accounts)
        with pytest.raises(LimitExceeded, match="only 58500 sat") as caught:
            await remote.sign_payout(psbt, [Payment(PAY_A, 60_000, "wd_9")],
                                     max_fee_sat=2_000, max_feerate_sat_vb=10)
        assert type(caught.value) is LimitExceeded and isinstance(caught.value, SigningRefused)
    finally:
        srv.close()
        await srv.wait_closed()
    events = [json.loads(line)["event"] for line in audit.read_text().splitlines()]
    assert events == ["sign_payout", "sign_payout", "refused"]


def test_unknown_error_type_becomes_protocol_error() -> None:
    from satvault.signing.wire import error_from_wire

    assert isinstance(error_from_wire({"type": "FeeTooHigh", "message": "m"}), FeeTooHigh)
    err = error_from_wire({"type": "SystemExit", "message": "m"})
    assert type(err) is SignerProtocolError and "SystemExit" in str(err)


async def test_a_group_socket_is_0660_from_the_start(tmp_path: Path, signer: HotSigner) -> None:
    """For a web side running as another user (a Known gap was a manual chgrp after each
    start, racing it): the group and mode are set before the socket can be reached."""
    import os

    path = tmp_path / "g.sock"
    srv = await start_server(path, signer, group=os.getgid())
    try:
        st = path.stat()
        assert stat.S_IMODE(st.st_mode) == 0o660 and st.st_gid == os.getgid()
        assert await UnixSocketSigner(path, timeout=5).descriptors() == signer.descriptors()
    finally:
        srv.close()
        await srv.wait_closed()
    with pytest.raises(SignerError, match="no group named"):
        await start_server(tmp_path / "n.sock", signer, group="no-such-group-here")
    assert not (tmp_path / "n.sock").exists()


async def test_only_the_allowed_users_are_answered(tmp_path: Path, signer: HotSigner,
                                                   builder: Builder, audit_path: Path) -> None:
    """SO_PEERCRED: the kernel's word for who connected, which file permissions alone do not
    give (a Known gap)."""
    import os

    payout = builder.payout()
    for allowed, answered in (({os.getuid()}, True), ({os.getuid() + 1}, False)):
        path = tmp_path / f"u{int(answered)}.sock"
        srv = await start_server(path, signer, allow_uids=allowed)
        try:
            remote = UnixSocketSigner(path, timeout=5)
            if answered:
                await remote.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                         max_feerate_sat_vb=10)
            else:
                with pytest.raises(SignerProtocolError, match=f"user {os.getuid()} may not"):
                    await remote.sign_payout(payout.psbt, payout.payments, max_fee_sat=2_000,
                                             max_feerate_sat_vb=10)
        finally:
            srv.close()
            await srv.wait_closed()
    assert len(audit_path.read_text().splitlines()) == 1  # only the allowed one was signed
