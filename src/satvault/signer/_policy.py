"""What the signer checks before it signs a transaction, on its own.

The web process builds the PSBT, but the signer trusts none of it: it only signs when

* every input carries a ``witness_utxo``, its previous transaction (below) and exactly one
  BIP32 derivation from this seed, into the deposit or hot account, and the key derived
  from the seed at that path pays to exactly that ``witness_utxo`` script (P2WPKH);
* every output is one of
  - ``payment``: one of the requested payments (script and amount equal; each payment used
    once): value leaving the platform;
  - ``change``: the hot wallet's change chain ``m/84'/c'/1'/1/i``, proven by deriving that
    key and comparing scripts;
  - ``internal``: one of the platform's own wallets on the signer's allow-list: the hot
    wallet's receive chain ``m/84'/c'/1'/0/i`` (a sweep into the hot tier), proven the same
    way, or the cold multisig given to the signer at start-up (a sweep into cold), proven by
    its cosigners' derivations and the descriptor (:mod:`satvault.signer._cold`);
  - ``anchor``: the audit log's anchor (:mod:`satvault.signing.anchor`): a zero-value
    ``OP_RETURN`` of exactly the tag ``SVA1``, a seq and a 32-byte hash, naming no key; at
    most one per transaction and only in a sweep (every input a deposit coin, no payment
    requested). It moves no money; every other ``OP_RETURN`` (another payload, another
    length, any value) is refused like any unknown output;
* a transaction that spends ``deposit`` inputs pays no ``payment`` output: deposit coins
  may only be swept into the platform's own wallets, value leaves only from ``hot`` coins
  (:class:`DepositOutflow`), so a compromised web process cannot pay customers' deposits
  out directly;
* no requested payment is missing;
* 0 <= fee <= ``max_fee_sat`` (the feerate limit needs the signed size, and the caps on
  value leaving need the signer's history: both are checked by :mod:`satvault.signer.core`).

Anything else raises a :class:`SigningRefused` naming the input or output at fault.

Every input must also carry its ``non_witness_utxo``, the whole previous transaction: its
txid must be the outpoint's and its output there must be the ``witness_utxo`` (amount and
script). A segwit v0 signer that takes amounts from ``witness_utxo`` alone signs whatever
amounts the PSBT claims; one lie only makes its own signature invalid (BIP143 commits to the
amount), but two signings of the same inputs with different lies combine into one valid
transaction paying a fee the signer never saw (the 2020 "segwit fee attack",
CVE-2020-14199). With the previous transaction hashed to the outpoint, the amounts the fee
and the caps are computed from are the chain's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from embit.psbt import PSBT
from embit.transaction import SIGHASH

from satvault.onchain.addresses import script_to_address
from satvault.onchain.errors import OnchainError, UnprovenAmount
from satvault.onchain.prevout import proven_amount
from satvault.signer._cold import ColdWallet
from satvault.signer._hd import Keyring, p2wpkh_script
from satvault.signing.anchor import ANCHOR_SCRIPT_LEN, ANCHOR_TAG, is_op_return, parse_anchor
from satvault.signing.errors import (
    BadChange,
    DepositOutflow,
    FeeTooHigh,
    InvalidPsbt,
    MissingPayment,
    NegativeFee,
    OutputMismatch,
    UnknownInput,
)
from satvault.signing.paths import (
    CHANGE_CHAIN,
    HARDENED,
    RECEIVE_CHAIN,
    WalletName,
    account_path,
    format_path,
)

__all__ = ["CheckedInput", "CheckedOutput", "PaymentSpec", "PayoutPlan", "check_payout"]


@dataclass(frozen=True, slots=True)
class PaymentSpec:
    script_pubkey: bytes
    amount_sat: int
    ref: str


@dataclass(frozen=True, slots=True)
class CheckedInput:
    txid: str
    vout: int
    value_sat: int
    wallet: WalletName
    path: tuple[int, ...]
    pubkey: bytes

    @property
    def chain(self) -> int:
        return self.path[-2]

    @property
    def index(self) -> int:
        return self.path[-1]


@dataclass(frozen=True, slots=True)
class CheckedOutput:
    n: int
    script_pubkey: bytes
    amount_sat: int
    kind: str  # "payment" | "change" | "internal" | "anchor"
    ref: str | None = None  # the payment's ref
    path: tuple[int, ...] | None = None  # hot: the full path; cold: (chain, index)
    wallet: str | None = None  # "hot" | "cold" for change and internal outputs


@dataclass(frozen=True, slots=True)
class PayoutPlan:
    inputs: tuple[CheckedInput, ...]
    outputs: tuple[CheckedOutput, ...]
    fee_sat: int

    @property
    def payments_sat(self) -> int:
        return sum(o.amount_sat for o in self.outputs if o.kind == "payment")

    @property
    def leaving_sat(self) -> int:
        """Value this transaction sends out of the platform: the payments and the fee (to
        miners, who need not be strangers). Change and sweeps stay in."""
        return self.payments_sat + self.fee_sat

    @property
    def outpoints(self) -> frozenset[str]:
        return frozenset(f"{i.txid}:{i.vout}" for i in self.inputs)


def describe_script(script_pubkey: bytes, network: str) -> str:
    try:
        return script_to_address(script_pubkey, network)
    except OnchainError:
        return f"script {script_pubkey.hex()}"


def _our_derivations(scope: Any, fingerprint: bytes) -> list[tuple[bytes, tuple[int, ...]]]:
    return [(bytes(pub.sec()), tuple(der.derivation))
            for pub, der in scope.bip32_derivations.items() if der.fingerprint == fingerprint]


def _locate(path: tuple[int, ...], keyring: Keyring) -> WalletName | None:
    """The wallet whose account ``path`` lies in, if it is a wallet/chain/index key path."""
    if len(path) != 5 or path[3] not in (RECEIVE_CHAIN, CHANGE_CHAIN) or path[4] >= HARDENED:
        return None
    for wallet in WalletName:
        if path[:3] == account_path(keyring.network, wallet):
            return wallet
    return None


def _check_input(i: int, psbt: PSBT, keyring: Keyring) -> CheckedInput:
    scope = psbt.inputs[i]
    outpoint = f"{bytes(scope.txid).hex()}:{scope.vout}"
    where = f"input {i} ({outpoint})"
    if scope.witness_utxo is None:
        raise UnknownInput(f"{where} has no witness_utxo: the signer spends only P2WPKH outputs "
                           "whose script and amount the PSBT states")
    if scope.sighash_type not in (None, SIGHASH.ALL):
        raise InvalidPsbt(f"{where} asks for sighash {scope.sighash_type}; only ALL is signed")
    unexpected = [name for name, present in (
        ("redeem_script", scope.redeem_script is not None),
        ("witness_script", scope.witness_script is not None),
        ("final_scriptsig", bool(scope.final_scriptsig)),
        ("final_scriptwitness", bool(scope.final_scriptwitness)),
        ("partial_sigs", bool(scope.partial_sigs)),
        ("taproot fields", bool(scope.taproot_bip32_derivations or scope.taproot_internal_key
                                or scope.taproot_scripts)),
    ) if present]
    if unexpected:
        raise InvalidPsbt(f"{where} carries {', '.join(unexpected)}; an unsigned P2WPKH input "
                          "has none")
    spk = bytes(scope.witness_utxo.script_pubkey.data)
    # The amount is only as good as the previous transaction it is read from (the segwit fee
    # attack): required, and it must be the outpoint's (one check, shared with the offline
    # cosigner).
    try:
        value = proven_amount(scope, where)
    except UnprovenAmount as exc:
        raise InvalidPsbt(str(exc)) from exc
    if value <= 0:
        raise InvalidPsbt(f"{where} claims a value of {value} sat")
    ours = _our_derivations(scope, keyring.fingerprint)
    if not ours:
        raise UnknownInput(f"{where} has no BIP32 derivation from this signer (master "
                           f"fingerprint {keyring.fingerprint.hex()})")
    if len(ours) > 1:
        raise InvalidPsbt(f"{where} has {len(ours)} derivations from this signer; a P2WPKH "
                          "input has one key")
    claimed_pub, path = ours[0]
    wallet = _locate(path, keyring)
    if wallet is None:
        raise UnknownInput(f"{where} derives at {format_path(path)}, which is in neither the "
                           "deposit nor the hot account")
    pub = keyring.public_key(wallet, path[3], path[4])
    if pub != claimed_pub:
        raise UnknownInput(f"{where}: the key at {format_path(path)} is not the one the PSBT "
                           "names")
    if p2wpkh_script(pub) != spk:
        raise UnknownInput(f"{where} pays {describe_script(spk, keyring.network)}, not the "
                           f"signer's P2WPKH key at {format_path(path)}")
    return CheckedInput(bytes(scope.txid).hex(), int(scope.vout), value, wallet, path, pub)


def _check_own(n: int, spk: bytes, amount: int, scope: Any, keyring: Keyring
               ) -> CheckedOutput:
    """An output with a derivation from this seed: hot change or a sweep into hot."""
    where = f"output {n} ({amount} sat to {describe_script(spk, keyring.network)})"
    ours = _our_derivations(scope, keyring.fingerprint)
    if len(ours) != 1:
        raise BadChange(f"{where} has {len(ours)} derivations from this signer; change has one")
    claimed_pub, path = ours[0]
    hot = account_path(keyring.network, WalletName.HOT)
    if len(path) != 5 or path[:3] != hot or path[3] not in (RECEIVE_CHAIN, CHANGE_CHAIN) \
            or path[4] >= HARDENED:
        raise BadChange(f"{where} claims the path {format_path(path)}; the signer's own "
                        f"outputs go only to the hot wallet, its change chain "
                        f"{format_path(hot)}/1/* or its receive chain {format_path(hot)}/0/*")
    chain = path[3]
    pub = keyring.public_key(WalletName.HOT, chain, path[4])
    role = "change" if chain == CHANGE_CHAIN else "receive"
    if pub != claimed_pub or p2wpkh_script(pub) != spk:
        raise BadChange(f"{where} claims to be the hot wallet's {role} address at "
                        f"{format_path(path)}, but that key's P2WPKH script is a different one")
    kind = "change" if chain == CHANGE_CHAIN else "internal"
    return CheckedOutput(n, spk, amount, kind, None, path, WalletName.HOT.value)


def _check_cold(n: int, spk: bytes, amount: int, scope: Any, cold: ColdWallet,
                network: str) -> CheckedOutput:
    where = f"output {n} ({amount} sat to {describe_script(spk, network)})"
    chain, index = cold.check(where, spk, scope)
    return CheckedOutput(n, spk, amount, "internal", None, (chain, index), "cold")


def _check_anchor(n: int, spk: bytes, amount: int, scope: Any, network: str
                  ) -> CheckedOutput:
    """An ``OP_RETURN`` output: accepted only as the exact, zero-value audit anchor."""
    where = f"output {n} ({amount} sat to {describe_script(spk, network)})"
    if parse_anchor(spk) is None:
        raise OutputMismatch(f"{where} is an OP_RETURN that is not the audit anchor (the tag "
                             f"{ANCHOR_TAG.decode()}, a seq and a 32-byte hash, "
                             f"{ANCHOR_SCRIPT_LEN} bytes of script); the signer carries no "
                             "other data")
    if amount != 0:
        raise OutputMismatch(f"{where} is an audit anchor worth {amount} sat; an anchor is "
                             "worth 0 sat (value sent to an OP_RETURN is burnt)")
    if scope.bip32_derivations or scope.witness_script is not None:
        raise OutputMismatch(f"{where} is an audit anchor that names keys or a script; an "
                             "anchor names none")
    return CheckedOutput(n, spk, 0, "anchor")


def _check_anchors(outputs: Sequence[CheckedOutput], inputs: Sequence[CheckedInput],
                   payments: Sequence[PaymentSpec]) -> None:
    anchors = [o for o in outputs if o.kind == "anchor"]
    if len(anchors) > 1:
        raise OutputMismatch(f"outputs {', '.join(str(o.n) for o in anchors)} are all audit "
                             "anchors; a transaction carries at most one")
    if anchors and (payments or any(i.wallet is not WalletName.DEPOSIT for i in inputs)):
        raise OutputMismatch(f"output {anchors[0].n} is an audit anchor, which only a sweep "
                             "(deposit coins into the platform's own wallets, no payment) "
                             "may carry")


def _match_payment(n: int, spk: bytes, amount: int, open_: list[PaymentSpec],
                   payments: Sequence[PaymentSpec], network: str) -> CheckedOutput:
    for k, p in enumerate(open_):
        if p.script_pubkey == spk and p.amount_sat == amount:
            del open_[k]
            return CheckedOutput(n, spk, amount, "payment", p.ref)
    where = f"output {n} pays {amount} sat to {describe_script(spk, network)}"
    same_script = [p for p in open_ if p.script_pubkey == spk]
    if same_script:
        wanted = ", ".join(f"{p.ref} ({p.amount_sat} sat)" for p in same_script)
        raise OutputMismatch(f"{where}, but the payment to that address is {wanted}")
    if any(p.script_pubkey == spk for p in payments):
        raise OutputMismatch(f"{where}, but every payment to that address already has "
                             "its output")
    raise OutputMismatch(f"{where}, which is neither a requested payment nor one of the "
                         "platform's own wallets (hot change, hot receive, cold)")


def check_payout(psbt: PSBT, payments: Sequence[PaymentSpec], keyring: Keyring, *,
                 max_fee_sat: int, cold: ColdWallet | None = None) -> PayoutPlan:
    """Check a payout or sweep PSBT against the request; raise a :class:`SigningRefused` or
    return the plan (what is spent, what is paid, what stays in, the fee).

    ``cold`` is the cold wallet outputs may sweep into (None: no cold wallet configured).
    """
    if not psbt.inputs:
        raise InvalidPsbt("the PSBT has no inputs")
    if not psbt.outputs:
        raise InvalidPsbt("the PSBT has no outputs")
    inputs: list[CheckedInput] = []
    seen: set[tuple[str, int]] = set()
    for i in range(len(psbt.inputs)):
        checked = _check_input(i, psbt, keyring)
        if (checked.txid, checked.vout) in seen:
            raise InvalidPsbt(f"input {i} spends {checked.txid}:{checked.vout} a second time")
        seen.add((checked.txid, checked.vout))
        inputs.append(checked)

    open_payments = list(payments)
    outputs: list[CheckedOutput] = []
    for n, scope in enumerate(psbt.outputs):
        if scope.script_pubkey is None or scope.value is None:
            raise InvalidPsbt(f"output {n} has no script or amount")
        spk = bytes(scope.script_pubkey.data)
        amount = int(scope.value)
        if scope.taproot_bip32_derivations or scope.taproot_internal_key:
            raise OutputMismatch(f"output {n} carries taproot fields; the signer does not "
                                 "make taproot change")
        if is_op_return(spk):
            outputs.append(_check_anchor(n, spk, amount, scope, keyring.network))
            continue
        ours = bool(_our_derivations(scope, keyring.fingerprint))
        claims_cold = cold is not None and cold.claimed(scope)
        if ours and claims_cold:
            raise BadChange(f"output {n} ({amount} sat to "
                            f"{describe_script(spk, keyring.network)}) carries derivations of "
                            "both this signer and the cold wallet's cosigners")
        if ours:
            outputs.append(_check_own(n, spk, amount, scope, keyring))
        elif claims_cold:
            assert cold is not None
            outputs.append(_check_cold(n, spk, amount, scope, cold, keyring.network))
        else:
            outputs.append(_match_payment(n, spk, amount, open_payments, payments,
                                          keyring.network))
    if open_payments:
        missing = "; ".join(f"{p.ref}: {p.amount_sat} sat to "
                            f"{describe_script(p.script_pubkey, keyring.network)}"
                            for p in open_payments)
        raise MissingPayment(f"no output pays {missing}")
    _check_anchors(outputs, inputs, payments)
    deposits = [i for i in inputs if i.wallet is WalletName.DEPOSIT]
    paid = [o for o in outputs if o.kind == "payment"]
    if deposits and paid:
        first = deposits[0]
        raise DepositOutflow(
            f"output {paid[0].n} pays {paid[0].amount_sat} sat to "
            f"{describe_script(paid[0].script_pubkey, keyring.network)} ({paid[0].ref}), but "
            f"the transaction spends deposit coins ({len(deposits)} input(s), first "
            f"{first.txid}:{first.vout}); deposits may only be swept into the platform's own "
            "wallets, and value leaves only from hot coins")

    total_in = sum(i.value_sat for i in inputs)
    total_out = sum(o.amount_sat for o in outputs)
    fee = total_in - total_out
    if fee < 0:
        raise NegativeFee(f"outputs ({total_out} sat) exceed inputs ({total_in} sat)")
    if fee > max_fee_sat:
        raise FeeTooHigh(f"the fee is {fee} sat, above the limit of {max_fee_sat} sat")
    return PayoutPlan(tuple(inputs), tuple(outputs), fee)
