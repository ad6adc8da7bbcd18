"""The cold wallet as the signer knows it: a watch-only multisig it may sweep into.

The cold wallet is ``wsh(sortedmulti(m,[fp/48h/c'/0h/2h]tpub…/<0;1>/*,…))`` (2-of-3 by
default, 3-of-5 supported): its keys belong to offline cosigners, never to this signer. The
signer is given the descriptor at start-up, not by the caller, so a compromised web process
cannot substitute its own "cold" wallet.

A PSBT output is accepted as a cold output only when it proves it: its BIP32 derivations name
cosigners of the descriptor (master fingerprint and a path below that key's origin), all at
one ``chain/index`` (chain 0 or 1, non-hardened index), each claimed key is the cosigner's
key at that ``chain/index``, and the descriptor derived there is exactly the output's
script. Anything short of that is refused as :class:`BadChange` naming the output. This
module holds no private key; it only compares public data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from satvault.onchain.descriptors import ScriptKind, WatchOnlyWallet, parse_wallet
from satvault.onchain.errors import OnchainError
from satvault.onchain.keys import ExtendedPubKey
from satvault.signing.errors import BadChange, InvalidColdDescriptor
from satvault.signing.paths import CHANGE_CHAIN, HARDENED, RECEIVE_CHAIN, format_path

__all__ = ["ColdWallet", "Cosigner"]

@dataclass(frozen=True, slots=True)
class Cosigner:
    fingerprint: bytes  # the cosigner's master key fingerprint (key origin)
    origin: tuple[int, ...]  # the path from that master key to the xpub
    xpub: ExtendedPubKey


@dataclass(frozen=True, slots=True)
class ColdWallet:
    wallet: WatchOnlyWallet
    cosigners: tuple[Cosigner, ...]

    @classmethod
    def parse(cls, text: str, network: str, *, signer_fingerprint: bytes) -> ColdWallet:
        """Read the cold descriptor; raise :class:`InvalidColdDescriptor` saying what is
        wrong. Every key needs its origin ``[fingerprint/path]``, and none may come from
        this signer's own seed (cold keys are offline by definition)."""
        try:
            wallet = parse_wallet(text, network)
        except OnchainError as exc:
            raise InvalidColdDescriptor(f"the cold descriptor: {exc}") from exc
        if wallet.kind is not ScriptKind.P2WSH_MULTI or not wallet.sorted_keys:
            raise InvalidColdDescriptor(f"the cold descriptor is {wallet.kind.value}"
                                        + ("" if wallet.sorted_keys else " with multi()")
                                        + "; it must be a wsh(sortedmulti(m, …)) of offline "
                                        "cosigners")
        if len(wallet.keys) < 2:
            raise InvalidColdDescriptor("the cold descriptor has one key; a cold wallet is a "
                                        "multisig of several offline cosigners")
        # The web side's rules too (custody.cold), so the signer allows no less than the docs
        # say (found in a review: it took 1-of-n, multi() and one seed's keys twice).
        if wallet.threshold < 2:
            raise InvalidColdDescriptor(f"the cold descriptor needs {wallet.threshold} "
                                        "signature; a cold wallet needs at least two")
        fingerprints = [origin[0] for k in wallet.keys if (origin := k.origin_parts())]
        if len(set(fingerprints)) != len(fingerprints):
            raise InvalidColdDescriptor("two cold keys share a master fingerprint: one seed "
                                        "would hold two votes")
        if len({k.key.pubkey for k in wallet.keys}) != len(wallet.keys):
            raise InvalidColdDescriptor("the same key appears twice in the cold descriptor")
        cosigners = []
        for k, key in enumerate(wallet.keys):
            origin = key.origin_parts()
            if origin is None:
                raise InvalidColdDescriptor(f"cold key {k} has no origin [fingerprint/path]; "
                                            "the signer needs it to recognise cold outputs")
            fingerprint, path = origin
            if fingerprint == signer_fingerprint:
                raise InvalidColdDescriptor(f"cold key {k} comes from this signer's own seed "
                                            f"({fingerprint.hex()}); cold keys stay offline")
            cosigners.append(Cosigner(fingerprint, path, key.key))
        return cls(wallet, tuple(cosigners))

    @property
    def descriptor(self) -> str:
        return self.wallet.descriptor()

    def _fingerprints(self) -> set[bytes]:
        return {c.fingerprint for c in self.cosigners}

    def claimed(self, scope: Any) -> bool:
        """Does this PSBT output carry a derivation naming one of the cosigners?"""
        fps = self._fingerprints()
        return any(der.fingerprint in fps for der in scope.bip32_derivations.values())

    def check(self, where: str, spk: bytes, scope: Any) -> tuple[int, int]:
        """Prove the output is the cold wallet's; return its ``(chain, index)``."""
        fps = self._fingerprints()
        position: tuple[int, int] | None = None
        for pub, der in scope.bip32_derivations.items():
            if der.fingerprint not in fps:
                continue
            path = tuple(der.derivation)
            claimed = format_path(path, prefix=der.fingerprint.hex())
            matches = [c for c in self.cosigners if c.fingerprint == der.fingerprint
                       and len(path) == len(c.origin) + 2 and path[:-2] == c.origin]
            if not matches:
                raise BadChange(f"{where} claims the cold cosigner key {claimed}, which is not "
                                "chain/index below that cosigner's origin in the cold "
                                "descriptor")
            chain, index = path[-2], path[-1]
            if chain not in (RECEIVE_CHAIN, CHANGE_CHAIN) or index >= HARDENED:
                raise BadChange(f"{where} claims the cold cosigner key {claimed}: chain "
                                f"{chain} index {index} is not a cold wallet address")
            if position is not None and position != (chain, index):
                raise BadChange(f"{where} claims cold cosigner keys at two positions "
                                f"({position[0]}/{position[1]} and {chain}/{index})")
            position = (chain, index)
            if not any(c.xpub.pubkey_at(chain, index) == bytes(pub.sec()) for c in matches):
                raise BadChange(f"{where} claims the cold cosigner key {claimed}, but that "
                                "cosigner's key there is a different one")
        if position is None:  # claimed() was true, so this cannot happen; be sure
            raise BadChange(f"{where} has no cold cosigner derivation")
        chain, index = position
        derived = self.wallet.derive(index, change=chain)
        if derived.script_pubkey != spk:
            raise BadChange(f"{where} claims to be the cold wallet's address {chain}/{index}, "
                            f"but the cold descriptor derives {derived.address} there")
        return position
