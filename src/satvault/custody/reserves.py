"""BIP127 proofs of reserves over the hot and cold coins: build, finalize, verify.

A proof is one transaction (see :mod:`satvault.onchain.bip127` for the commitment input and
its byte order)::

    input 0        the commitment to the message: spends no coin, never signed
    inputs 1..k    the hot wallet's P2WPKH coins, signed by the hot signer
                   (``Signer.sign_reserves``, which checks all of this on its own)
    inputs k+1..   the cold wallet's P2WSH multisig coins, signed by m cosigners
                   (``satvault cold sign``, offline)
    output 0       OP_RETURN, worth exactly the sum of the coins (no fee)

Every signature is ``SIGHASH_ALL``, so it commits to input 0 and is valid in no transaction
that could be mined. The proof file is the finalized PSBT (base64): it carries the message
in input 0's ``PSBT_IN_POR_COMMITMENT`` field, so ``satvault reserves verify FILE`` needs
nothing else; a bare raw transaction (hex) is accepted too, with ``--message``.

:func:`verify_proof` trusts nothing in the file but the transaction: amounts and scripts of
the coins come from the chain backend, every signature is checked against its BIP143
sighash (P2WPKH and P2WSH ``CHECKMULTISIG``), and each coin must have been confirmed at or
before block N and still unspent at block N (unspent now, or spent in a block after N,
found by scanning blocks N+1..tip). N defaults to the tip.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from embit.psbt import PSBT
from embit.transaction import Transaction

from satvault.backends.base import ChainBackend
from satvault.backends.errors import BackendError
from satvault.custody.cold import (
    ColdInput,
    ColdOutput,
    ColdWallet,
    KeyOrigin,
    LeadInput,
    combine,
    extract,
    finalize_cold_inputs,
    make_cold_psbt,
    parse_multisig,
    read_psbt,
    verify_ecdsa,
)
from satvault.custody.errors import ColdPsbtError, ProofError, ProofRejected
from satvault.onchain.bip127 import PSBT_IN_POR_COMMITMENT, commitment_outpoint, display_txid
from satvault.onchain.keys import hash160
from satvault.signing.errors import PsbtBuildError
from satvault.signing.paths import CHANGE_CHAIN, HARDENED, RECEIVE_CHAIN
from satvault.signing.psbt import AccountKey, PsbtInput

__all__ = [
    "PROOF_OUTPUT_SCRIPT",
    "FinalProof",
    "ProofResult",
    "ProvenInput",
    "build_proof",
    "finalize_proof",
    "proof_message",
    "verify_proof",
]

PROOF_OUTPUT_SCRIPT = b"\x6a"  # OP_RETURN: provably unspendable
_FINAL_SEQUENCE = 0xFFFFFFFF
_COMMITMENT_SCRIPT = b"\x51"  # OP_TRUE, value 0: what BIP127 tools put as the "prevout"


def _p2wpkh(pub: bytes) -> bytes:
    return b"\x00\x14" + hash160(pub)


def build_proof(message: str, *, hot: Sequence[PsbtInput] = (), cold: Sequence[ColdInput] = (),
                hot_accounts: Mapping[str, AccountKey] | None = None,
                cold_wallet: ColdWallet | None = None, network: str) -> str:
    """The unsigned proof PSBT (base64) over ``hot`` then ``cold`` coins.

    ``hot_accounts`` is :func:`satvault.signing.psbt.accounts_from_descriptors` of the
    signer's descriptors (each hot coin gets the signer's derivation, so it can find and
    check its key); ``cold_wallet`` the cold descriptor's wallet."""
    try:
        digest, _ = commitment_outpoint(message)
    except ValueError as exc:
        raise ProofError(str(exc)) from exc
    if not hot and not cold:
        raise ProofError("a proof of reserves needs at least one coin")
    if cold and cold_wallet is None:
        raise ProofError("cold coins need the cold wallet's descriptor")
    lead = [LeadInput(display_txid(message), 0, 0, _COMMITMENT_SCRIPT,
                      fields={PSBT_IN_POR_COMMITMENT: message.encode("utf-8")})]
    for n, coin in enumerate(hot, start=1):
        account = (hot_accounts or {}).get(coin.wallet)
        if account is None:
            raise ProofError(f"input {n}: no account key for the {coin.wallet} wallet")
        if coin.chain not in (RECEIVE_CHAIN, CHANGE_CHAIN) or not 0 <= coin.index < HARDENED:
            raise ProofError(f"input {n}: {coin.chain}/{coin.index} is not a wallet position")
        pub = account.pubkey(coin.chain, coin.index)
        if _p2wpkh(pub) != bytes(coin.script_pubkey):
            raise ProofError(f"input {n}: {coin.txid}:{coin.vout} is not paid to {coin.wallet} "
                             f"{coin.chain}/{coin.index}")
        lead.append(LeadInput(coin.txid, coin.vout, coin.value_sat, bytes(coin.script_pubkey),
                              (KeyOrigin(pub, account.fingerprint,
                                         (*account.path, coin.chain, coin.index)),)))
    total = sum(c.value_sat for c in hot) + sum(c.value_sat for c in cold)
    try:
        psbt = make_cold_psbt(cold, [ColdOutput(PROOF_OUTPUT_SCRIPT, total)],
                              wallet=cold_wallet, network=network, lead_inputs=lead,
                              sequence=_FINAL_SEQUENCE, unminable=True)
    except (ColdPsbtError, PsbtBuildError) as exc:
        raise ProofError(str(exc)) from exc
    check = read_psbt(psbt)
    assert bytes(check.tx.vin[0].txid)[::-1] == digest  # serialized order, see bip127
    return psbt


def proof_message(psbt: PSBT) -> str | None:
    """The message in input 0's ``PSBT_IN_POR_COMMITMENT`` field, if any."""
    raw = psbt.inputs[0].unknown.get(PSBT_IN_POR_COMMITMENT) if psbt.inputs else None
    if raw is None:
        return None
    try:
        return bytes(raw).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ProofRejected("input 0's proof-of-reserves message is not UTF-8") from exc


@dataclass(frozen=True, slots=True)
class FinalProof:
    psbt_b64: str  # the proof file: every coin finalized, input 0 untouched
    raw_hex: str
    message: str


def finalize_proof(psbts: Sequence[PSBT | str], names: Sequence[str] | None = None, *,
                   cold_wallet: ColdWallet | None) -> FinalProof:
    """Combine the hot-signed proof and the cosigners' copies; finalize the cold coins
    (m signatures each); leave input 0 without scriptSig or witness, as BIP127 wants."""
    merged = combine(psbts, names)
    message = proof_message(merged)
    if message is None:
        raise ProofError("input 0 carries no proof-of-reserves message: not a proof PSBT")
    digest, vout = commitment_outpoint(message)
    tx = merged.tx
    if bytes(tx.vin[0].txid)[::-1] != digest or tx.vin[0].vout != vout:
        raise ProofError("input 0 is not the commitment to its message")
    cold_indexes = []
    for i in range(1, len(merged.inputs)):
        scope = merged.inputs[i]
        if scope.final_scriptwitness:
            continue  # the hot signer's coins come finalized
        if cold_wallet is None:
            raise ProofError(f"input {i} is not finalized and there is no cold wallet to "
                             "finalize it with")
        cold_indexes.append(i)
    if cold_indexes:
        assert cold_wallet is not None
        finalize_cold_inputs(merged, cold_wallet, cold_indexes)
    first = merged.inputs[0]
    first.final_scriptwitness = None
    first.final_scriptsig = None
    raw = extract(merged).serialize().hex()
    return FinalProof(str(merged.to_base64()), raw, message)


# ------------------------------------------------------------------------------ verifying

@dataclass(frozen=True, slots=True)
class ProvenInput:
    index: int
    txid: str
    vout: int
    value_sat: int
    kind: str  # "p2wpkh" | "p2wsh-multisig m-of-n"
    confirmed_at: int
    spent_at: int | None  # a block after N, or None: unspent now


@dataclass(frozen=True, slots=True)
class ProofResult:
    total_sat: int
    at_block: int
    message: str
    inputs: tuple[ProvenInput, ...]


def _read_proof(proof: str | PSBT | Transaction) -> tuple[Transaction, str | None]:
    if isinstance(proof, Transaction):
        return proof, None
    if isinstance(proof, PSBT):
        psbt = proof
    else:
        text = "".join(proof.split())
        if re.fullmatch(r"(?:[0-9a-fA-F]{2})+", text) and not text.startswith("70736274ff"):
            try:
                return Transaction.parse(bytes.fromhex(text)), None
            except Exception as exc:  # embit raises assorted errors on malformed input
                raise ProofRejected(f"not a readable transaction: {exc}") from exc
        try:
            psbt = read_psbt(text, "the proof")
        except ColdPsbtError as exc:
            raise ProofRejected(str(exc)) from exc
    for i, scope in enumerate(psbt.inputs[1:], start=1):
        if not scope.final_scriptwitness:
            raise ProofRejected(f"input {i} is not finalized (no final witness): the proof "
                                "is incomplete")
    return extract(psbt), proof_message(psbt)


def _check_witness(tx: Transaction, i: int, spk: bytes, value: int) -> str:
    """Verify input ``i``'s witness against the coin it spends; return its kind."""
    items = [bytes(x) for x in tx.vin[i].witness.items]
    if tx.vin[i].script_sig and bytes(tx.vin[i].script_sig.data):
        raise ProofRejected(f"input {i} has a scriptSig; native segwit coins have none")
    if len(spk) == 22 and spk[:2] == b"\x00\x14":
        if len(items) != 2:
            raise ProofRejected(f"input {i}: a P2WPKH witness has 2 items, not {len(items)}")
        sig, pub = items
        if hash160(pub) != spk[2:]:
            raise ProofRejected(f"input {i}: the witness key does not hash to the coin's "
                                "P2WPKH program")
        code = b"\x76\xa9\x14" + spk[2:] + b"\x88\xac"
        problem = verify_ecdsa(tx, i, code, value, pub, sig)
        if problem is not None:
            raise ProofRejected(f"input {i}: the signature of key {pub.hex()} is refused: "
                                f"{problem}")
        return "p2wpkh"
    if len(spk) == 34 and spk[:2] == b"\x00\x20":
        if len(items) < 3 or items[0] != b"":
            raise ProofRejected(f"input {i}: a multisig witness is [empty, signatures…, "
                                "script]")
        ws = items[-1]
        if hashlib.sha256(ws).digest() != spk[2:]:
            raise ProofRejected(f"input {i}: the witness script does not hash to the coin's "
                                "P2WSH program")
        parsed = parse_multisig(ws)
        if parsed is None:
            raise ProofRejected(f"input {i}: the witness script is not an m-of-n multisig "
                                "(only those are verified)")
        m, keys = parsed
        sigs = items[1:-1]
        if len(sigs) != m:
            raise ProofRejected(f"input {i}: {len(sigs)} signatures for a {m}-of-{len(keys)}")
        k = 0
        for n, sig in enumerate(sigs):  # CHECKMULTISIG: signatures in the keys' order
            while k < len(keys) and verify_ecdsa(tx, i, ws, value, keys[k], sig) is not None:
                k += 1
            if k == len(keys):
                raise ProofRejected(f"input {i}: signature {n + 1} verifies for none of the "
                                    "remaining keys of its multisig script (forged, altered "
                                    "or out of order)")
            k += 1
        return f"p2wsh-multisig {m}-of-{len(keys)}"
    raise ProofRejected(f"input {i} spends a script satvault does not verify "
                        f"({spk.hex()}); only P2WPKH and P2WSH multisig")


async def verify_proof(proof: str | PSBT | Transaction, message: str | None,
                       backend: ChainBackend, at_block: int | None = None) -> ProofResult:
    """Check a proof of reserves against the chain at block ``at_block`` (default: the tip).
    Raises :class:`ProofRejected` with the reason, or returns what it proves."""
    tx, carried = _read_proof(proof)
    if message is None:
        message = carried
    if message is None:
        raise ProofRejected("no message: give --message (the proof carries none)")
    try:
        digest, commit_vout = commitment_outpoint(message)
    except ValueError as exc:
        raise ProofRejected(str(exc)) from exc
    if len(tx.vin) < 2:
        raise ProofRejected("a proof has the commitment input and at least one coin")
    if len(tx.vout) != 1:
        raise ProofRejected(f"a proof has exactly one output, not {len(tx.vout)}")
    if bytes(tx.vout[0].script_pubkey.data) != PROOF_OUTPUT_SCRIPT:
        raise ProofRejected("a proof's output is a bare OP_RETURN (provably unspendable), not "
                            f"the script {bytes(tx.vout[0].script_pubkey.data).hex()}")
    if bytes(tx.vin[0].txid)[::-1] != digest or tx.vin[0].vout != commit_vout:
        raise ProofRejected(f"input 0 is not the commitment to the message {message!r}: the "
                            "proof was made for another message (or none)")
    if tx.vin[0].witness.items or (tx.vin[0].script_sig and bytes(tx.vin[0].script_sig.data)):
        raise ProofRejected("input 0, the commitment, must have no scriptSig or witness")
    try:
        tip = await backend.tip()
        n_block = tip.height if at_block is None else at_block
        if not 0 <= n_block <= tip.height:
            raise ProofError(f"block {n_block} is not in the chain (tip {tip.height})")
        coins: list[tuple[int, str, int, int, bytes, int]] = []
        seen: set[tuple[str, int]] = set()
        unspent_unknown: set[tuple[str, int]] = set()
        for i in range(1, len(tx.vin)):
            txid, vout = bytes(tx.vin[i].txid).hex(), int(tx.vin[i].vout)
            if (txid, vout) in seen:
                raise ProofRejected(f"input {i} spends {txid}:{vout} a second time")
            seen.add((txid, vout))
            status = await backend.transaction(txid)
            if status is None:
                raise ProofRejected(f"input {i}: transaction {txid} is unknown to the chain")
            if status.block_height is None:
                raise ProofRejected(f"input {i}: {txid} is not confirmed")
            if status.block_height > n_block:
                raise ProofRejected(f"input {i}: {txid}:{vout} was confirmed at block "
                                    f"{status.block_height}, after block {n_block}")
            if vout >= len(status.tx.outputs):
                raise ProofRejected(f"input {i}: {txid} has no output {vout}")
            out = status.tx.outputs[vout]
            coins.append((i, txid, vout, out.value_sat, out.script_pubkey, status.block_height))
            if await backend.output(txid, vout, include_mempool=False) is None:
                unspent_unknown.add((txid, vout))
        spent_at: dict[tuple[str, int], int] = {}
        if unspent_unknown:
            for height in range(n_block + 1, tip.height + 1):
                block = await backend.block(await backend.block_hash(height))
                for btx in block.txs:
                    for op in btx.inputs:
                        if (op.txid, op.vout) in unspent_unknown:
                            spent_at[(op.txid, op.vout)] = height
    except BackendError as exc:
        raise ProofError(f"the chain backend failed: {exc}") from exc

    total = sum(c[3] for c in coins)
    if int(tx.vout[0].value) != total:
        raise ProofRejected(f"the output claims {int(tx.vout[0].value)} sat but the coins hold "
                            f"{total} sat on chain (BIP127: equal, no fee)")
    proven = []
    for i, txid, vout, value, spk, height in coins:
        if (txid, vout) in unspent_unknown and (txid, vout) not in spent_at:
            raise ProofRejected(f"input {i}: {txid}:{vout} was spent at or before block "
                                f"{n_block}")
        kind = _check_witness(tx, i, spk, value)
        proven.append(ProvenInput(i, txid, vout, value, kind, height,
                                  spent_at.get((txid, vout))))
    return ProofResult(total, n_block, message, tuple(proven))
