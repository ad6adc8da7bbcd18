"""Watch-only deposit wallets: an account xpub or an output descriptor, to addresses.

Accepted forms (BIP380-386, BIP389 multipath):

* a bare account key — ``xpub``/``tpub``/``zpub``/``vpub`` → ``wpkh``, ``ypub``/``upub`` →
  ``sh(wpkh)`` (SLIP-132 prefixes say which script the wallet uses);
* ``wpkh(KEY)``, ``sh(wpkh(KEY))``, ``pkh(KEY)``, ``tr(KEY)`` and
  ``wsh(sortedmulti(M,KEY,…))`` / ``wsh(multi(M,KEY,…))``,

where ``KEY`` is ``[fingerprint/path]xpub`` optionally followed by ``/<0;1>/*``, ``/0/*`` or
``/1/*`` (any of them means "receive chain 0, change chain 1 below this key"). A trailing
``#checksum`` is verified. Hardened steps after the key would need a private key and are
refused, as is anything private.

Addresses are ``KEY/<change>/<index>``: BIP44/49/84/86 account paths with receive chain 0 and
change chain 1.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from embit.descriptor.checksum import add_checksum
from embit.descriptor.checksum import checksum as descriptor_checksum

from satvault.onchain.addresses import HRP
from satvault.onchain.errors import InvalidDescriptor, InvalidKey
from satvault.onchain.keys import (
    NETWORK_FAMILY,
    ExtendedPubKey,
    hash160,
    parse_extended_key,
    taproot_output_key,
)

__all__ = ["DerivedAddress", "ScriptKind", "WatchOnlyWallet", "parse_wallet"]


class ScriptKind(StrEnum):
    P2WPKH = "wpkh"
    P2SH_P2WPKH = "sh(wpkh)"
    P2PKH = "pkh"
    P2TR = "tr"
    P2WSH_MULTI = "wsh(multi)"


@dataclass(frozen=True, slots=True)
class DerivedAddress:
    change: int
    index: int
    address: str
    script_pubkey: bytes


@dataclass(frozen=True, slots=True)
class KeyExpr:
    origin: str  # "[d34db33f/84h/0h/0h]" or ""
    key: ExtendedPubKey

    def render(self) -> str:
        return f"{self.origin}{self.key.serialize(_canonical_prefix(self.key))}/<0;1>/*"

    def origin_parts(self) -> tuple[bytes, tuple[int, ...]] | None:
        """``[d34db33f/48h/1h/0h/2h]`` → (master fingerprint, path as integers, hardened
        steps + 2^31); None without an origin. How a signer finds its key."""
        m = _ORIGIN.match(self.origin)
        if m is None:
            return None
        steps = tuple(int(s[:-1]) + 0x80000000 if s[-1] in "'hH" else int(s)
                      for s in m["path"].split("/") if s)
        return bytes.fromhex(m["fp"]), steps


def _canonical_prefix(key: ExtendedPubKey) -> str:
    return "xpub" if key.family == "main" else "tpub"


_KEY = re.compile(
    r"^(?P<origin>\[[0-9a-fA-F]{8}(?:/\d+['hH]?)*\])?"
    r"(?P<xkey>[1-9A-HJ-NP-Za-km-z]{100,120})"
    r"(?P<suffix>(?:/<0;1>/\*|/[01]/\*)?)$"
)


def _parse_key(text: str) -> KeyExpr:
    m = _KEY.match(text.strip())
    if m is None:
        if re.search(r"/\d+['hH]", text.split("]")[-1]):
            raise InvalidDescriptor("hardened derivation after the key needs a private key; "
                                    "give the account-level xpub")
        if re.search(r"\s", text.strip()):
            # Never echoed: words with spaces are what a mnemonic looks like (found from
            # outside: a seed file passed where the descriptor file goes printed its first
            # words in the error).
            raise InvalidDescriptor("cannot read a key expression: it has spaces (a seed's "
                                    "words? never give a seed where a descriptor goes); "
                                    "expected [fingerprint/path]xpub…/<0;1>/*")
        raise InvalidDescriptor(f"cannot read key expression {text[:40]!r}…; expected "
                                "[fingerprint/path]xpub…/<0;1>/*")
    key = parse_extended_key(m["xkey"])
    return KeyExpr(m["origin"] or "", key)


_ORIGIN = re.compile(r"^\[(?P<fp>[0-9a-fA-F]{8})(?P<path>(?:/\d+['hH]?)*)\]$")


def _split_args(body: str) -> list[str]:
    return [p.strip() for p in body.split(",")]


@dataclass(frozen=True, slots=True)
class WatchOnlyWallet:
    kind: ScriptKind
    keys: tuple[KeyExpr, ...]
    network: str
    threshold: int = 1
    sorted_keys: bool = True

    # ------------------------------------------------------------------ derivation
    def derive(self, index: int, *, change: int = 0) -> DerivedAddress:
        spk, address = self._script(change, index)
        return DerivedAddress(change, index, address, spk)

    def derive_range(self, start: int, count: int, *, change: int = 0) -> list[DerivedAddress]:
        return [self.derive(i, change=change) for i in range(start, start + count)]

    def witness_script(self, index: int, *, change: int = 0) -> bytes:
        """A multisig wallet's ``OP_m <keys> OP_n OP_CHECKMULTISIG`` at ``change/index``."""
        if self.kind is not ScriptKind.P2WSH_MULTI:
            raise InvalidDescriptor(f"a {self.kind.value} wallet has no witness script")
        pubs = [k.key.pubkey_at(change, index) for k in self.keys]
        if self.sorted_keys:
            pubs.sort()
        ws = bytes([0x50 + self.threshold])
        for p in pubs:
            ws += b"\x21" + p
        return ws + bytes([0x50 + len(pubs), 0xAE])

    def key_origins(self, index: int, *, change: int = 0
                    ) -> list[tuple[bytes, bytes, tuple[int, ...]]]:
        """Each key's (public key, master fingerprint, full path) at ``change/index``, from the
        descriptor's ``[fingerprint/path]`` origins: what a PSBT names so that each signer (a
        cosigner's wallet, the hot signer) recognises its own key. Keys without an origin are
        left out."""
        out = []
        for k in self.keys:
            parts = k.origin_parts()
            if parts is not None:
                out.append((k.key.pubkey_at(change, index), parts[0],
                            (*parts[1], change, index)))
        return out

    def _script(self, change: int, index: int) -> tuple[bytes, str]:
        from embit import base58, bech32

        hrp = HRP[self.network]
        test = self.network != "mainnet"
        if self.kind is ScriptKind.P2WSH_MULTI:
            program = hashlib.sha256(self.witness_script(index, change=change)).digest()
            return b"\x00\x20" + program, bech32.encode(hrp, 0, program)
        pub = self.keys[0].key.pubkey_at(change, index)
        if self.kind is ScriptKind.P2WPKH:
            h = hash160(pub)
            return b"\x00\x14" + h, bech32.encode(hrp, 0, h)
        if self.kind is ScriptKind.P2TR:
            x = taproot_output_key(pub)
            return b"\x51\x20" + x, bech32.encode(hrp, 1, x)
        if self.kind is ScriptKind.P2SH_P2WPKH:
            h = hash160(b"\x00\x14" + hash160(pub))
            return (b"\xa9\x14" + h + b"\x87",
                    base58.encode_check(bytes([0xC4 if test else 0x05]) + h))
        h = hash160(pub)
        return (b"\x76\xa9\x14" + h + b"\x88\xac",
                base58.encode_check(bytes([0x6F if test else 0x00]) + h))

    def derives_like(self, other: WatchOnlyWallet, *, probes: int = 3) -> bool:
        """Whether ``other`` derives the same scripts (the same keys, however written: with
        or without origins or checksum, ``h`` or ``'``), checked on both chains at the first
        ``probes`` indexes."""
        return all(self.derive(i, change=c).script_pubkey
                   == other.derive(i, change=c).script_pubkey
                   for c in (0, 1) for i in range(probes))

    # ------------------------------------------------------------------ rendering
    def descriptor(self) -> str:
        """Canonical descriptor with checksum, for storage and display."""
        keys = [k.render() for k in self.keys]
        body = {
            ScriptKind.P2WPKH: lambda: f"wpkh({keys[0]})",
            ScriptKind.P2SH_P2WPKH: lambda: f"sh(wpkh({keys[0]}))",
            ScriptKind.P2PKH: lambda: f"pkh({keys[0]})",
            ScriptKind.P2TR: lambda: f"tr({keys[0]})",
            ScriptKind.P2WSH_MULTI: lambda: "wsh({}({},{}))".format(
                "sortedmulti" if self.sorted_keys else "multi", self.threshold, ",".join(keys)),
        }[self.kind]()
        return str(add_checksum(body))


def parse_wallet(text: str, network: str) -> WatchOnlyWallet:
    """Read an account xpub or a descriptor for ``network``; typed errors say what is wrong."""
    if network not in NETWORK_FAMILY:
        raise InvalidDescriptor(f"unknown network {network!r}")
    raw = text.strip()
    if "#" in raw:
        body, given = raw.rsplit("#", 1)
        if descriptor_checksum(body) != given:
            raise InvalidDescriptor("descriptor checksum does not match")
        raw = body
    wallet = _parse_body(raw, network)
    family = NETWORK_FAMILY[network]
    for k in wallet.keys:
        if k.key.family != family:
            raise InvalidKey(f"a {k.key.prefix} key belongs to "
                             f"{'mainnet' if k.key.family == 'main' else 'a test network'}; "
                             f"this platform runs on {network}")
    return wallet


def _parse_body(raw: str, network: str) -> WatchOnlyWallet:
    m = re.fullmatch(r"(\w+)\((.*)\)", raw, flags=re.S)
    if m is None:
        key = _parse_key(raw)
        kind = ScriptKind.P2SH_P2WPKH if key.key.prefix in ("ypub", "upub") else ScriptKind.P2WPKH
        return WatchOnlyWallet(kind, (key,), network)
    func, inner = m[1], m[2]
    if func == "wpkh":
        return WatchOnlyWallet(ScriptKind.P2WPKH, (_parse_key(inner),), network)
    if func == "pkh":
        return WatchOnlyWallet(ScriptKind.P2PKH, (_parse_key(inner),), network)
    if func == "tr":
        if "," in inner:
            raise InvalidDescriptor("tr() with a script tree is not supported for deposits; "
                                    "use a key-path-only tr(KEY)")
        return WatchOnlyWallet(ScriptKind.P2TR, (_parse_key(inner),), network)
    if func == "sh":
        m2 = re.fullmatch(r"wpkh\((.*)\)", inner, flags=re.S)
        if m2 is None:
            raise InvalidDescriptor("only sh(wpkh(KEY)) is supported inside sh()")
        return WatchOnlyWallet(ScriptKind.P2SH_P2WPKH, (_parse_key(m2[1]),), network)
    if func == "wsh":
        m2 = re.fullmatch(r"(sortedmulti|multi)\((.*)\)", inner, flags=re.S)
        if m2 is None:
            raise InvalidDescriptor("only wsh(sortedmulti(...)) and wsh(multi(...)) are supported")
        args = _split_args(m2[2])
        try:
            threshold = int(args[0])
        except ValueError as exc:
            raise InvalidDescriptor("the multisig threshold must be a number") from exc
        keys = tuple(_parse_key(a) for a in args[1:])
        if not 1 <= threshold <= len(keys) <= 15:
            raise InvalidDescriptor(f"invalid multisig {threshold}-of-{len(keys)} "
                                    "(1 <= m <= n <= 15)")
        return WatchOnlyWallet(ScriptKind.P2WSH_MULTI, keys, network, threshold,
                               m2[1] == "sortedmulti")
    raise InvalidDescriptor(f"unsupported descriptor function {func}(); use wpkh, sh(wpkh), "
                            "pkh, tr or wsh(sortedmulti)")
