"""The signer defends itself (issue 11 §3): deposit coins are only swept into the platform's
own wallets (hot receive, the cold multisig it was given at start-up), value leaves only from
hot coins, within caps per transaction and per rolling 24 hours that survive a restart, and
every refusal is written to the audit log."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from embit.descriptor import Descriptor
from embit.psbt import PSBT, DerivationPath
from typer.testing import CliRunner

from satvault.onchain.descriptors import parse_wallet
from satvault.signer import HotSigner
from satvault.signer.cli import app
from satvault.signing import Payment, PsbtInput, PsbtOutput, make_psbt
from satvault.signing.errors import (
    AuditLogError,
    BadChange,
    DepositOutflow,
    InvalidColdDescriptor,
    LimitExceeded,
    OutputMismatch,
    SigningRefused,
)
from tests.signer.conftest import (
    MNEMONIC,
    NETWORK,
    PAY_A,
    PAY_B,
    SEED,
    Builder,
    cold_derivations,
    cold_descriptor,
    hot_receive_derivation,
    with_output_derivations,
)
from tests.signer.test_core import all_audit_lines, assert_fully_signed, audit_lines

LOOSE = {"max_fee_sat": 100_000, "max_feerate_sat_vb": 1_000}
COLD = cold_descriptor()


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_signer(audit_path: Path, clock: Clock) -> Callable[..., HotSigner]:
    """A signer over the test's audit log: called twice, it is a restart."""
    def make(**options: Any) -> HotSigner:
        options = {"cold_descriptor": COLD, "clock": clock, **options}
        return HotSigner(SEED, NETWORK, audit_log=audit_path, **options)
    return make


def sweep(builder: Builder, *, cold: str = COLD, hot_index: int = 5, cold_at: tuple[int, int]
          = (0, 3), fee: int = 700) -> tuple[list[PsbtInput], str]:
    """Three deposit coins swept into hot receive ``hot_index`` and the cold wallet."""
    inputs = [builder.utxo("deposit", i, 40_000 + i) for i in range(3)]
    total = sum(i.value_sat for i in inputs) - fee
    hot_spk = builder.hot.derive(hot_index).script_pubkey
    cold_spk = parse_wallet(cold, NETWORK).derive(cold_at[1], change=cold_at[0]).script_pubkey
    outputs = [PsbtOutput(hot_spk, total // 3), PsbtOutput(cold_spk, total - total // 3)]
    psbt = make_psbt(inputs, outputs, network=NETWORK, fingerprint_and_paths=builder.accounts)
    return inputs, with_output_derivations(psbt, {
        0: hot_receive_derivation(builder, hot_index),
        1: cold_derivations(cold, *cold_at)})


def hot_payout(builder: Builder, k: int, amount: int, *, fee: int = 1_000,
               inputs_value: int = 200_000) -> tuple[str, list[Payment]]:
    """A payout of ``amount`` from a hot coin of its own (``k`` picks the outpoint)."""
    utxo = builder.utxo("hot", k, inputs_value, txid=f"{0x40 + k:02x}" * 32)
    outputs = [PsbtOutput(PAY_A, amount),
               builder.change(k, inputs_value - amount - fee)]
    psbt = make_psbt([utxo], outputs, network=NETWORK, fingerprint_and_paths=builder.accounts)
    return psbt, [Payment(PAY_A, amount, f"wd_{k}")]


def refusals(path: Path) -> list[dict[str, Any]]:
    return [line for line in all_audit_lines(path) if line["event"] == "refused"]


# ------------------------------------------------------------------ sweeps
@pytest.mark.parametrize(("m", "n"), [(2, 3), (3, 5)])
def test_sweep_into_hot_receive_and_cold_is_signed(make_signer: Callable[..., HotSigner],
                                                   builder: Builder, audit_path: Path,
                                                   m: int, n: int) -> None:
    cold = cold_descriptor(m, n)
    signer = make_signer(cold_descriptor=cold)
    inputs, psbt = sweep(builder, cold=cold)
    signed = signer.sign_payout(psbt, [], **LOOSE)  # how the sweep job calls it
    assert_fully_signed(signed.raw_hex, inputs)
    # The cold output really is the multisig's address: embit's own descriptor code agrees.
    tx = PSBT.from_string(signed.psbt_b64).tx
    assert bytes(tx.vout[1].script_pubkey.data) == \
        Descriptor.from_string(cold.split("#")[0]).derive(3, branch_index=0).script_pubkey().data
    (line,) = audit_lines(audit_path)
    assert [(o["kind"], o["wallet"], o["path"]) for o in line["outputs"]] == [
        ("internal", "hot", "m/84'/1'/1'/0/5"), ("internal", "cold", "cold/0/3")]
    assert line["leaving_sat"] == signed.fee_sat == 700  # only the fee leaves


def test_deposit_coins_cannot_pay_out(make_signer: Callable[..., HotSigner],
                                      builder: Builder, audit_path: Path) -> None:
    signer = make_signer()
    deposit = builder.utxo("deposit", 1, 50_000)
    hot = builder.utxo("hot", 2, 50_000, chain=1, txid="77" * 32)
    for inputs in ([deposit], [hot, deposit]):
        psbt = make_psbt(inputs, [PsbtOutput(PAY_A, 30_000),
                                  builder.change(0, sum(i.value_sat for i in inputs) - 31_000)],
                         network=NETWORK, fingerprint_and_paths=builder.accounts)
        with pytest.raises(DepositOutflow, match=r"output 0 pays 30000 sat .* deposit coins"):
            signer.sign_payout(psbt, [Payment(PAY_A, 30_000, "wd_x")], **LOOSE)
    # the same payment out of hot coins alone is signed
    psbt = make_psbt([hot], [PsbtOutput(PAY_A, 30_000), builder.change(0, 19_000)],
                     network=NETWORK, fingerprint_and_paths=builder.accounts)
    signer.sign_payout(psbt, [Payment(PAY_A, 30_000, "wd_x")], **LOOSE)
    assert len(audit_lines(audit_path)) == 1
    assert [r["error_type"] for r in refusals(audit_path)] == ["DepositOutflow"] * 2


def test_sweep_only_to_own_wallets(make_signer: Callable[..., HotSigner],
                                   builder: Builder) -> None:
    signer = make_signer()
    _, psbt = sweep(builder)

    def edit(change: Callable[[PSBT], None]) -> str:
        p = PSBT.from_string(psbt)
        change(p)
        return str(p.to_base64())

    def unproven_hot(p: PSBT) -> None:
        p.outputs[0].bip32_derivations.clear()

    # Without its derivation a hot receive address is just an address: not requested.
    with pytest.raises(OutputMismatch, match="neither a requested payment"):
        signer.sign_payout(edit(unproven_hot), [], **LOOSE)
    # Naming it as a payment does not help: deposit coins pay no payment.
    spk = builder.hot.derive(5).script_pubkey
    amount = PSBT.from_string(psbt).outputs[0].value
    with pytest.raises(DepositOutflow):
        signer.sign_payout(edit(unproven_hot), [Payment(spk, amount, "sneaky")], **LOOSE)

    def to_deposit_wallet(p: PSBT) -> None:  # a sweep "into" the deposit account
        ((pub, der),) = p.outputs[0].bip32_derivations.items()
        p.outputs[0].bip32_derivations[pub] = DerivationPath(
            der.fingerprint, [*der.derivation[:2], 0x80000000, 0, 5])

    with pytest.raises(BadChange, match="only to the hot wallet"):
        signer.sign_payout(edit(to_deposit_wallet), [], **LOOSE)


def test_fake_cold_outputs_are_refused(make_signer: Callable[..., HotSigner],
                                       builder: Builder, audit_path: Path) -> None:
    signer = make_signer()
    wallet = parse_wallet(COLD, NETWORK)
    inputs = [builder.utxo("deposit", 0, 100_000)]

    def attempt(spk: bytes, derivations: dict[Any, DerivationPath]) -> None:
        psbt = make_psbt(inputs, [PsbtOutput(spk, 99_000)], network=NETWORK,
                         fingerprint_and_paths=builder.accounts)
        signer.sign_payout(with_output_derivations(psbt, {0: derivations}), [], **LOOSE)

    foreign = bytes.fromhex("0020") + b"\xab" * 32
    # the cosigners' true keys at 0/3, on a script the cold descriptor does not derive
    with pytest.raises(BadChange, match=r"output 0 .* cold wallet's address 0/3, but the cold "
                                        r"descriptor derives"):
        attempt(foreign, cold_derivations(COLD, 0, 3))
    # the script of cold 0/3, claimed at index 4 (with the keys of index 4)
    at3 = wallet.derive(3).script_pubkey
    with pytest.raises(BadChange, match="0/4"):
        attempt(at3, cold_derivations(COLD, 0, 4))
    # the cold fingerprints and paths of 0/4, but the keys of 0/3
    keys3 = list(cold_derivations(COLD, 0, 3))
    paths4 = list(cold_derivations(COLD, 0, 4).values())
    with pytest.raises(BadChange, match="different one"):
        attempt(at3, dict(zip(keys3, paths4, strict=True)))
    # a cosigner's fingerprint on a path outside its origin
    ((pub, der), *_) = cold_derivations(COLD, 0, 3).items()
    with pytest.raises(BadChange, match="not chain/index below"):
        attempt(at3, {pub: DerivationPath(der.fingerprint, [*der.derivation[:3], 0, 3])})
    # cosigner derivations at two positions
    mixed = dict(list(cold_derivations(COLD, 0, 3).items())[:1]
                 + list(cold_derivations(COLD, 1, 3).items())[1:])
    with pytest.raises(BadChange, match="two positions"):
        attempt(at3, mixed)
    # another multisig entirely (other cosigners): not the cold wallet, not requested
    other = cold_descriptor(first=5)
    with pytest.raises(OutputMismatch, match="neither a requested payment"):
        attempt(parse_wallet(other, NETWORK).derive(3).script_pubkey,
                cold_derivations(other, 0, 3))
    assert audit_lines(audit_path) == []
    assert len(refusals(audit_path)) == 6
    # and the genuine one is signed
    attempt(at3, cold_derivations(COLD, 0, 3))


def test_without_a_cold_descriptor_cold_outputs_are_not_own(
        make_signer: Callable[..., HotSigner], builder: Builder) -> None:
    signer = make_signer(cold_descriptor=None)
    _, psbt = sweep(builder)
    with pytest.raises(OutputMismatch, match=r"output 1 .* neither a requested payment"):
        signer.sign_payout(psbt, [], **LOOSE)


def test_bad_cold_descriptors_stop_the_signer(signer: HotSigner) -> None:
    fp = signer.fingerprint.hex()
    own_key = signer.descriptors()["hot"].split("#")[0]  # wpkh([fp/84h/1h/1h]tpub…/<0;1>/*)
    own = own_key[len("wpkh("):-1]
    no_origin = COLD.split("#")[0].replace("[", "").split(",")
    bad = {
        "single key": own_key,
        "no origin": ",".join([no_origin[0], *[k.split("]")[-1] for k in no_origin[1:]]]),
        "own key": COLD.split("#")[0].replace("/<0;1>/*))", f"/<0;1>/*,{own}))"),
        "checksum": COLD[:-1] + ("q" if COLD[-1] != "q" else "p"),
    }
    # Found in a review: the signer took what the web side's cold wallet refuses.
    plain = COLD.split("#")[0]
    keys = plain[plain.index(",") + 1:plain.rindex("))")].split(",")
    bad["multi"] = plain.replace("sortedmulti(", "multi(")
    bad["one of n"] = plain.replace("sortedmulti(2,", "sortedmulti(1,")
    bad["one seed twice"] = plain.replace(keys[1], keys[0])
    words = {"single key": "wpkh", "no origin": "origin", "own key": fp,
             "checksum": "checksum", "multi": "multi\\(\\)", "one of n": "at least two",
             "one seed twice": "share a master fingerprint"}
    for name, text in bad.items():
        with pytest.raises(InvalidColdDescriptor, match=words[name]):
            HotSigner(SEED, NETWORK, cold_descriptor=text)
    with pytest.raises(InvalidColdDescriptor, match="test network"):
        HotSigner(SEED, "mainnet", cold_descriptor=COLD)
    assert HotSigner(SEED, NETWORK, cold_descriptor=COLD).cold_descriptor == COLD


# ------------------------------------------------------------------ caps
def test_per_transaction_cap(make_signer: Callable[..., HotSigner], builder: Builder,
                             audit_path: Path) -> None:
    signer = make_signer(max_tx_sat=90_999, max_daily_sat=1_000_000)
    payout = builder.payout(fee=1_000)  # 60 000 + 30 000 paid, 1 000 fee: 91 000 leave
    with pytest.raises(LimitExceeded, match=r"send 91000 sat out of the platform \(payments "
                                            r"90000 sat \+ fee 1000 sat\), above the signer's "
                                            r"per-transaction cap of 90999 sat; 1000000 sat"):
        signer.sign_payout(payout.psbt, payout.payments, **LOOSE)
    assert audit_lines(audit_path) == []
    (refusal,) = refusals(audit_path)
    assert refusal["error_type"] == "LimitExceeded" and "90999" in refusal["reason"]
    signer = make_signer(max_tx_sat=91_000, max_daily_sat=1_000_000)
    signer.sign_payout(payout.psbt, payout.payments, **LOOSE)


def test_daily_cap_rolls_and_survives_a_restart(make_signer: Callable[..., HotSigner],
                                                builder: Builder, clock: Clock) -> None:
    caps = {"max_tx_sat": 100_000, "max_daily_sat": 250_000}
    signer = make_signer(**caps)
    payouts = [hot_payout(builder, k, 80_000) for k in range(5)]  # 81 000 leave each
    for psbt, payments in payouts[:3]:
        signer.sign_payout(psbt, payments, **LOOSE)
        clock.now += timedelta(hours=1)
    assert signer.limits()["used_24h_sat"] == 243_000
    psbt, payments = payouts[3]
    refused = r"only 7000 sat of the signer's rolling 24-hour cap of 250000 sat are left"
    with pytest.raises(LimitExceeded, match=refused):
        signer.sign_payout(psbt, payments, **LOOSE)
    # A restart rebuilds the window from the audit log: still refused.
    restarted = make_signer(**caps)
    assert restarted.limits() == {"max_tx_sat": 100_000, "max_daily_sat": 250_000,
                                  "used_24h_sat": 243_000, "left_24h_sat": 7_000}
    with pytest.raises(LimitExceeded, match=refused):
        restarted.sign_payout(psbt, payments, **LOOSE)
    # Once the first signature is more than 24 hours old, its 81 000 sat are free again.
    clock.now += timedelta(hours=21, seconds=1)
    assert restarted.limits()["used_24h_sat"] == 162_000
    restarted.sign_payout(psbt, payments, **LOOSE)
    with pytest.raises(LimitExceeded):
        restarted.sign_payout(*payouts[4], **LOOSE)


def test_resigning_the_same_transaction_counts_once(make_signer: Callable[..., HotSigner],
                                                    builder: Builder) -> None:
    caps = {"max_tx_sat": 100_000, "max_daily_sat": 100_000}
    signer = make_signer(**caps)
    psbt, payments = hot_payout(builder, 0, 80_000)
    first = signer.sign_payout(psbt, payments, **LOOSE)
    for again in (signer, make_signer(**caps)):  # after a crash, before or after a restart
        assert again.sign_payout(psbt, payments, **LOOSE).txid == first.txid
        assert again.limits()["used_24h_sat"] == 81_000
    with pytest.raises(LimitExceeded, match="only 19000 sat"):
        signer.sign_payout(*hot_payout(builder, 1, 80_000), **LOOSE)


def test_fee_bump_counts_only_the_difference(make_signer: Callable[..., HotSigner],
                                             builder: Builder) -> None:
    signer = make_signer(max_tx_sat=100_000, max_daily_sat=94_000)
    first = builder.payout(fee=1_000)  # 91 000 leave
    bumped = builder.payout(fee=3_000)  # same inputs and payments: 93 000
    signer.sign_payout(first.psbt, first.payments, **LOOSE)
    signer.sign_payout(bumped.psbt, bumped.payments, **LOOSE)
    assert signer.limits()["used_24h_sat"] == 93_000
    assert make_signer(max_tx_sat=100_000, max_daily_sat=94_000).limits()[
        "used_24h_sat"] == 93_000
    too_much = builder.payout(fee=4_001)  # 2 001 more than the largest version: 1 000 left
    with pytest.raises(LimitExceeded, match="of which 93000 sat were counted for an earlier "
                                            "version"):
        signer.sign_payout(too_much.psbt, too_much.payments, **LOOSE)
    # a different spend (1 100 sat leave) is not a version of it and counts in full
    with pytest.raises(LimitExceeded):
        signer.sign_payout(*hot_payout(builder, 9, 600, fee=500), **LOOSE)


def test_a_sweeps_fee_counts(make_signer: Callable[..., HotSigner], builder: Builder) -> None:
    signer = make_signer(max_tx_sat=5_000, max_daily_sat=6_000)
    _, psbt = sweep(builder, fee=5_001)
    with pytest.raises(LimitExceeded, match="payments 0 sat \\+ fee 5001 sat"):
        signer.sign_payout(psbt, [], **LOOSE)
    _, psbt = sweep(builder, fee=5_000)
    signer.sign_payout(psbt, [], **LOOSE)
    assert signer.limits()["used_24h_sat"] == 5_000


def test_window_from_older_audit_lines_and_a_damaged_log(audit_path: Path, clock: Clock
                                                         ) -> None:
    old = {"event": "sign_payout", "time": (clock.now - timedelta(hours=1)).isoformat(),
           "txid": "ab" * 32, "fee_sat": 300, "inputs": [{"outpoint": "cd" * 32 + ":0"}],
           "outputs": [{"kind": "payment", "amount_sat": 20_000},
                       {"kind": "change", "amount_sat": 5_000}]}  # before leaving_sat
    expired = {**old, "time": (clock.now - timedelta(hours=25)).isoformat(),
               "txid": "ef" * 32, "inputs": [{"outpoint": "01" * 32 + ":0"}]}
    refusal = {"event": "refused", "time": clock.now.isoformat(), "reason": "x"}
    audit_path.write_text("".join(json.dumps(r) + "\n" for r in (expired, old, refusal)))
    assert HotSigner(SEED, NETWORK, audit_log=audit_path, clock=clock).limits()[
        "used_24h_sat"] == 20_300
    with audit_path.open("a") as fh:
        fh.write('{"event": "sign_payout", "time": \n')
    with pytest.raises(AuditLogError, match="line 4"):
        HotSigner(SEED, NETWORK, audit_log=audit_path, clock=clock)


def test_an_audit_line_with_an_impossible_amount_is_refused_clearly(audit_path: Path,
                                                                     clock: Clock) -> None:
    """Found from outside (a sibling of the backup manifest's ``"bytes": Infinity``): a
    signature line whose ``leaving_sat`` was ``Infinity`` stopped the signer's start with
    OverflowError, and a negative one lowered the day's spending to below what was signed."""
    line = {"event": "sign_payout", "time": clock.now.isoformat(), "txid": "ab" * 32,
            "fee_sat": 300, "inputs": [{"outpoint": "cd" * 32 + ":0"}],
            "outputs": [{"kind": "payment", "amount_sat": 20_000}], "leaving_sat": "@@"}
    older = {k: v for k, v in line.items() if k != "leaving_sat"}
    for value in ("Infinity", "-Infinity", "NaN", "1e400", "-1", "1.5", "true", '"20300"'):
        for bad in ({**line}, {**older, "fee_sat": "@@"},
                    {**older, "outputs": [{"kind": "payment", "amount_sat": "@@"}]}):
            audit_path.write_text(json.dumps(bad).replace('"@@"', value) + "\n")
            with pytest.raises(AuditLogError, match=r"line 1|cannot be read"):
                HotSigner(SEED, NETWORK, audit_log=audit_path, clock=clock)


def test_caps_must_be_positive() -> None:
    for caps in ({"max_tx_sat": 0}, {"max_daily_sat": -1}, {"max_tx_sat": 1.5}):
        with pytest.raises(ValueError, match="positive whole number"):
            HotSigner(SEED, NETWORK, **caps)  # type: ignore[arg-type]


# ------------------------------------------------------------------ the refusal log
def test_refusal_lines_and_the_refusals_command(make_signer: Callable[..., HotSigner],
                                                builder: Builder, audit_path: Path) -> None:
    signer = make_signer(max_tx_sat=50_000)
    payout = builder.payout()
    with pytest.raises(LimitExceeded):
        signer.sign_payout(payout.psbt, payout.payments, **LOOSE)
    with pytest.raises(SigningRefused):
        signer.sign_payout("garbage", [Payment(PAY_B, 5, "wd_g")], **LOOSE)
    first, second = refusals(audit_path)
    assert set(first) == {"event", "time", "network", "error_type", "reason", "txid",
                          "inputs", "outputs", "payments", "max_fee_sat",
                          "max_feerate_sat_vb"}
    assert first["txid"] == PSBT.from_string(payout.psbt).tx.txid().hex()
    assert [i["value_sat"] for i in first["inputs"]] == [i.value_sat for i in payout.inputs]
    assert [o["amount_sat"] for o in first["outputs"]] == [o.amount_sat for o in payout.outputs]
    assert [p["ref"] for p in first["payments"]] == ["wd_a", "wd_b"]
    assert second["error_type"] == "InvalidPsbt" and "txid" not in second
    assert second["payments"][0]["ref"] == "wd_g"
    text = audit_path.read_text()
    assert SEED.hex() not in text and MNEMONIC.split()[0] + " " not in text

    runner = CliRunner()
    lines = runner.invoke(app, ["refusals", "--audit-log", str(audit_path)])
    assert lines.exit_code == 0, lines.output
    assert [json.loads(x) for x in lines.stdout.splitlines()] == [first, second]
    listed = runner.invoke(app, ["refusals", "--audit-log", str(audit_path), "--list"])
    assert json.loads(listed.stdout) == [first, second]
    missing = runner.invoke(app, ["refusals", "--audit-log", str(audit_path) + ".nope"])
    assert missing.exit_code == 1 and json.loads(missing.stdout)["type"] == "AuditLogError"
