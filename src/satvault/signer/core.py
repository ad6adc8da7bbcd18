"""The hot signer: the only component of satvault that holds private keys.

A :class:`HotSigner` is one BIP32 seed on one network (see :mod:`satvault.signing.paths` for
the deposit and hot accounts it derives). It does two things:

* :meth:`HotSigner.descriptors` — the two watch-only descriptors the web process derives
  addresses from;
* :meth:`HotSigner.sign_payout` — sign a payout or a sweep PSBT, but only after checking on
  its own (:mod:`satvault.signer._policy`) that it spends only the signer's coins, pays
  exactly the requested payments plus outputs to the platform's own wallets (hot change,
  hot receive, the cold multisig given at start-up; in a sweep, at most one zero-value audit
  anchor ``OP_RETURN`` of fixed shape), pays nothing out of deposit coins, and
  stays within the fee limits and the signer's own caps on value leaving the platform
  (:mod:`satvault.signer._limits`).

The signer defends itself: the cold descriptor and the caps are start-up configuration of
the signer process, not arguments of a request, so a compromised caller can at most have one
day's allowance of hot coins paid out (to any address); it cannot pay deposit coins out nor
sweep them anywhere but the hot and cold wallets. Every refusal is logged and appended to the
audit log as a ``"refused"`` line.

A sweep is a :meth:`HotSigner.sign_payout` with no payments. Fee bumping needs nothing
special: the payout job builds a replacement PSBT spending the same inputs with less change
(every input signals RBF) and calls :meth:`sign_payout` again with the same payments and
limits that allow the higher fee; the daily cap counts only the higher fee's difference.

The feerate limit is checked twice: before signing against the largest size the signed
transaction can have (so a clearly excessive feerate is refused without signing), and after
signing, in memory, against the exact size; a refusal at that point discards the signatures
before they leave this object and writes no signature line.
"""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from embit.descriptor.checksum import add_checksum
from embit.psbt import PSBT
from embit.script import Script, Witness, p2pkh_from_p2wpkh
from embit.transaction import SIGHASH

from satvault.logs import get_logger
from satvault.onchain.keys import hash160
from satvault.signer._cold import ColdWallet
from satvault.signer._hd import Keyring
from satvault.signer._limits import Spend, SpendWindow, spend_from_record
from satvault.signer._paid import PaidRefs, Signature
from satvault.signer._policy import (
    CheckedOutput,
    PaymentSpec,
    PayoutPlan,
    check_payout,
    describe_script,
)
from satvault.signer._reserves import sign_reserves as _sign_reserves
from satvault.signer.audit import AuditLog, read_records
from satvault.signer.seed import SeedMaterial
from satvault.signing.base import Payer, Payment, SignedTx
from satvault.signing.errors import (
    AuditLogError,
    FeeTooHigh,
    InvalidPsbt,
    InvalidRequest,
    SigningRefused,
)
from satvault.signing.paths import NETWORKS, WalletName, account_path, format_path

__all__ = ["DEFAULT_MAX_DAILY_SAT", "DEFAULT_MAX_TX_SAT", "HotSigner"]

log = get_logger(__name__)

# The signer's own caps on value leaving the platform (payments + fee), when its operator
# sets none: 0.1 BTC in one transaction, 0.5 BTC over any 24 hours. There is no "no limit".
DEFAULT_MAX_TX_SAT = 10_000_000
DEFAULT_MAX_DAILY_SAT = 50_000_000

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


def _utcnow() -> datetime:
    return datetime.now(UTC)


def _plain(value: Any) -> Any:
    """A request value as it may appear in a refusal line (whatever the caller sent)."""
    return value if type(value) in (int, str) or value is None else repr(value)[:100]


class HotSigner:
    """Signs payouts and sweeps from one seed. Thread-safe; holds private keys: never log or
    pickle it.

    ``cold_descriptor``: the cold multisig outputs may sweep into (None or "": no cold
    wallet, cold outputs are refused). ``max_tx_sat`` / ``max_daily_sat``: the caps on value
    leaving the platform (see :mod:`satvault.signer._limits`); the window is rebuilt from
    ``audit_log``. ``clock`` is for tests.
    """

    def __init__(self, seed: bytes, network: str, *,
                 audit_log: str | os.PathLike[str] | None = None,
                 cold_descriptor: str | None = None,
                 max_tx_sat: int = DEFAULT_MAX_TX_SAT,
                 max_daily_sat: int = DEFAULT_MAX_DAILY_SAT,
                 clock: Callable[[], datetime] = _utcnow) -> None:
        if network not in NETWORKS:
            raise ValueError(f"unknown network {network!r}")
        self.network = network
        self._keys = Keyring(seed, network)
        self._audit = AuditLog(audit_log) if audit_log is not None else None
        self._cold = ColdWallet.parse(cold_descriptor, network,
                                      signer_fingerprint=self._keys.fingerprint) \
            if cold_descriptor else None
        self._window = SpendWindow(max_tx_sat, max_daily_sat)
        self._paid = PaidRefs()
        self._clock = clock
        self._lock = threading.Lock()
        if audit_log is not None:
            spends = []
            for record in read_records(audit_log):
                if record.get("event") == "sign_payout":
                    spends.append(spend_from_record(record))
                self._paid.load((record,))
            self._window.load(spends, clock())

    @classmethod
    def from_material(cls, material: SeedMaterial, *,
                      audit_log: str | os.PathLike[str] | None = None,
                      **options: Any) -> HotSigner:
        """``options``: the keyword arguments of :class:`HotSigner` after ``audit_log``."""
        return cls(material.seed, material.network, audit_log=audit_log, **options)

    def __repr__(self) -> str:
        return f"HotSigner(fingerprint={self.fingerprint.hex()}, network={self.network})"

    @property
    def fingerprint(self) -> bytes:
        return self._keys.fingerprint

    @property
    def cold_descriptor(self) -> str | None:
        """The cold wallet's canonical descriptor, if one was configured."""
        return self._cold.descriptor if self._cold is not None else None

    def limits(self) -> dict[str, int]:
        """The caps and how much of the rolling 24-hour one is used (no secrets)."""
        with self._lock:
            used = self._window.used(self._clock())
        return {"max_tx_sat": self._window.max_tx_sat,
                "max_daily_sat": self._window.max_daily_sat,
                "used_24h_sat": used, "left_24h_sat": max(0, self._window.max_daily_sat - used)}

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
        With no payments it is a sweep: every output must be the platform's own.

        Raises a :class:`~satvault.signing.errors.SigningRefused` subclass, having signed
        nothing, when any check fails (:class:`~satvault.signing.errors.LimitExceeded` when
        the signer's caps are reached); the refusal is logged and appended to the audit log.
        """
        try:
            with self._lock:
                return self._sign_payout(psbt_b64, payments, max_fee_sat, max_feerate_sat_vb)
        except SigningRefused as refused:
            self._record_refusal(refused, psbt_b64, payments, max_fee_sat, max_feerate_sat_vb)
            raise

    def _sign_payout(self, psbt_b64: str, payments: Sequence[Payment], max_fee_sat: int,
                     max_feerate_sat_vb: int) -> SignedTx:
        specs = _check_request(payments, max_fee_sat, max_feerate_sat_vb)
        if not isinstance(psbt_b64, str):
            raise InvalidRequest("the PSBT must be a base64 (or hex) string")
        try:
            psbt = PSBT.from_string(psbt_b64.strip())
        except Exception as exc:  # embit raises assorted errors on malformed input
            raise InvalidPsbt(f"not a readable PSBT: {exc}") from exc
        plan = check_payout(psbt, specs, self._keys, max_fee_sat=max_fee_sat, cold=self._cold)

        base_size = len(psbt.tx.serialize())  # no witnesses yet: the stripped size
        largest = _vsize(base_size, base_size + _SEGWIT_MARKER_FLAG
                         + _MAX_P2WPKH_WITNESS * len(plan.inputs))
        if plan.fee_sat > max_feerate_sat_vb * largest:
            raise FeeTooHigh(f"the fee of {plan.fee_sat} sat on at most {largest} vB is above "
                             f"{max_feerate_sat_vb} sat/vB")

        signature = Signature("", plan.outpoints, frozenset(
            o.ref for o in plan.outputs if o.kind == "payment" and o.ref))
        self._paid.check(signature)
        now = self._clock()
        self._window.check(plan.outpoints, plan.leaving_sat, now,
                           what=f"payments {plan.payments_sat} sat + fee {plan.fee_sat} sat")

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
            self._audit.append(self._audit_record(now, txid, plan, vsize, max_fee_sat,
                                                  max_feerate_sat_vb))
        self._window.add(Spend(now, txid, plan.outpoints, plan.leaving_sat))
        self._paid.add(Signature(txid, signature.outpoints, signature.refs))
        return SignedTx(txid, raw.hex(), str(psbt.to_base64()), plan.fee_sat)

    def abandon(self, txid: str, *, reason: str) -> bool:
        """Give up a transaction this signer signed, which the caller knows can never
        confirm (refused by the node, never accepted by one): the refs it paid may be paid
        from other coins (see :mod:`satvault.signer._paid`). Written to the audit log first.
        True if it was given up now; False if it was already, or was never signed here.
        Raises ``ValueError`` for a malformed txid."""
        with self._lock:
            if not self._paid.signed(txid) or self._paid.abandoned(txid):
                return False
            if self._audit is not None:
                self._audit.append({
                    "time": self._clock().isoformat(timespec="milliseconds"),
                    "event": "abandoned", "network": self.network, "txid": txid,
                    "reason": str(reason)[:500]})
            self._paid.abandon(txid)
        log.warning("signer.abandoned", txid=txid, reason=str(reason)[:500])
        return True

    def payers(self, refs: Sequence[str]) -> list[Payer]:
        """The transactions this signer signed paying any of ``refs`` and not given up: the
        ones that make it refuse (``PaidBefore``) to pay those refs again from other coins.
        Read-only; what the web side needs to prove on its node that one can never confirm
        before it gives it up (:meth:`abandon`)."""
        with self._lock:
            found = self._paid.payers(str(r) for r in refs)
        return [Payer(s.txid, tuple(sorted(s.outpoints)), tuple(sorted(s.refs))) for s in found]

    def _audit_record(self, now: datetime, txid: str, plan: PayoutPlan, vsize: int,
                      max_fee_sat: int, max_feerate_sat_vb: int) -> dict[str, Any]:
        net = self.network
        return {
            "time": now.isoformat(timespec="milliseconds"),
            "event": "sign_payout",
            "network": net,
            "txid": txid,
            "fee_sat": plan.fee_sat,
            "leaving_sat": plan.leaving_sat,
            "vsize": vsize,
            "max_fee_sat": max_fee_sat,
            "max_feerate_sat_vb": max_feerate_sat_vb,
            "max_tx_sat": self._window.max_tx_sat,
            "max_daily_sat": self._window.max_daily_sat,
            "inputs": [{"outpoint": f"{i.txid}:{i.vout}", "value_sat": i.value_sat,
                        "wallet": i.wallet.value, "path": format_path(i.path)}
                       for i in plan.inputs],
            "outputs": [{"n": o.n, "to": describe_script(o.script_pubkey, net),
                         "amount_sat": o.amount_sat, "kind": o.kind, "ref": o.ref,
                         "wallet": o.wallet, "path": _output_path(o)}
                        for o in plan.outputs],
        }

    # ------------------------------------------------------------------ refusals
    def _record_refusal(self, refused: SigningRefused, psbt_b64: Any, payments: Any,
                        max_fee_sat: Any, max_feerate_sat_vb: Any) -> None:
        """Log a refusal and append it to the audit log; never raise (the caller re-raises
        the refusal itself)."""
        record: dict[str, Any] = {
            "time": self._clock().isoformat(timespec="milliseconds"),
            "event": "refused",
            "network": self.network,
            "error_type": type(refused).__name__,
            "reason": str(refused),
            "max_fee_sat": _plain(max_fee_sat),
            "max_feerate_sat_vb": _plain(max_feerate_sat_vb),
        }
        record.update(self._psbt_summary(psbt_b64))
        record["payments"] = self._payments_summary(payments)
        log.warning("signer.refused", error_type=record["error_type"], reason=record["reason"],
                    txid=record.get("txid"))
        if self._audit is None:
            return
        try:
            self._audit.append(record)
        except AuditLogError as exc:
            log.error("signer.refusal_not_logged", error=str(exc))

    def _psbt_summary(self, psbt_b64: Any) -> dict[str, Any]:
        """What the PSBT claims (txid, inputs, outputs), as far as it can be read."""
        try:
            psbt = PSBT.from_string(psbt_b64.strip())
        except Exception:  # unreadable: the reason says so
            return {}
        out: dict[str, Any] = {}
        with contextlib.suppress(Exception):
            out["txid"] = bytes(psbt.tx.txid()).hex()
        with contextlib.suppress(Exception):
            out["inputs"] = [{"outpoint": f"{bytes(s.txid).hex()}:{s.vout}",
                              "value_sat": int(s.witness_utxo.value) if s.witness_utxo else None}
                             for s in psbt.inputs]
            out["outputs"] = [{"n": n, "amount_sat": _plain(s.value),
                               "to": describe_script(bytes(s.script_pubkey.data), self.network)
                               if s.script_pubkey is not None else None}
                              for n, s in enumerate(psbt.outputs)]
        return out

    def _payments_summary(self, payments: Any) -> list[dict[str, Any]]:
        try:
            return [{"ref": _plain(p.ref), "amount_sat": _plain(p.amount_sat),
                     "to": describe_script(bytes(p.script_pubkey), self.network)}
                    for p in payments]
        except Exception:
            return []

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
                "time": self._clock().isoformat(timespec="milliseconds"),
                "event": "sign_reserves", "network": self.network, "message": message,
                "unsigned_txid": bytes(psbt.tx.txid()).hex(), "total_sat": plan.total_sat,
                "inputs": [{"n": n, "outpoint": o, "value_sat": v, "path": p}
                           for n, o, v, p in plan.signed]})
        return str(psbt.to_base64())


def _output_path(o: CheckedOutput) -> str | None:
    if o.path is None:
        return None
    return format_path(o.path, prefix="cold") if o.wallet == "cold" else format_path(o.path)
