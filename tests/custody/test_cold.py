"""The cold ceremony: descriptor, PSBT, signatures from three independent implementations
(``satvault cold sign``, embit's own signer, BDK), combine, finalize, broadcast on simnet."""

from __future__ import annotations

import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import bdkpython as bdk
import pytest
import segno
from embit import bip32, ec
from embit.psbt import PSBT, DerivationPath
from embit.script import Script
from typer.testing import CliRunner

from satvault.cli import app
from satvault.custody.cold import (
    QR_SINGLE_MAX_CHARS,
    ColdInput,
    ColdOutput,
    ColdWallet,
    KeyOrigin,
    check_outputs,
    combine,
    export_files,
    finalize,
    make_cold_psbt,
    read_psbt,
    signature_count,
)
from satvault.custody.errors import (
    BadSignature,
    ColdWalletError,
    NotEnoughSignatures,
    PsbtMismatch,
    SigningRefused,
)
from satvault.custody.offline import build_descriptor, sign_cold
from satvault.onchain.descriptors import parse_wallet
from satvault.onchain.service import allocate_address
from satvault.signing.psbt import accounts_from_descriptors
from tests.custody.conftest import NETWORK, Cosigner, cold_coin, make_cosigners
from tests.custody.qrread import modules, read_qr

runner = CliRunner()


# ------------------------------------------------------------------------------ helpers

def embit_sign(psbt_b64: str, cosigner: Cosigner) -> str:
    """Cosigner B: embit's own BIP174 signer, no satvault code involved."""
    psbt = PSBT.from_string(psbt_b64)
    assert psbt.sign_with(cosigner.root) >= 1
    return str(psbt.to_base64())


def bdk_sign(psbt_b64: str, wallet: ColdWallet, signer: Cosigner, others: list[Cosigner]
             ) -> str:
    """Cosigner C: BDK (Rust, through bdkpython) with a private descriptor holding this
    cosigner's account tprv and the others' tpubs."""
    def desc(chain: int) -> bdk.Descriptor:
        keys = []
        for c in [signer, *others]:
            origin = c.key_line.split("]")[0] + "]"
            secret = c.account_tprv if c is signer else c.key_line.split("]")[1]
            keys.append(f"{origin}{secret}/{chain}/*")
        return bdk.Descriptor(f"wsh(sortedmulti({wallet.threshold},{','.join(keys)}))",
                              bdk.NetworkKind.TEST)

    w = bdk.Wallet(desc(0), desc(1), bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    psbt = bdk.Psbt(psbt_b64)
    options = bdk.SignOptions(trust_witness_utxo=True, assume_height=None,
                              allow_all_sighashes=False, try_finalize=False,
                              sign_with_tap_internal_key=False, allow_grinding=True)
    w.sign(psbt, options)
    return str(psbt.serialize())


def cli_sign(tmp: Path, psbt_b64: str, cosigner: Cosigner, descriptor: str | None = None
             ) -> str:
    """Cosigner A: ``satvault cold sign`` through the command line (with the wallet's
    descriptor from a file, if given)."""
    src = tmp / f"to-{cosigner.name}.psbt"
    src.write_text(psbt_b64)
    out = tmp / f"from-{cosigner.name}.psbt"
    extra: list[str] = []
    if descriptor is not None:
        (tmp / "cold.descriptor").write_text(descriptor + "\n")
        extra = ["--descriptor", f"@{tmp / 'cold.descriptor'}"]
    result = runner.invoke(app, ["cold", "sign", str(src), "--seed-file",
                                 str(cosigner.seed_file(tmp)), "--out", str(out),
                                 "--network", NETWORK, *extra])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["ok"] and report["signed_inputs"]
    return out.read_text().strip()


async def fund(env, address: str, sat: int) -> tuple[str, int]:
    txid = env.chain.pay(address, sat)
    env.chain.mine(1)
    status = await env.runtime.backend.transaction(txid)
    spk = parse_wallet_address_script(address)
    vout = next(n for n, o in enumerate(status.tx.outputs) if o.script_pubkey == spk)
    return txid, vout


def parse_wallet_address_script(address: str) -> bytes:
    from satvault.onchain.addresses import parse_address

    return parse_address(address, NETWORK).script_pubkey


async def hot_target(env) -> tuple[bytes, KeyOrigin]:
    """A hot-wallet receive address and the hot signer's derivation for it."""
    async with env.sessions() as s, s.begin():
        alloc = await allocate_address(s, role="hot", owner_type="platform", owner_id="hot",
                                       purpose="funding", request_id=None)
    hot = accounts_from_descriptors(await env.signer.descriptors(), NETWORK)["hot"]
    pub = hot.pubkey(0, alloc.index)
    spk = parse_wallet_address_script(alloc.address)
    return spk, KeyOrigin(pub, hot.fingerprint, (*hot.path, 0, alloc.index))


# ------------------------------------------------------------------------------ the wallet

def test_descriptor_gives_each_cosigners_origin_and_the_sortedmulti_script(cosigners,
                                                                           cold_wallet):
    assert (cold_wallet.threshold, cold_wallet.n) == (2, 3)
    addr = cold_wallet.derive(0, 5)
    # The address the on-chain side derives from the same descriptor, and BDK's own.
    assert addr.address == parse_wallet(cold_wallet.descriptor, NETWORK).derive(5).address
    public = cold_wallet.descriptor.split("#")[0].replace("<0;1>", "0")
    w = bdk.Wallet(bdk.Descriptor(public, bdk.NetworkKind.TEST),
                   bdk.Descriptor(public.replace("/0/*", "/1/*"), bdk.NetworkKind.TEST),
                   bdk.Network.REGTEST, bdk.Persister.new_in_memory())
    assert str(w.peek_address(bdk.KeychainKind.EXTERNAL, 5).address) == addr.address
    # Keys sorted, each with its cosigner's fingerprint and full path, derivable from its seed.
    assert [k.pubkey for k in addr.keys] == sorted(k.pubkey for k in addr.keys)
    roots = {c.root.my_fingerprint: c.root for c in cosigners}
    for key in addr.keys:
        assert key.path == (48 | 1 << 31, 1 | 1 << 31, 1 << 31, 2 | 1 << 31, 0, 5)
        assert roots[key.fingerprint].derive(list(key.path)).get_public_key().sec() == key.pubkey
    ws = addr.witness_script
    assert ws[0] == 0x52 and ws[-2:] == bytes([0x53, 0xAE])


@pytest.mark.parametrize("mutate, reason", [
    (lambda d: d.replace("sortedmulti", "multi"), "multi()"),
    (lambda d: "wpkh(" + d.split(",")[1] + ")", "wpkh"),
    (lambda d: re.sub(r"\[[0-9a-f]{8}/48h/1h/0h/2h\]", "", d, count=1), "no origin"),
    # Found from outside: the web side took 1-of-n (and the CLI built it), which the signer
    # refuses: one cosigner alone would spend the cold coins.
    (lambda d: d.replace("sortedmulti(2,", "sortedmulti(1,"), "at least two"),
    (lambda d: "wsh(sortedmulti(1," + d.split(",")[1] + "))", "at least two"),
])
def test_descriptors_that_are_not_a_usable_cold_wallet_are_refused(cold_wallet, mutate, reason):
    text = mutate(cold_wallet.descriptor.split("#")[0])
    with pytest.raises(ColdWalletError, match=reason):
        ColdWallet.from_descriptor(text, NETWORK)


def test_one_seed_cannot_hold_two_votes(cosigners):
    a = cosigners[0]
    second = a.root.derive("m/48h/1h/1h/2h").to_public().to_base58(
        version=bytes.fromhex("043587cf"))
    line = f"[{a.root.my_fingerprint.hex()}/48h/1h/1h/2h]{second}"
    with pytest.raises(ColdWalletError, match="one seed would hold two votes"):
        build_descriptor(2, [a.key_line, line, cosigners[1].key_line], NETWORK)


def test_keygen_and_descriptor_commands(tmp_path):
    lines = []
    for k in range(3):
        seed = tmp_path / f"c{k}.seed"
        r = runner.invoke(app, ["cold", "keygen", "--out", str(seed), "--network", NETWORK])
        assert r.exit_code == 0, r.output
        report = json.loads(r.stdout)
        assert report["key"].startswith(f"[{report['fingerprint']}/48h/1h/0h/2h]tpub")
        assert oct(seed.stat().st_mode & 0o777) == "0o600"
        assert len(seed.read_text().split()) == 24
        lines.append(report["key"])
    again = runner.invoke(app, ["cold", "keygen", "--out", str(tmp_path / "c0.seed")])
    assert again.exit_code == 1 and "refusing to overwrite" in again.stdout
    nowhere = runner.invoke(app, ["cold", "keygen", "--out", str(tmp_path / "no" / "c.seed")])
    assert nowhere.exit_code == 1 and "cannot write" in json.loads(nowhere.stdout)["error"]
    one = runner.invoke(app, ["cold", "descriptor", "--m", "1", *lines, "--network", NETWORK])
    assert one.exit_code != 0 and "descriptor" not in one.stdout
    r = runner.invoke(app, ["cold", "descriptor", "--m", "2", *lines, "--network", NETWORK])
    assert r.exit_code == 0, r.output
    report = json.loads(r.stdout)
    wallet = ColdWallet.from_descriptor(report["descriptor"], NETWORK)
    assert (wallet.threshold, wallet.n) == (2, 3)
    assert report["first_address"] == wallet.derive(0, 0).address


# ------------------------------------------------------------------------------ on simnet

async def test_a_2_of_3_spend_to_the_hot_wallet_signed_by_three_implementations(
        env, tmp_path, cosigners, cold_wallet):
    a, b, c = cosigners
    addr = cold_wallet.derive(0, 0)
    txid, vout = await fund(env, addr.address, 500_000)
    hot_spk, hot_origin = await hot_target(env)
    change = cold_wallet.derive(1, 0)
    unsigned = make_cold_psbt(
        [ColdInput(txid, vout, 500_000, 0, 0, addr.script_pubkey,
                   await env.runtime.backend.raw_transaction(txid))],
        [ColdOutput(hot_spk, 300_000, derivations=(hot_origin,)),
         ColdOutput(change.script_pubkey, 199_000, cold_change_index=0)],
        wallet=cold_wallet, network=NETWORK)
    psbt = read_psbt(unsigned)
    assert psbt.tx.version == 2 and psbt.tx.vin[0].sequence == 0xFFFFFFFD
    assert len(psbt.inputs[0].bip32_derivations) == 3
    assert bytes(psbt.inputs[0].witness_script.data) == addr.witness_script
    assert len(psbt.outputs[1].bip32_derivations) == 3  # cold change, recognisable
    assert [d.fingerprint for d in psbt.outputs[0].bip32_derivations.values()] \
        == [hot_origin.fingerprint]

    from_a = cli_sign(tmp_path, unsigned, a, cold_wallet.descriptor)  # the change proven
    from_b = embit_sign(unsigned, b)
    from_c = bdk_sign(unsigned, cold_wallet, c, [a, b])
    for signed, who in ((from_a, a), (from_b, b), (from_c, c)):
        [count] = signature_count(signed, cold_wallet)
        assert (count.valid, count.needed, count.signers) == (1, 2,
                                                              (who.root.my_fingerprint.hex(),))

    # One signature is not enough.
    with pytest.raises(NotEnoughSignatures, match="input 0: 1 of 2 signatures"):
        finalize(from_a, cold_wallet)

    merged = combine([from_a, from_c], names=["a.psbt", "c.psbt"])
    check_outputs(merged, unsigned)
    assert signature_count(merged, cold_wallet)[0].valid == 2
    final = finalize(merged, cold_wallet)
    assert final.txid == bytes(psbt.tx.txid()).hex()  # segwit: signing keeps the txid
    assert await env.runtime.backend.broadcast(final.raw_hex) == final.txid
    env.chain.mine(1)
    status = await env.runtime.backend.transaction(final.txid)
    assert status is not None and status.confirmations == 1
    assert [(o.value_sat, o.script_pubkey) for o in status.tx.outputs] == \
        [(300_000, hot_spk), (199_000, change.script_pubkey)]
    assert await env.runtime.backend.output(txid, vout) is None  # the cold coin is spent

    # A and B (embit) make a valid pair too, and all three together finalize with two.
    assert finalize(combine([from_a, from_b]), cold_wallet).txid == final.txid
    three = finalize(combine([from_b, from_c, from_a]), cold_wallet)
    assert len(read_psbt(three.psbt_b64).inputs[0].final_scriptwitness.items) == 4


async def test_a_3_of_5_wallet_spends_on_simnet(env, tmp_path):
    five = make_cosigners(5)
    wallet = ColdWallet.from_descriptor(
        build_descriptor(3, [c.key_line for c in five], NETWORK), NETWORK)
    coins = []
    for index in (0, 1):
        addr = wallet.derive(0, index)
        txid, vout = await fund(env, addr.address, 100_000 * (index + 1))
        coins.append(ColdInput(txid, vout, 100_000 * (index + 1), 0, index,
                               prev_tx=await env.runtime.backend.raw_transaction(txid)))
    hot_spk, hot_origin = await hot_target(env)
    unsigned = make_cold_psbt(coins, [ColdOutput(hot_spk, 298_000, derivations=(hot_origin,))],
                              wallet=wallet, network=NETWORK)
    signed = [cli_sign(tmp_path, unsigned, five[0]), embit_sign(unsigned, five[3])]
    with pytest.raises(NotEnoughSignatures, match=r"input 0: 2 of 3.*input 1: 2 of 3"):
        finalize(combine(signed), wallet)
    signed.append(bdk_sign(unsigned, wallet, five[4], five[:4]))
    final = finalize(combine(signed), wallet)
    await env.runtime.backend.broadcast(final.raw_hex)
    env.chain.mine(1)
    assert (await env.runtime.backend.transaction(final.txid)).confirmations == 1


# ------------------------------------------------------------------------------ refusals

def _unsigned(wallet: ColdWallet, *, n_inputs: int = 1) -> str:
    coins = [cold_coin(wallet, k, 50_000, vout=k) for k in range(n_inputs)]
    return make_cold_psbt(coins, [ColdOutput(b"\x00\x14" + bytes(20), 40_000 * n_inputs)],
                          wallet=wallet, network=NETWORK)


def test_a_forged_or_misplaced_signature_is_refused_naming_input_and_key(cosigners,
                                                                         cold_wallet):
    a, b, _ = cosigners
    unsigned = _unsigned(cold_wallet)
    signed = PSBT.from_string(combine([embit_sign(unsigned, a), embit_sign(unsigned, b)])
                              .to_base64())
    scope = signed.inputs[0]
    (pub_a, sig_a), (pub_b, sig_b) = sorted(
        scope.partial_sigs.items(),
        key=lambda kv: kv[0].sec() != a.root.derive("m/48h/1h/0h/2h/0/0").key.sec())
    # Swapped: each key carries the other's signature.
    scope.partial_sigs[pub_a], scope.partial_sigs[pub_b] = sig_b, sig_a
    with pytest.raises(BadSignature, match=f"input 0: the signature of cosigner "
                                           f"{a.root.my_fingerprint.hex()}.*does not verify"):
        finalize(signed.to_base64(), cold_wallet)
    # A flipped bit in a DER signature.
    scope.partial_sigs[pub_a] = sig_a[:10] + bytes([sig_a[10] ^ 1]) + sig_a[11:]
    scope.partial_sigs[pub_b] = sig_b
    with pytest.raises(BadSignature, match="input 0"):
        signature_count(signed, cold_wallet)
    # SIGHASH_NONE is never accepted.
    scope.partial_sigs[pub_a] = sig_a[:-1] + b"\x02"
    with pytest.raises(BadSignature, match="only SIGHASH_ALL"):
        finalize(signed, cold_wallet)
    # A signature from a key that is not a cosigner of the input.
    stranger = bip32.HDKey.from_seed(bytes(32)).derive("m/0").key
    scope.partial_sigs[pub_a] = sig_a
    scope.partial_sigs[stranger.get_public_key()] = sig_a
    with pytest.raises(BadSignature, match="not one of this input's cosigners"):
        finalize(signed, cold_wallet)


def test_a_changed_output_or_another_transaction_is_refused(cosigners, cold_wallet):
    unsigned = _unsigned(cold_wallet)
    tampered = PSBT.from_string(embit_sign(unsigned, cosigners[0]))
    tampered.outputs[0].value = 45_000
    with pytest.raises(PsbtMismatch, match=r"output 0 pays 45000 sat.*asked for 40000 sat"):
        check_outputs(tampered, unsigned)
    expected = [(b"\x00\x14" + bytes(20), 40_000)]
    check_outputs(unsigned, expected)
    with pytest.raises(PsbtMismatch, match="output 0 pays 45000"):
        check_outputs(tampered, expected)
    with pytest.raises(PsbtMismatch, match=r"bob\.psbt is for transaction"):
        combine([unsigned, tampered.to_base64()], names=["alice.psbt", "bob.psbt"])
    other_inputs = _unsigned(cold_wallet, n_inputs=2)
    with pytest.raises(PsbtMismatch):
        check_outputs(other_inputs, unsigned)


def test_the_offline_signer_refuses_odd_psbts(cosigners, cold_wallet):
    a = cosigners[0]
    unsigned = _unsigned(cold_wallet)

    def broken(edit) -> str:
        p = PSBT.from_string(unsigned)
        edit(p)
        return str(p.to_base64())

    def no_script(p):
        p.inputs[0].witness_script = None

    def no_utxo(p):
        p.inputs[0].witness_utxo = None

    def extra_derivation(p):  # a derivation key that is not in the witness script
        stranger = bip32.HDKey.from_seed(bytes(32))
        p.inputs[0].bip32_derivations[stranger.get_public_key()] = \
            next(iter(p.inputs[0].bip32_derivations.values()))

    def sighash_none(p):
        p.inputs[0].sighash_type = 2

    cases = [(no_script, "no witness_script"), (no_utxo, "no witness_utxo"),
             (extra_derivation, "do not name exactly the witness script's keys"),
             (sighash_none, "only ALL")]
    for edit, reason in cases:
        with pytest.raises(SigningRefused, match=reason):
            sign_cold(broken(edit), a.root, NETWORK)
    outsider = make_cosigners(5)[4]
    with pytest.raises(SigningRefused, match="does not include this cosigner"):
        sign_cold(unsigned, outsider.root, NETWORK)
    with pytest.raises(SigningRefused, match="not a BIP48 P2WSH path"):
        sign_cold(unsigned, a.root, "mainnet")


def test_the_offline_signer_proves_cold_change_and_summarises(cosigners, cold_wallet):
    a = cosigners[0]
    other = ColdWallet.from_descriptor(
        build_descriptor(2, [c.key_line for c in make_cosigners(4)[1:] if c.name != "a"]
                         + [a.key_line], NETWORK), NETWORK)
    coin = [cold_coin(cold_wallet, 3, 80_000)]
    good = make_cold_psbt(coin, [ColdOutput(b"\x00\x14" + bytes(20), 30_000),
                                 ColdOutput(cold_wallet.derive(1, 2).script_pubkey, 49_000,
                                            cold_change_index=2)],
                          wallet=cold_wallet, network=NETWORK)
    result = sign_cold(good, a.root, NETWORK, cold_wallet.descriptor)
    assert "COLD WALLET SPEND (2-of-3)" in result.summary
    assert "change back to the cold wallet (verified against the descriptor)" in result.summary
    # Without the descriptor the other cosigners' keys cannot be checked: not "verified".
    blind = sign_cold(good, a.root, NETWORK)
    assert "verified against" not in blind.summary and "NOT checked" in blind.summary
    assert "fee: 1,000 sat" in result.summary and result.fee_sat == 1_000
    # "Change" that is a script of another multisig wallet a shares: refused.
    p = PSBT.from_string(good)
    foreign = other.derive(1, 2)
    p.outputs[1].script_pubkey = Script(foreign.script_pubkey)
    p.outputs[1].witness_script = Script(foreign.witness_script)
    p.outputs[1].bip32_derivations.clear()
    for k in foreign.keys:
        p.outputs[1].bip32_derivations[ec.PublicKey.parse(k.pubkey)] = DerivationPath(
            k.fingerprint, list(k.path))
    with pytest.raises(SigningRefused, match="another multisig wallet"):
        sign_cold(p.to_base64(), a.root, NETWORK)


# ------------------------------------------------------------------------------ QR export

def test_a_small_psbt_is_one_qr_code_that_decodes_to_it(tmp_path, cold_wallet):
    unsigned = _unsigned(cold_wallet)
    assert len(unsigned) <= QR_SINGLE_MAX_CHARS
    files = export_files(unsigned, tmp_path)
    assert [f.suffix for f in files] == [".psbt", ".png"]
    assert files[0].read_text().strip() == unsigned
    assert read_qr(files[1]).text == unsigned


def test_a_large_psbt_is_a_structured_append_sequence(tmp_path, cold_wallet):
    unsigned = _unsigned(cold_wallet, n_inputs=8)
    assert len(unsigned) > QR_SINGLE_MAX_CHARS
    files = export_files(unsigned, tmp_path, stem="refill")
    pngs = files[1:]
    n = len(pngs)
    assert n == -(-len(unsigned) // 1_000) and n > 1
    assert [p.name for p in pngs] == [f"refill-qr-{k:02d}-of-{n:02d}.png"
                                      for k in range(1, n + 1)]
    # ZXing reads every part; in the numbered order they join back to the PSBT.
    joined = "".join(read_qr(p).text for p in pngs)
    assert joined == unsigned
    # Each image is exactly segno's structured-append symbol k of n for this PSBT (so the
    # header, with index, count and parity, is there for decoders that reorder parts).
    expected = segno.make_sequence(unsigned, error="L", boost_error=False, mode="byte",
                                   symbol_count=n)
    for png, symbol in zip(pngs, expected, strict=True):
        assert modules(png) == [list(row) for row in symbol.matrix]
    assert modules(pngs[0]) != modules(pngs[1])
    assert read_psbt(joined).tx.txid() == read_psbt(unsigned).tx.txid()
    base64.b64decode(joined, validate=True)


# ------------------------------------------------------------------------------ isolation

def test_the_offline_signer_imports_no_network_client():
    probe = (
        "import sys, json, satvault.custody.offline\n"
        "bad = [m for m in sys.modules if m.split('.')[0] in "
        "('httpx', 'httpcore', 'anyio', 'asyncio', 'sqlalchemy', 'urllib3', 'requests') "
        "or m in ('http.client', 'urllib.request') "
        "or m.startswith(('satvault.backends', 'satvault.signing', 'satvault.web', "
        "'satvault.signer', 'satvault.db', 'satvault.composition'))]\n"
        "print(json.dumps(bad))\n")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True)
    assert json.loads(out.stdout) == []
    # (The standard library's `socket` module itself is loaded, by coincurve's asn1crypto
    # for its address helpers; no module that opens a connection is.)


def test_change_whose_other_keys_were_swapped_is_refused_given_the_descriptor(cosigners,
                                                                             cold_wallet):
    """Found from outside: a coordinator swapped the other cosigners' keys in the change
    output for its own, keeping their fingerprints and paths; the tool called it "change back
    to the cold wallet (verified)" and signed, and the attacker held two of the three keys of
    the change. Given the cold wallet's descriptor the tool derives every key and refuses
    it; without it the change is never called verified."""
    from satvault.custody.cold import multisig_script, p2wsh

    a = cosigners[0]
    good = make_cold_psbt([cold_coin(cold_wallet, 3, 80_000)],
                          [ColdOutput(b"\x00\x14" + bytes(20), 30_000),
                           ColdOutput(cold_wallet.derive(1, 2).script_pubkey, 49_000,
                                      cold_change_index=2)],
                          wallet=cold_wallet, network=NETWORK)
    real = cold_wallet.derive(1, 2)
    mine = next(k for k in real.keys if k.fingerprint == a.root.my_fingerprint)
    thief = bip32.HDKey.from_seed(bytes(range(32)))
    fake = {k.fingerprint: bytes(thief.derive([n, 1, 2]).get_public_key().sec())
            for n, k in enumerate(real.keys) if k is not mine}
    ws = multisig_script(2, sorted([mine.pubkey, *fake.values()]))
    p = PSBT.from_string(good)
    p.outputs[1].script_pubkey = p.tx.vout[1].script_pubkey = Script(p2wsh(ws))
    p.outputs[1].witness_script = Script(ws)
    p.outputs[1].bip32_derivations.clear()
    for k in real.keys:  # the genuine fingerprints and paths, the thief's keys
        pub = mine.pubkey if k is mine else fake[k.fingerprint]
        p.outputs[1].bip32_derivations[ec.PublicKey.parse(pub)] = DerivationPath(
            k.fingerprint, list(k.path))
    with pytest.raises(SigningRefused, match="not a script of the cold wallet"):
        sign_cold(p.to_base64(), a.root, NETWORK, cold_wallet.descriptor)
    blind = sign_cold(p.to_base64(), a.root, NETWORK)
    assert "(verified" not in blind.summary and "NOT checked" in blind.summary


def test_a_seed_given_where_the_descriptor_goes_is_refused_without_its_words(
        tmp_path: Path, cosigners: list[Cosigner]) -> None:
    """Found from outside: `cold sign … --descriptor @cosigner.seed` (the seed file where the
    descriptor file goes; both on the same stick) printed the first 40 characters of the
    mnemonic in its error. The error names the mistake, never the words."""
    me = cosigners[0]
    seed = me.seed_file(tmp_path)
    psbt = tmp_path / "x.psbt"
    psbt.write_text("cHNidP8BAAoCAAAAAAAAAAAAAAAA")  # never read: the descriptor fails first
    result = runner.invoke(app, ["cold", "sign", str(psbt), "--seed-file", str(seed),
                                 "--descriptor", f"@{seed}", "--network", NETWORK])
    assert result.exit_code != 0
    words = me.mnemonic.split()
    assert not any(w in result.output for w in words[:4]), result.output
    assert "seed" in result.output
