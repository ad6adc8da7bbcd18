"""The signer pays each payment reference once: a transaction that pays a withdrawal already
paid by an earlier signature must conflict with that signature (spend one of its inputs), so
that at most one of the two can ever confirm. A database restored from a backup taken before
a payout, which batches the withdrawal again from other coins, is refused here whatever the
web side believes; a fee bump (same inputs) and a replacement that keeps one input sign as
before. A version the web side proved was never accepted by any node is given up with
``abandon`` and no longer counts."""

from __future__ import annotations

from pathlib import Path

import pytest

from satvault.signer import HotSigner
from satvault.signer.inprocess import InProcessSigner
from satvault.signing import Payment, PsbtOutput, make_psbt
from satvault.signing.errors import AuditLogError, PaidBefore, SignerProtocolError
from satvault.signing.psbt import PsbtInput
from tests.signer.conftest import NETWORK, PAY_A, PAY_B, SEED, Builder, Payout
from tests.signer.test_core import LOOSE, all_audit_lines


def pay(builder: Builder, inputs: list[PsbtInput], payments: list[Payment], *,
        fee: int = 1_000) -> Payout:
    """A payout of ``payments`` from ``inputs``, the rest back to the hot wallet."""
    change = sum(i.value_sat for i in inputs) - sum(p.amount_sat for p in payments) - fee
    outputs = [PsbtOutput(p.script_pubkey, p.amount_sat) for p in payments]
    outputs.append(builder.change(9, change))
    psbt = make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=builder.accounts)
    return Payout(inputs, outputs, payments, psbt)


def coin(builder: Builder, n: int, value: int = 200_000) -> PsbtInput:
    return builder.utxo("hot", n, value, txid=f"{n + 0x40:02x}" * 32)


W1 = Payment(PAY_A, 60_000, "wd_1")
W2 = Payment(PAY_B, 30_000, "wd_2")


def test_a_payment_signed_from_other_coins_again_is_refused(signer: HotSigner, builder: Builder,
                                                           audit_path: Path) -> None:
    first = signer.sign_payout(pay(builder, [coin(builder, 1)], [W1]).psbt, [W1], **LOOSE)
    again = pay(builder, [coin(builder, 2)], [W1, W2])
    with pytest.raises(PaidBefore, match=rf"wd_1 .*{first.txid}"):
        signer.sign_payout(again.psbt, again.payments, **LOOSE)
    refused = all_audit_lines(audit_path)[-1]
    assert refused["event"] == "refused" and refused["error_type"] == "PaidBefore"
    # What was never paid is still payable, alone, from the same coin.
    alone = pay(builder, [coin(builder, 2)], [W2])
    signer.sign_payout(alone.psbt, alone.payments, **LOOSE)


def test_versions_that_conflict_with_every_earlier_one_sign(signer: HotSigner,
                                                            builder: Builder) -> None:
    a, b, c = coin(builder, 1), coin(builder, 2), coin(builder, 3)
    signer.sign_payout(pay(builder, [a, b], [W1]).psbt, [W1], **LOOSE)
    signer.sign_payout(pay(builder, [a, b], [W1], fee=3_000).psbt, [W1], **LOOSE)  # a bump
    signer.sign_payout(pay(builder, [a], [W1], fee=2_000).psbt, [W1], **LOOSE)  # keeps a
    signer.sign_payout(pay(builder, [a, c], [W1], fee=4_000).psbt, [W1], **LOOSE)
    # b and c's version conflicts with the first three but not with [a]: both could confirm.
    with pytest.raises(PaidBefore):
        signer.sign_payout(pay(builder, [b, c], [W1]).psbt, [W1], **LOOSE)


def test_the_memory_survives_a_restart(audit_path: Path, builder: Builder) -> None:
    signer = HotSigner(SEED, NETWORK, audit_log=audit_path)
    signer.sign_payout(pay(builder, [coin(builder, 1)], [W1]).psbt, [W1], **LOOSE)
    restarted = HotSigner(SEED, NETWORK, audit_log=audit_path)
    with pytest.raises(PaidBefore):
        restarted.sign_payout(pay(builder, [coin(builder, 2)], [W1]).psbt, [W1], **LOOSE)


async def test_an_abandoned_version_no_longer_counts(signer: HotSigner, builder: Builder,
                                                     audit_path: Path) -> None:
    first = signer.sign_payout(pay(builder, [coin(builder, 1)], [W1]).psbt, [W1], **LOOSE)
    assert await InProcessSigner(signer).abandon(first.txid, reason="rejected, never sent")
    assert not signer.abandon(first.txid, reason="again")  # known, nothing more to do
    line = all_audit_lines(audit_path)[-1]
    assert (line["event"], line["txid"], line["reason"]) == \
        ("abandoned", first.txid, "rejected, never sent")
    second = signer.sign_payout(pay(builder, [coin(builder, 2)], [W1]).psbt, [W1], **LOOSE)
    # The given-up version cannot come back beside the live one, nor after a restart.
    with pytest.raises(PaidBefore, match=second.txid):
        signer.sign_payout(pay(builder, [coin(builder, 1)], [W1]).psbt, [W1], **LOOSE)
    restarted = HotSigner(SEED, NETWORK, audit_log=audit_path)
    with pytest.raises(PaidBefore, match=second.txid):
        restarted.sign_payout(pay(builder, [coin(builder, 3)], [W1]).psbt, [W1], **LOOSE)


def test_abandoning_what_it_never_signed_does_nothing(signer: HotSigner,
                                                      audit_path: Path) -> None:
    assert not signer.abandon("ab" * 32, reason="unknown")
    assert all_audit_lines(audit_path) == []
    with pytest.raises(ValueError, match="txid"):
        signer.abandon("not a txid", reason="x")


def test_sweeps_carry_no_payments_and_are_not_limited_by_this(signer: HotSigner,
                                                              builder: Builder) -> None:
    for n in (1, 2):
        inputs = [builder.utxo("deposit", n, 50_000, txid=f"{n + 0x60:02x}" * 32)]
        psbt = make_psbt(inputs, [builder.change(n, 49_000)], network=NETWORK,
                         fingerprint_and_paths=builder.accounts)
        signer.sign_payout(psbt, [], **LOOSE)


def test_an_abandon_line_that_cannot_be_read_stops_the_start(audit_path: Path) -> None:
    audit_path.write_text('{"event":"abandoned","txid":17}\n')
    with pytest.raises(AuditLogError, match="abandon"):
        HotSigner(SEED, NETWORK, audit_log=audit_path)


async def test_over_the_socket(tmp_path: Path, signer: HotSigner, builder: Builder) -> None:
    from satvault.signer.server import start_server
    from satvault.signing import UnixSocketSigner
    from satvault.signing.errors import InvalidRequest

    path = tmp_path / "signer.sock"
    srv = await start_server(path, signer)
    try:
        remote = UnixSocketSigner(path, timeout=5)
        spent = coin(builder, 1)
        first = pay(builder, [spent], [W1])
        signed = await remote.sign_payout(first.psbt, [W1], **LOOSE)
        again = pay(builder, [coin(builder, 2)], [W1])
        with pytest.raises(PaidBefore, match=signed.txid):
            await remote.sign_payout(again.psbt, [W1], **LOOSE)
        with pytest.raises(InvalidRequest, match="txid"):
            await remote.abandon("xyz", reason="")
        (payer,) = await remote.payers(["wd_1", "wd_nope"])
        assert payer.txid == signed.txid and payer.refs == ("wd_1",)
        assert payer.outpoints == (f"{spent.txid}:{spent.vout}",)
        assert await remote.payers(["wd_2"]) == []
        with pytest.raises(SignerProtocolError, match="refs"):
            await remote._call("payers", {"refs": "wd_1"})
        assert await remote.abandon(signed.txid, reason="never sent")
        assert await remote.payers(["wd_1"]) == []  # given up: it pays nothing any more
        assert not await remote.abandon(signed.txid, reason="never sent")
        await remote.sign_payout(again.psbt, [W1], **LOOSE)
    finally:
        srv.close()
        await srv.wait_closed()


async def test_the_operators_command(tmp_path: Path, signer: HotSigner, builder: Builder,
                                     audit_path: Path) -> None:
    """``satvault signer abandon`` over the socket, for a version a person has made sure can
    never confirm; an unknown or malformed txid changes nothing."""
    import asyncio
    import json

    from typer.testing import CliRunner

    from satvault.signer.cli import app
    from satvault.signer.server import start_server

    first = signer.sign_payout(pay(builder, [coin(builder, 1)], [W1]).psbt, [W1], **LOOSE)
    path = tmp_path / "signer.sock"
    srv = await start_server(path, signer)

    def run(*args: str) -> tuple[int, str]:
        result = CliRunner().invoke(app, ["abandon", *args, "--socket", str(path)])
        # the last line: the signer serving in this process logs to the same stdout
        return result.exit_code, (result.stdout.splitlines() or [""])[-1]

    try:
        code, out = await asyncio.to_thread(run, "ab" * 32, "--reason", "typo")
        assert code == 0 and json.loads(out)["abandoned"] is False
        code, out = await asyncio.to_thread(run, "zz", "--reason", "typo")
        assert code == 1
        assert [r["event"] for r in all_audit_lines(audit_path)] == ["sign_payout"]
        code, out = await asyncio.to_thread(run, first.txid, "--reason",
                                            "its input is spent by a confirmed tx")
        assert code == 0 and json.loads(out)["abandoned"] is True
    finally:
        srv.close()
        await srv.wait_closed()
    assert all_audit_lines(audit_path)[-1]["reason"] == "its input is spent by a confirmed tx"
    signer.sign_payout(pay(builder, [coin(builder, 2)], [W1]).psbt, [W1], **LOOSE)
