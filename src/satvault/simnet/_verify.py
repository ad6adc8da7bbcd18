"""Input script verification for the spends the simulator understands.

Supported: P2WPKH (BIP143 sighash), P2TR key path (BIP341 sighash, BIP340 Schnorr),
P2WSH whose witness script is ``OP_m <keys> OP_n OP_CHECKMULTISIG`` (what ``wsh(multi(…))``
and ``wsh(sortedmulti(…))`` produce), those two wrapped in P2SH, and legacy P2PKH. Anything
else (taproot script paths, arbitrary witness scripts, bare scripts) raises
``UnsupportedScript``: simnet cannot say whether it is valid, so it refuses it.

Failures are reported the way Bitcoin Core words them. Core first checks with the standard
(policy) flags; if that fails it re-checks with consensus flags only, and reports
``mandatory-script-verify-flag-failed (<first error>)`` when consensus fails too, otherwise
``non-mandatory-script-verify-flag (<first error>)``. A wrong ECDSA signature therefore reads
``… (Signature must be zero for failed CHECK(MULTI)SIG operation)`` (NULLFAIL is a policy
flag, but the spend is invalid under consensus as well) and a wrong Schnorr signature
``… (Invalid Schnorr signature)``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any, NamedTuple

from embit import hashes
from embit.script import Script
from embit.util import secp256k1

from satvault.simnet._primitives import Tx
from satvault.simnet._script import is_push_only, multisig_template, parse_ops

__all__ = ["ScriptFailure", "SpentOutput", "UnsupportedScript", "verify_input"]

_N = 0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141

ERR_EVAL_FALSE = "Script evaluated without error but finished with a false/empty top stack element"
ERR_NULLFAIL = "Signature must be zero for failed CHECK(MULTI)SIG operation"
ERR_SIG_DER = "Non-canonical DER signature"
ERR_HIGH_S = "Non-canonical signature: S value is unnecessarily high"
ERR_HASHTYPE = "Signature hash type missing or not understood"
ERR_PUBKEYTYPE = "Public key is neither compressed or uncompressed"
ERR_WITNESS_PUBKEYTYPE = "Using non-compressed keys in segwit"
ERR_EQUALVERIFY = "Script failed an OP_EQUALVERIFY operation"
ERR_STACK = "Operation not valid with the current stack size"
ERR_CLEANSTACK = "Stack size must be exactly one after execution"
ERR_NULLDUMMY = "Dummy CHECKMULTISIG argument must be zero"
ERR_WITNESS_MISMATCH = "Witness program hash mismatch"
ERR_WITNESS_EMPTY = "Witness program was passed an empty witness"
ERR_WITNESS_MALLEATED = "Witness requires empty scriptSig"
ERR_WITNESS_MALLEATED_P2SH = "Witness requires only-redeemscript scriptSig"
ERR_WITNESS_UNEXPECTED = "Witness provided for non-witness script"
ERR_SCHNORR_SIG = "Invalid Schnorr signature"
ERR_SCHNORR_SIZE = "Invalid Schnorr signature size"
ERR_SCHNORR_HASHTYPE = "Invalid Schnorr signature hash type"
ERR_PUSHONLY = "Only push operators allowed in signatures"

_ECDSA_HASHTYPES = frozenset({1, 2, 3, 0x81, 0x82, 0x83})
_SCHNORR_HASHTYPES = frozenset({0, 1, 2, 3, 0x81, 0x82, 0x83})


class SpentOutput(NamedTuple):
    value: int
    spk: bytes


class ScriptFailure(Exception):
    def __init__(self, error: str, *, mandatory: bool = True) -> None:
        self.error = error
        self.mandatory = mandatory
        prefix = ("mandatory-script-verify-flag-failed" if mandatory
                  else "non-mandatory-script-verify-flag")
        self.reason = f"{prefix} ({error})"
        super().__init__(self.reason)


class UnsupportedScript(Exception):
    """simnet does not evaluate this kind of script."""

    def __init__(self, what: str) -> None:
        self.reason = f"simnet-unsupported-script ({what})"
        super().__init__(self.reason)


def _der_sig_parts(sig: bytes) -> tuple[int, int] | None:
    """(r, s) of a strictly DER-encoded signature followed by a hashtype byte, else None."""
    b = sig
    if not 9 <= len(b) <= 73 or b[0] != 0x30 or b[1] != len(b) - 3:
        return None
    len_r = b[3]
    if 5 + len_r >= len(b):
        return None
    len_s = b[5 + len_r]
    if len_r + len_s + 7 != len(b) or b[2] != 0x02 or len_r == 0 or b[4] & 0x80:
        return None
    if len_r > 1 and b[4] == 0 and not b[5] & 0x80:
        return None
    if b[len_r + 4] != 0x02 or len_s == 0 or b[len_r + 6] & 0x80:
        return None
    if len_s > 1 and b[len_r + 6] == 0 and not b[len_r + 7] & 0x80:
        return None
    r = int.from_bytes(b[4:4 + len_r], "big")
    s = int.from_bytes(b[6 + len_r:6 + len_r + len_s], "big")
    return r, s


def _ecdsa_ok(der: bytes, pubkey: bytes, msg: bytes) -> bool:
    try:
        sig = secp256k1.ecdsa_signature_normalize(secp256k1.ecdsa_signature_parse_der(der))
        point = secp256k1.ec_pubkey_parse(pubkey)
        return bool(secp256k1.ecdsa_verify(sig, msg, point))
    except Exception:
        return False


class _Checker:
    """Signature checks for one input of one transaction."""

    def __init__(self, tx: Tx, index: int, spent: Sequence[SpentOutput]) -> None:
        self.tx: Any = tx.tx
        self.index = index
        self.spent = spent

    def check_ecdsa(self, sig: bytes, pubkey: bytes, script_code: bytes, *,
                    witness: bool) -> bool:
        """Core's EvalChecksigPreTapscript: encoding checks raise, a wrong signature is False."""
        if sig:
            parts = _der_sig_parts(sig)
            if parts is None:
                raise ScriptFailure(ERR_SIG_DER)
            hashtype = sig[-1]
            if parts[1] > _N // 2:
                ok = hashtype in _ECDSA_HASHTYPES and self._ecdsa(sig, pubkey, script_code,
                                                                  witness)
                raise ScriptFailure(ERR_HIGH_S, mandatory=not ok)
            if hashtype not in _ECDSA_HASHTYPES:
                raise ScriptFailure(ERR_HASHTYPE, mandatory=False)
        if len(pubkey) not in (33, 65) or (len(pubkey) == 33 and pubkey[0] not in (2, 3)) \
                or (len(pubkey) == 65 and pubkey[0] != 4):
            raise ScriptFailure(ERR_PUBKEYTYPE, mandatory=False)
        if witness and len(pubkey) != 33:
            raise ScriptFailure(ERR_WITNESS_PUBKEYTYPE, mandatory=False)
        if not sig:
            return False
        return self._ecdsa(sig, pubkey, script_code, witness)

    def _ecdsa(self, sig: bytes, pubkey: bytes, script_code: bytes, witness: bool) -> bool:
        hashtype = sig[-1]
        try:
            if witness:
                msg = self.tx.sighash_segwit(self.index, Script(script_code),
                                             self.spent[self.index].value, hashtype)
            else:
                msg = self.tx.sighash_legacy(self.index, Script(script_code), hashtype)
        except Exception:
            return False
        return _ecdsa_ok(sig[:-1], pubkey, msg)

    def check_schnorr(self, sig: bytes, xonly: bytes, annex: bytes | None) -> None:
        if len(sig) == 64:
            hashtype = 0
        elif len(sig) == 65:
            hashtype = sig[64]
            if hashtype == 0:
                raise ScriptFailure(ERR_SCHNORR_HASHTYPE)
        else:
            raise ScriptFailure(ERR_SCHNORR_SIZE)
        if hashtype not in _SCHNORR_HASHTYPES or \
                (hashtype & 3 == 3 and self.index >= len(self.tx.vout)):
            raise ScriptFailure(ERR_SCHNORR_HASHTYPE)
        try:
            msg = self.tx.sighash_taproot(self.index, [Script(s.spk) for s in self.spent],
                                          [s.value for s in self.spent], hashtype, annex=annex)
            point = secp256k1.ec_pubkey_parse(b"\x02" + xonly)
            xpub, _ = secp256k1.xonly_pubkey_from_pubkey(point)
            ok = secp256k1.schnorrsig_verify(sig[:64], msg, xpub)
        except Exception:
            ok = False
        if not ok:
            raise ScriptFailure(ERR_SCHNORR_SIG)

    def checkmultisig(self, stack: list[bytes], script: bytes, *, witness: bool) -> bool:
        tmpl = multisig_template(script)
        if tmpl is None:
            raise UnsupportedScript("witness script is not OP_CHECKMULTISIG")
        m, keys = tmpl
        if len(stack) < m + 1:
            raise ScriptFailure(ERR_STACK)
        sigs = stack[len(stack) - m:]
        dummy = stack[len(stack) - m - 1]
        # Core walks from the top of the stack: the last signature against the last key.
        isig, ikey, remaining_sigs, remaining_keys = m - 1, len(keys) - 1, m, len(keys)
        success = True
        while success and remaining_sigs > 0:
            if self.check_ecdsa(sigs[isig], keys[ikey], script, witness=witness):
                isig -= 1
                remaining_sigs -= 1
            ikey -= 1
            remaining_keys -= 1
            if remaining_sigs > remaining_keys:
                success = False
        if not success and any(sigs):
            raise ScriptFailure(ERR_NULLFAIL)
        if dummy:
            raise ScriptFailure(ERR_NULLDUMMY)
        del stack[len(stack) - m - 1:]
        return success


def verify_input(tx: Tx, index: int, spent: Sequence[SpentOutput]) -> None:
    """Raise ScriptFailure / UnsupportedScript unless input ``index`` validly spends
    ``spent[index]`` (``spent`` lists every input's spent output, for BIP341)."""
    inp = tx.tx.vin[index]
    script_sig: bytes = inp.script_sig.data
    witness: list[bytes] = list(inp.witness.items)
    spk = spent[index].spk
    checker = _Checker(tx, index, spent)

    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        _verify_p2sh(checker, script_sig, witness, spk[2:22])
        return
    if (len(spk) == 22 and spk[:2] == b"\x00\x14") or (len(spk) == 34 and spk[:2] in (
            b"\x00\x20", b"\x51\x20")):
        if script_sig:
            raise ScriptFailure(ERR_WITNESS_MALLEATED)
        _verify_witness(checker, spk[0], spk[2:], witness)
        return
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        _verify_p2pkh(checker, script_sig, witness, spk)
        return
    raise UnsupportedScript(f"cannot spend scriptPubKey {spk.hex()}")


def _pushes(script_sig: bytes) -> list[bytes]:
    if not is_push_only(script_sig):
        raise ScriptFailure(ERR_PUSHONLY)
    ops = parse_ops(script_sig) or []
    out: list[bytes] = []
    for op, data in ops:
        if data is not None:
            out.append(data)
        elif op == 0x4F:
            out.append(b"\x81")
        else:
            out.append(bytes([op - 0x50]))
    return out


def _verify_p2pkh(checker: _Checker, script_sig: bytes, witness: list[bytes],
                  spk: bytes) -> None:
    stack = _pushes(script_sig)
    if len(stack) < 1:
        raise ScriptFailure(ERR_STACK)
    if hashes.hash160(stack[-1]) != spk[3:23]:
        raise ScriptFailure(ERR_EQUALVERIFY)
    if len(stack) < 2:
        raise ScriptFailure(ERR_STACK)
    ok = checker.check_ecdsa(stack[-2], stack[-1], spk, witness=False)
    if not ok:
        raise ScriptFailure(ERR_NULLFAIL if stack[-2] else ERR_EVAL_FALSE)
    if witness:
        raise ScriptFailure(ERR_WITNESS_UNEXPECTED)
    if len(stack) != 2:
        raise ScriptFailure(ERR_CLEANSTACK, mandatory=False)


def _verify_p2sh(checker: _Checker, script_sig: bytes, witness: list[bytes],
                 script_hash: bytes) -> None:
    stack = _pushes(script_sig)
    if not stack:
        raise ScriptFailure(ERR_STACK)
    redeem = stack[-1]
    if hashes.hash160(redeem) != script_hash:
        raise ScriptFailure(ERR_EVAL_FALSE)
    if len(redeem) in (22, 34) and redeem[0] == 0 and redeem[1] == len(redeem) - 2:
        if script_sig != bytes([len(redeem)]) + redeem:
            raise ScriptFailure(ERR_WITNESS_MALLEATED_P2SH)
        _verify_witness(checker, 0, redeem[2:], witness)
        return
    raise UnsupportedScript("legacy P2SH redeem scripts")


def _verify_witness(checker: _Checker, version_op: int, program: bytes,
                    witness: list[bytes]) -> None:
    if version_op == 0 and len(program) == 20:
        if len(witness) != 2:
            raise ScriptFailure(ERR_WITNESS_MISMATCH)
        sig, pubkey = witness
        if hashes.hash160(pubkey) != program:
            raise ScriptFailure(ERR_EQUALVERIFY)
        script_code = b"\x76\xa9\x14" + program + b"\x88\xac"
        if not checker.check_ecdsa(sig, pubkey, script_code, witness=True):
            raise ScriptFailure(ERR_NULLFAIL if sig else ERR_EVAL_FALSE)
        return
    if not witness:
        raise ScriptFailure(ERR_WITNESS_EMPTY)
    if version_op == 0:
        script = witness[-1]
        if hashlib.sha256(script).digest() != program:
            raise ScriptFailure(ERR_WITNESS_MISMATCH)
        stack = witness[:-1]
        ok = checker.checkmultisig(stack, script, witness=True)
        if stack:
            raise ScriptFailure(ERR_CLEANSTACK)
        if not ok:
            raise ScriptFailure(ERR_EVAL_FALSE)
        return
    annex = None
    if len(witness) >= 2 and witness[-1][:1] == b"\x50":
        annex = witness[-1]
        witness = witness[:-1]
    if len(witness) != 1:
        raise UnsupportedScript("taproot script-path spends")
    checker.check_schnorr(witness[0], program, annex)
