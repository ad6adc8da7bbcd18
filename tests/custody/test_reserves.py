"""BIP127 proofs of reserves over hot and cold coins on simnet: built from the books, hot
coins signed by the hot signer, cold coins by the cosigners, verified against the chain."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json

import pytest
from embit.psbt import PSBT
from embit.script import Script, Witness
from embit.transaction import Transaction
from typer.testing import CliRunner

from satvault.backends.errors import TxRejected
from satvault.cli import app
from satvault.config import reset_settings_cache
from satvault.custody.cold import ColdInput, ColdOutput, combine, finalize, make_cold_psbt
from satvault.custody.errors import ProofRejected
from satvault.custody.reserves import build_proof, finalize_proof, verify_proof
from satvault.custody.reserves_service import prove_reserves
from satvault.onchain.bip127 import commitment_outpoint, display_txid
from satvault.onchain.service import allocate_address, register_wallet
from satvault.signer.core import HotSigner
from satvault.signer.server import start_server
from satvault.signing import UnixSocketSigner
from satvault.signing.errors import InvalidPsbt, OutputMismatch, UnknownInput
from satvault.signing.psbt import PsbtInput, accounts_from_descriptors
from tests.chainenv import SEED
from tests.custody.conftest import NETWORK
from tests.custody.test_cold import cli_sign, embit_sign, fund

runner = CliRunner()
MESSAGE = "satvault reserves, 2025-06-30"


async def hot_coin(env, sat: int) -> None:
    async with env.sessions() as s, s.begin():
        alloc = await allocate_address(s, role="hot", owner_type="platform", owner_id="hot",
                                       purpose="funding", request_id=None)
    env.chain.pay(alloc.address, sat)


async def books(env, cold_wallet, *, hot=(120_000, 80_000), cold=(300_000,)):
    """Register the cold wallet, pay the hot and cold coins, mine, let the watcher see them."""
    async with env.sessions() as s, s.begin():
        await register_wallet(s, role="cold", descriptor=cold_wallet.descriptor,
                              network=NETWORK)
    for sat in hot:
        await hot_coin(env, sat)
    coins = []
    for index, sat in enumerate(cold):
        txid, vout = await fund(env, cold_wallet.derive(0, index).address, sat)
        coins.append(ColdInput(txid, vout, sat, 0, index))
    env.chain.mine(1)
    await env.runtime.watcher.step()
    return coins


async def full_proof(env, tmp_path, cosigners, cold_wallet) -> tuple[str, list[ColdInput]]:
    coins = await books(env, cold_wallet)
    draft = await prove_reserves(env.sessions, env.signer, message=MESSAGE, network=NETWORK)
    assert not draft.complete and (draft.hot_coins, draft.cold_coins) == (2, 1)
    assert draft.total_sat == 500_000
    a, b, _ = cosigners
    signed_a = cli_sign(tmp_path, draft.psbt_b64, a)
    signed_b = embit_sign(draft.psbt_b64, b)
    final = finalize_proof([draft.psbt_b64, signed_a, signed_b], cold_wallet=cold_wallet)
    assert final.message == MESSAGE
    return final.psbt_b64, coins


# ------------------------------------------------------------------------------ BIP127 itself

def test_the_commitment_is_sha256_of_the_prefixed_message_in_serialized_order():
    # The BIP's own example message (its footnote): SHA-256("Proof-of-Reserves: Some Message").
    digest = hashlib.sha256(b"Proof-of-Reserves: Some Message").digest()
    assert commitment_outpoint("Some Message") == (digest, 0)
    assert display_txid("Some Message") == digest[::-1].hex()
    psbt = PSBT.from_string(build_proof(
        "Some Message", cold=[ColdInput("22" * 32, 1, 1_000, 0, 0)],
        cold_wallet=_wallet(), network=NETWORK))
    raw = psbt.tx.serialize()
    # version (4 bytes), input count (1), then input 0's outpoint: the digest as is, vout 0.
    assert raw[5:37] == digest and raw[37:41] == b"\0\0\0\0"
    assert psbt.inputs[0].unknown[b"\x09"] == b"Some Message"  # PSBT_IN_POR_COMMITMENT
    assert len(psbt.tx.vout) == 1 and psbt.tx.vout[0].value == 1_000
    # BDK's published vector for "This belongs to me." serializes its commitment as
    # 6c3546f1…5e: SHA-256d's bytes, as is. Same byte order as ours; another hash.
    bdk_outpoint = "6c3546f1b85337e749a7e9c7ad843d3ca16ba56c94fd04afb9f74f18c4a5e05e"
    once = b"Proof-of-Reserves: This belongs to me."
    assert hashlib.sha256(hashlib.sha256(once).digest()).hexdigest() == bdk_outpoint
    assert commitment_outpoint("This belongs to me.")[0].hex() != bdk_outpoint


def _wallet():
    from satvault.custody.cold import ColdWallet
    from satvault.custody.offline import build_descriptor
    from tests.custody.conftest import make_cosigners

    return ColdWallet.from_descriptor(
        build_descriptor(2, [c.key_line for c in make_cosigners(3)], NETWORK), NETWORK)


# ------------------------------------------------------------------------------ on simnet

async def test_prove_hot_and_cold_coins_and_verify_the_total(env, tmp_path, cosigners,
                                                            cold_wallet):
    proof, _ = await full_proof(env, tmp_path, cosigners, cold_wallet)
    result = await verify_proof(proof, None, env.runtime.backend)
    assert result.total_sat == 500_000 and result.message == MESSAGE
    assert sorted(i.kind for i in result.inputs) == ["p2wpkh", "p2wpkh",
                                                     "p2wsh-multisig 2-of-3"]
    assert result.at_block == (await env.runtime.backend.tip()).height
    # The proof is refused by the node (it burns its coins to OP_RETURN, and its commitment
    # input spends nothing: it can never be mined).
    tx = _tx(proof)
    with pytest.raises(TxRejected):
        await env.runtime.backend.broadcast(tx.serialize().hex())
    # A raw transaction with --message verifies too.
    again = await verify_proof(tx.serialize().hex(), MESSAGE, env.runtime.backend)
    assert again.total_sat == 500_000


async def test_the_cosigner_sees_a_proof_of_reserves(env, tmp_path, cosigners, cold_wallet):
    from satvault.custody.offline import sign_cold

    await books(env, cold_wallet)
    draft = await prove_reserves(env.sessions, env.signer, message=MESSAGE, network=NETWORK)
    result = sign_cold(draft.psbt_b64, cosigners[2].root, NETWORK)
    assert result.proof_message == MESSAGE
    assert "PROOF OF RESERVES" in result.summary and "nothing is spent" in result.summary
    assert "2 hot, signed by the hot signer" in result.summary


async def test_a_hot_only_proof_is_complete_at_once(env):
    await hot_coin(env, 70_000)
    env.chain.mine(1)
    await env.runtime.watcher.step()
    draft = await prove_reserves(env.sessions, env.signer, message=MESSAGE, network=NETWORK)
    assert draft.complete and draft.total_sat == 70_000
    assert (await verify_proof(draft.psbt_b64, MESSAGE, env.runtime.backend)).total_sat \
        == 70_000


def _tx(proof_b64: str) -> Transaction:
    from satvault.custody.cold import extract, read_psbt

    return extract(read_psbt(proof_b64))


async def test_tampered_proofs_are_refused(env, tmp_path, cosigners, cold_wallet):
    proof, _ = await full_proof(env, tmp_path, cosigners, cold_wallet)
    backend = env.runtime.backend
    # Another message.
    with pytest.raises(ProofRejected, match="not the commitment to the message 'other'"):
        await verify_proof(proof, "other", backend)
    # A changed amount.
    tx = _tx(proof)
    tx.vout[0].value += 1
    with pytest.raises(ProofRejected, match=r"output claims 500001 sat.*hold 500000"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # An output someone could spend (found from outside: only its count and value were read).
    tx = _tx(proof)
    tx.vout[0].script_pubkey = Script(b"\x00\x14" + bytes(20))
    with pytest.raises(ProofRejected, match="OP_RETURN"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # The two hot coins' signatures swapped (each witness onto the other coin).
    tx = _tx(proof)
    hot = [i for i in range(1, 4) if len(tx.vin[i].witness.items) == 2]
    tx.vin[hot[0]].witness, tx.vin[hot[1]].witness = tx.vin[hot[1]].witness, \
        tx.vin[hot[0]].witness
    with pytest.raises(ProofRejected, match=f"input {hot[0]}"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # One hot signature replaced by the other coin's (right key, wrong signature).
    tx = _tx(proof)
    sig_other = tx.vin[hot[1]].witness.items[0]
    tx.vin[hot[0]].witness = Witness([sig_other, tx.vin[hot[0]].witness.items[1]])
    with pytest.raises(ProofRejected, match="does not verify"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # The cold signatures out of CHECKMULTISIG order, or one missing.
    tx = _tx(proof)
    cold = next(i for i in range(1, 4) if len(tx.vin[i].witness.items) == 4)
    empty, s1, s2, ws = tx.vin[cold].witness.items
    tx.vin[cold].witness = Witness([empty, s2, s1, ws])
    with pytest.raises(ProofRejected, match=f"input {cold}: signature 2 verifies for none"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    tx.vin[cold].witness = Witness([empty, s1, ws])
    with pytest.raises(ProofRejected, match="1 signatures for a 2-of-3"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # A signed commitment input is not BIP127.
    tx = _tx(proof)
    tx.vin[0].witness = Witness([b"\x01"])
    with pytest.raises(ProofRejected, match="must have no scriptSig or witness"):
        await verify_proof(tx.serialize().hex(), MESSAGE, backend)
    # The untouched proof still verifies.
    assert (await verify_proof(proof, MESSAGE, backend)).total_sat == 500_000


async def test_a_coin_spent_before_the_block_is_refused_and_after_it_accepted(
        env, tmp_path, cosigners, cold_wallet):
    proof, coins = await full_proof(env, tmp_path, cosigners, cold_wallet)
    backend = env.runtime.backend
    n = (await backend.tip()).height
    env.chain.mine(2)
    # The cold coin is spent at n + 3 (two cosigners sign a spend).
    a, b, _ = cosigners
    coin = dataclasses.replace(coins[0],
                               prev_tx=await backend.raw_transaction(coins[0].txid))
    spend = make_cold_psbt([coin], [ColdOutput(b"\x00\x14" + bytes(20), 299_000)],
                           wallet=cold_wallet, network=NETWORK)
    final = finalize(combine([embit_sign(spend, a), embit_sign(spend, b)]), cold_wallet)
    await backend.broadcast(final.raw_hex)
    env.chain.mine(1)
    spent_height = n + 3
    ok = await verify_proof(proof, MESSAGE, backend, at_block=n)
    assert ok.total_sat == 500_000
    assert [i.spent_at for i in ok.inputs if i.kind.startswith("p2wsh")] == [spent_height]
    assert (await verify_proof(proof, MESSAGE, backend, at_block=spent_height - 1)).total_sat \
        == 500_000
    with pytest.raises(ProofRejected, match=f"spent at or before block {spent_height}"):
        await verify_proof(proof, MESSAGE, backend, at_block=spent_height)
    with pytest.raises(ProofRejected, match="spent at or before block"):
        await verify_proof(proof, MESSAGE, backend)  # at the tip
    # A coin confirmed after N is refused as well.
    with pytest.raises(ProofRejected, match="after block"):
        await verify_proof(proof, MESSAGE, backend, at_block=n - 2)


async def test_the_reserves_commands(env, tmp_path, cosigners, cold_wallet, monkeypatch):
    await books(env, cold_wallet)
    draft = await prove_reserves(env.sessions, env.signer, message=MESSAGE, network=NETWORK)
    unsigned = tmp_path / "proof.psbt"
    unsigned.write_text(draft.psbt_b64)
    a, _, c = cosigners
    signed = [tmp_path / "a.psbt", tmp_path / "c.psbt"]
    signed[0].write_text(cli_sign(tmp_path, draft.psbt_b64, a))
    signed[1].write_text(cli_sign(tmp_path, draft.psbt_b64, c))
    out = tmp_path / "reserves.proof"
    for name, value in (("SATVAULT_NETWORK", NETWORK), ("SATVAULT_CHAIN_BACKEND", "bitcoind"),
                        ("SATVAULT_BITCOIND_URL", env.server.url),
                        ("SATVAULT_HOME", str(tmp_path))):
        monkeypatch.setenv(name, value)
    reset_settings_cache()
    try:
        r = runner.invoke(app, ["reserves", "finalize", str(unsigned), *map(str, signed),
                                "--out", str(out), "--descriptor", cold_wallet.descriptor])
        assert r.exit_code == 0, r.output
        # asyncio.run inside the command: run it off this test's event loop.
        r = await asyncio.to_thread(runner.invoke, app, ["reserves", "verify", str(out)])
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
        assert report["valid"] and report["total_sat"] == 500_000
        assert report["message"] == MESSAGE
        r = await asyncio.to_thread(runner.invoke, app, ["reserves", "verify", str(out),
                                                         "--message", "another"])
        assert r.exit_code == 1
        assert "not the commitment to the message 'another'" in json.loads(r.stdout)["error"]
        # One cosigner is not enough to finalize.
        r = runner.invoke(app, ["reserves", "finalize", str(unsigned), str(signed[0]),
                                "--out", str(tmp_path / "x"), "--descriptor",
                                cold_wallet.descriptor])
        assert r.exit_code == 1 and "1 of 2 signatures" in r.stdout
    finally:
        reset_settings_cache()


# ------------------------------------------------------------------------------ hot signer

def _hot_proof(signer: HotSigner, *, output: bytes = b"\x6a", extra_output: bool = False,
               value_delta: int = 0) -> str:
    accounts = accounts_from_descriptors(signer.descriptors(), NETWORK)
    pub = accounts["hot"].pubkey(0, 4)
    spk = b"\x00\x14" + hashlib.new("ripemd160", hashlib.sha256(pub).digest()).digest()
    coin = PsbtInput("33" * 32, 0, 50_000, spk, "hot", 0, 4)
    psbt = PSBT.from_string(build_proof(MESSAGE, hot=[coin], hot_accounts=accounts,
                                        network=NETWORK))
    psbt.outputs[0].script_pubkey = Script(output)
    psbt.outputs[0].value += value_delta
    if extra_output:
        from embit.psbt import OutputScope
        from embit.transaction import TransactionOutput

        psbt.outputs.append(OutputScope(vout=TransactionOutput(1, Script(b"\x6a"))))
    return str(psbt.to_base64())


def test_the_hot_signer_signs_only_a_proof_that_can_never_spend():
    signer = HotSigner(SEED, NETWORK)
    signed = PSBT.from_string(signer.sign_reserves(_hot_proof(signer), MESSAGE))
    assert signed.inputs[1].final_scriptwitness is not None
    assert not signed.inputs[0].final_scriptwitness  # the commitment stays unsigned
    with pytest.raises(InvalidPsbt, match="not the BIP127 commitment"):
        signer.sign_reserves(_hot_proof(signer), "another message")
    with pytest.raises(OutputMismatch, match="unspendable"):
        signer.sign_reserves(_hot_proof(signer, output=b"\x00\x14" + bytes(20)), MESSAGE)
    with pytest.raises(OutputMismatch, match="exactly one output"):
        signer.sign_reserves(_hot_proof(signer, extra_output=True), MESSAGE)
    with pytest.raises(OutputMismatch, match="no fee"):
        signer.sign_reserves(_hot_proof(signer, value_delta=-1), MESSAGE)
    anyone = PSBT.from_string(_hot_proof(signer))
    anyone.inputs[1].sighash_type = 0x81
    with pytest.raises(InvalidPsbt, match="only ALL"):
        signer.sign_reserves(str(anyone.to_base64()), MESSAGE)
    other = HotSigner(bytes(range(1, 65)), NETWORK)
    with pytest.raises(UnknownInput, match="nothing to sign"):
        other.sign_reserves(_hot_proof(signer), MESSAGE)


async def test_sign_reserves_over_the_signer_socket(tmp_path):
    signer = HotSigner(SEED, NETWORK, audit_log=tmp_path / "audit.jsonl")
    path = tmp_path / "s.sock"
    server = await start_server(path, signer)
    try:
        remote = UnixSocketSigner(path, timeout=5)
        proof = _hot_proof(signer)
        assert await remote.sign_reserves(proof, MESSAGE) == signer.sign_reserves(proof, MESSAGE)
        with pytest.raises(InvalidPsbt, match="not the BIP127 commitment"):
            await remote.sign_reserves(proof, "another")
    finally:
        server.close()
        await server.wait_closed()
    lines = [json.loads(x) for x in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [x["event"] for x in lines] == ["sign_reserves", "sign_reserves"]
    assert lines[0]["message"] == MESSAGE and lines[0]["total_sat"] == 50_000
