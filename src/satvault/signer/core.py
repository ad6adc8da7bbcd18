"""The hot signer: the only component of satvault that holds private keys.

A :class:`HotSigner` is one BIP32 seed on one network (see :mod:`satvault.signing.paths` for
the deposit and hot accounts it derives). It does two things:

* :meth:`HotSigner.descriptors` — the two watch-only descriptors the web process derives
  addresses from;
* :meth:`HotSigner.sign_payout` — sign a payout PSBT, but only after checking on its own
  (:mod:`satvault.signer._policy`) that it spends only the signer's coins, pays exactly the
  requested payments plus change back to the hot wallet, and stays within the fee limits.

Fee bumping needs nothing special: the payout job builds a replacement PSBT spending the
same inputs with less change (every input signals RBF) and calls :meth:`sign_payout` again
with the same payments and limits that allow the higher fee.

The feerate limit is checked twice: before signing against the largest size the signed
transaction can have (so a clearly excessive feerate is refused without signing), and after
signing, in memory, against the exact size; a refusal at that point discards the signatures
before they leave this object and writes no audit line.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from embit.descriptor.checksum import add_checksum
from embit.psbt import PSBT
from embit.script import Script, Witness, p2pkh_from_p2wpkh
from embit.transaction import SIGHASH

from satvault.onchain.keys import hash160
from satvault.signer._hd import Keyring
from satvault.signer._policy import PaymentSpec, PayoutPlan, check_payout, describe_script
from satvault.signer._reserves import sign_reserves as _sign_reserves
from satvault.signer.audit import AuditLog
from satvault.signer.seed import SeedMaterial
from satvault.signing.base import Payment, SignedTx
from satvault.signing.errors import FeeTooHigh, InvalidPsbt, InvalidRequest
from satvault.signing.paths import NETWORKS, WalletName, account_path, format_path

__all__ = ["HotSigner"]

# Largest P2WPKH witness: item count, DER signature (≤ 72) + sighash byte, 33-byte key.
_MAX_P2WPKH_WITNESS = 1 + 1 + 73 + 1 + 33
_SEGWIT_MARKER_FLAG = 2


def _vsize(base_size: int, total_size: int) -> int:
    weight = 3 * base_size + total_size
    return -(-weight // 4)  # vbytes round up


def _check_request(payments: Sequence[Payment], max_fee_sat: int,
                   max_feerate_sat_vb: int) -> list[PaymentSpec]:
    for name, value in (("max_fee_sat", max_fee_sat), ("max_feerate_sat_vb", max_feerate_sat_vb)):
        if type(value) is not int or value < 0:
            raise InvalidRequest(f"{name} must be a non-negative whole number, not {value!r}")
    specs = []
    for k, p in enumerate(payments):
        if type(p.amount_sat) is not int or p.amount_sat <= 0:
            raise InvalidRequest(f"payment {k} ({p.ref}): amount {p.amount_sat!r} is not a "
                                 "positive whole number of sat")
        if not isinstance(p.script_pubkey, bytes | bytearray) or not p.script_pubkey:
            raise InvalidRequest(f"payment {k} ({p.ref}): empty or non-bytes script")
        specs.append(PaymentSpec(bytes(p.script_pubkey), p.amount_sat, str(p.ref)))
    return specs


class HotSigner:
    """Signs payouts from one seed. Thread-safe; holds private keys: never log or pickle it."""

    def __init__(self, seed: bytes, network: str, *,
                 audit_log: str | os.PathLike[str] | None = None) -> None:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}")
        self.network = network
        self._keys = Keyring(seed, network)
        self._audit = AuditLog(audit_log) if audit_log is not None else None

    @classmethod
    def from_material(cls, material: SeedMaterial, *,
                      audit_log: str | os.PathLike[str] | None = None) -> HotSigner:
        return cls(material.seed, material.network, audit_log=audit_log)

    def __repr__(self) -> str:
        return f"HotSigner(fingerprint={self.fingerprint.hex()}, network={self.network})"

    @property
    def fingerprint(self) -> bytes:
        return self._keys.fingerprint

    # ------------------------------------------------------------------ public side
    def descriptors(self) -> dict[str, str]:
        """``{"deposit": "wpkh([fp/84h/1h/0h]tpub…/<0;1>/*)#…", "hot": …}``, with checksum,
        in the form :func:`satvault.onchain.descriptors.parse_wallet` reads."""
        fp = self.fingerprint.hex()
        out = {}
        for wallet in WalletName:
            origin = format_path(account_path(self.network, wallet), prefix=fp,
                                 hardened_mark="h")
            body = f"wpkh([{origin}]{self._keys.account_xpub(wallet)}/<0;1>/*)"
            out[wallet.value] = str(add_checksum(body))
        return out

    # ------------------------------------------------------------------ signing
    def sign_payout(self, psbt_b64: str, payments: Sequence[Payment], *, max_fee_sat: int,
                    max_feerate_sat_vb: int) -> SignedTx:
        """Check ``psbt_b64`` against ``payments`` and the limits, then sign every input.

        Raises a :class:`~satvault.signing.errors.SigningRefused` subclass, having signed
        nothing, when any check fails.
        """
        specs = _check_request(payments, max_fee_sat, max_feerate_sat_vb)
        if not isinstance(psbt_b64, str):
            raise InvalidRequest("the PSBT must be a base64 (or hex) string")
        try:
            psbt = PSBT.from_string(psbt_b64.strip())
        except Exception as exc:  # embit raises assorted errors on malformed input
            raise InvalidPsbt(f"not a readable PSBT: {exc}") from exc
        plan = check_payout(psbt, specs, self._keys, max_fee_sat=max_fee_sat)

        base_size = len(psbt.tx.serialize())  # no witnesses yet: the stripped size
        largest = _vsize(base_size, base_size + _SEGWIT_MARKER_FLAG
                         + _MAX_P2WPKH_WITNESS * len(plan.inputs))
        if plan.fee_sat > max_feerate_sat_vb * largest:
            raise FeeTooHigh(f"the fee of {plan.fee_sat} sat on at most {largest} vB is above "
                             f"{max_feerate_sat_vb} sat/vB")

        tx = psbt.tx
        for i, checked in enumerate(plan.inputs):
            key = self._keys.private_key(checked.wallet, checked.chain, checked.index)
            pub = key.get_public_key()
            if bytes(pub.sec()) != checked.pubkey:  # cannot happen after the checks; be sure
                raise InvalidPsbt(f"input {i}: derived key mismatch")
            # BIP143 with one transaction object, so its prevouts/sequence/outputs hashes are
            # computed once rather than once per input.
            script_code = p2pkh_from_p2wpkh(Script(b"\x00\x14" + hash160(checked.pubkey)))
            digest = tx.sighash_segwit(i, script_code, checked.value_sat, sighash=SIGHASH.ALL)
            sig = key.sign(digest)
            if not pub.verify(sig, digest):
                raise InvalidPsbt(f"input {i}: the signature does not verify")
            witness = Witness([sig.serialize() + bytes([SIGHASH.ALL]), pub.sec()])
            tx.vin[i].witness = witness
            scope = psbt.inputs[i]
            scope.final_scriptwitness = witness
            # BIP174 finalizer: keep the UTXO and the final witness, drop the rest.
            scope.partial_sigs.clear()
            scope.bip32_derivations.clear()
            scope.sighash_type = None

        raw = tx.serialize()
        vsize = _vsize(base_size, len(raw))
        if plan.fee_sat > max_feerate_sat_vb * vsize:
            raise FeeTooHigh(f"the fee of {plan.fee_sat} sat on {vsize} vB is above "
                             f"{max_feerate_sat_vb} sat/vB")
        txid = bytes(tx.txid()).hex()
        if self._audit is not None:
            self._audit.append(self._audit_record(txid, plan, vsize, max_fee_sat,
                                                  max_feerate_sat_vb))
        return SignedTx(txid, raw.hex(), str(psbt.to_base64()), plan.fee_sat)

    def _audit_record(self, txid: str, plan: PayoutPlan, vsize: int, max_fee_sat: int,
                      max_feerate_sat_vb: int) -> dict[str, Any]:
        net = self.network
        return {
            "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
            "event": "sign_payout",
            "network": net,
            "txid": txid,
            "fee_sat": plan.fee_sat,
            "vsize": vsize,
            "max_fee_sat": max_fee_sat,
            "max_feerate_sat_vb": max_feerate_sat_vb,
            "inputs": [{"outpoint": f"{i.txid}:{i.vout}", "value_sat": i.value_sat,
                        "wallet": i.wallet.value, "path": format_path(i.path)}
                       for i in plan.inputs],
            "outputs": [{"n": o.n, "to": describe_script(o.script_pubkey, net),
                         "amount_sat": o.amount_sat, "kind": o.kind, "ref": o.ref,
                         "path": format_path(o.path) if o.path else None}
                        for o in plan.outputs],
        }

    # ------------------------------------------------------------------ proofs of reserves
    def sign_reserves(self, psbt_b64: str, message: str) -> str:
        """Sign this seed's inputs of a BIP127 proof of reserves for ``message`` (checks and
        why it can never spend: :mod:`satvault.signer._reserves`); returns the PSBT with
        those inputs finalized."""
        if not isinstance(psbt_b64, str) or not isinstance(message, str):
            raise InvalidRequest("the PSBT and the message must be strings")
        try:
            psbt = PSBT.from_string(psbt_b64.strip())
        except Exception as exc:  # embit raises assorted errors on malformed input
            raise InvalidPsbt(f"not a readable PSBT: {exc}") from exc
        plan = _sign_reserves(psbt, message, self._keys)
        if self._audit is not None:
            self._audit.append({
                "time": datetime.now(UTC).isoformat(timespec="milliseconds"),
                "event": "sign_reserves", "network": self.network, "message": message,
                "unsigned_txid": bytes(psbt.tx.txid()).hex(), "total_sat": plan.total_sat,
                "inputs": [{"n": n, "outpoint": o, "value_sat": v, "path": p}
                           for n, o, v, p in plan.signed]})
        return str(psbt.to_base64())
