"""Bitcoin addresses both ways: scripts to addresses for what we hand out, and strict parsing
of what users give us (BIP173 bech32, BIP350 bech32m, base58check), with the network checked.

The parser answers with the scriptPubKey; everything downstream (the watcher, the payout job)
works on scripts, never on address strings.
"""

from __future__ import annotations

from dataclasses import dataclass

from embit import base58, bech32

from satvault.onchain.errors import InvalidAddress, WrongNetwork

__all__ = ["HRP", "AddressInfo", "parse_address", "script_to_address"]

HRP = {"mainnet": "bc", "testnet": "tb", "signet": "tb", "regtest": "bcrt"}
_HRP_NETWORK = {"bc": "mainnet", "tb": "testnet or signet", "bcrt": "regtest"}
_B58 = {  # version byte → (kind, networks)
    0x00: ("p2pkh", ("mainnet",)),
    0x05: ("p2sh", ("mainnet",)),
    0x6F: ("p2pkh", ("testnet", "signet", "regtest")),
    0xC4: ("p2sh", ("testnet", "signet", "regtest")),
}
_B58_VERSION = {("p2pkh", "main"): 0x00, ("p2sh", "main"): 0x05,
                ("p2pkh", "test"): 0x6F, ("p2sh", "test"): 0xC4}


@dataclass(frozen=True, slots=True)
class AddressInfo:
    address: str
    script_pubkey: bytes
    kind: str  # p2pkh, p2sh, p2wpkh, p2wsh, p2tr, witness_vN
    network: str


def _segwit_kind(version: int, program: bytes) -> str:
    if version == 0:
        return "p2wpkh" if len(program) == 20 else "p2wsh"
    if version == 1 and len(program) == 32:
        return "p2tr"
    return f"witness_v{version}"


def _witness_script(version: int, program: bytes) -> bytes:
    op = 0 if version == 0 else 0x50 + version
    return bytes([op, len(program)]) + program


def parse_address(address: str, network: str) -> AddressInfo:
    """Validate ``address`` for ``network`` and return its scriptPubKey; typed errors say why."""
    text = address.strip()
    if not text or len(text) > 90:
        raise InvalidAddress("not a Bitcoin address")
    lowered = text.lower()
    if "1" in lowered and lowered.rsplit("1", 1)[0] in _HRP_NETWORK:
        hrp = lowered.rsplit("1", 1)[0]
        if text != lowered and text != text.upper():
            raise InvalidAddress("a bech32 address must not mix upper and lower case")
        version, program = bech32.decode(hrp, lowered)
        if version is None or program is None:
            raise InvalidAddress("not a valid bech32/bech32m address (bad checksum, encoding "
                                 "or witness program)")
        if HRP[network] != hrp:
            raise WrongNetwork(f"this is a {_HRP_NETWORK[hrp]} address; this platform runs on "
                               f"{network}")
        prog = bytes(program)
        return AddressInfo(lowered, _witness_script(version, prog),
                           _segwit_kind(version, prog), network)
    try:
        raw = base58.decode_check(text)
    except Exception as exc:  # embit raises assorted errors for bad base58/checksums
        raise InvalidAddress("not a valid Bitcoin address (bad base58 checksum)") from exc
    if len(raw) != 21 or raw[0] not in _B58:
        raise InvalidAddress("not a valid Bitcoin address (unknown version or length)")
    kind, networks = _B58[raw[0]]
    if network not in networks:
        raise WrongNetwork(f"this is a {'/'.join(networks)} address; this platform runs on "
                           f"{network}")
    h = raw[1:]
    spk = (b"\x76\xa9\x14" + h + b"\x88\xac") if kind == "p2pkh" else (b"\xa9\x14" + h + b"\x87")
    return AddressInfo(text, spk, kind, network)


def script_to_address(script_pubkey: bytes, network: str) -> str:
    """The address of a standard output script (what we display and put in BIP21)."""
    s = script_pubkey
    family = "main" if network == "mainnet" else "test"
    if len(s) == 25 and s[:3] == b"\x76\xa9\x14" and s[23:] == b"\x88\xac":
        return str(base58.encode_check(bytes([_B58_VERSION[("p2pkh", family)]]) + s[3:23]))
    if len(s) == 23 and s[:2] == b"\xa9\x14" and s[22] == 0x87:
        return str(base58.encode_check(bytes([_B58_VERSION[("p2sh", family)]]) + s[2:22]))
    if len(s) >= 4 and (s[0] == 0 or 0x51 <= s[0] <= 0x60) and s[1] == len(s) - 2:
        version = 0 if s[0] == 0 else s[0] - 0x50
        encoded = bech32.encode(HRP[network], version, s[2:])
        if encoded is None:
            raise InvalidAddress("witness program cannot be encoded")
        return str(encoded)
    raise InvalidAddress(f"no address form for script {s.hex()}")
