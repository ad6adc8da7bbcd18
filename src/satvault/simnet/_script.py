"""Scripts as Bitcoin Core shows them: output types, regtest addresses, ``asm``, output
descriptors with their checksum, and the dust threshold.

Output types use Core's names (``witness_v0_keyhash`` …). Only regtest addresses are valid:
bech32/bech32m with the ``bcrt`` prefix and base58 with version bytes 0x6f (P2PKH, ``m…``/
``n…``) and 0xc4 (P2SH, ``2…``). The dust threshold is Core's ``GetDustThreshold`` at the
default dust relay fee of 3 sat/vB: the cost of spending the output at that rate.
"""

from __future__ import annotations

from dataclasses import dataclass

from embit import base58, bech32, hashes

from satvault.simnet._primitives import script_num_decode
from satvault.simnet.errors import InvalidDestination

__all__ = [
    "DUST_RELAY_SAT_KVB",
    "ScriptInfo",
    "address_to_spk",
    "descriptor_checksum",
    "dust_threshold",
    "is_push_only",
    "is_unspendable",
    "parse_ops",
    "script_asm",
    "script_info",
    "witness_program",
]

HRP = "bcrt"
P2PKH_VERSION = 0x6F
P2SH_VERSION = 0xC4
DUST_RELAY_SAT_KVB = 3000

_OP_NAMES_61 = (  # opcodes 0x61 (OP_NOP) … 0xba (OP_CHECKSIGADD)
    "NOP", "VER", "IF", "NOTIF", "VERIF", "VERNOTIF", "ELSE", "ENDIF", "VERIFY", "RETURN",
    "TOALTSTACK", "FROMALTSTACK", "2DROP", "2DUP", "3DUP", "2OVER", "2ROT", "2SWAP", "IFDUP",
    "DEPTH", "DROP", "DUP", "NIP", "OVER", "PICK", "ROLL", "ROT", "SWAP", "TUCK", "CAT",
    "SUBSTR", "LEFT", "RIGHT", "SIZE", "INVERT", "AND", "OR", "XOR", "EQUAL", "EQUALVERIFY",
    "RESERVED1", "RESERVED2", "1ADD", "1SUB", "2MUL", "2DIV", "NEGATE", "ABS", "NOT",
    "0NOTEQUAL", "ADD", "SUB", "MUL", "DIV", "MOD", "LSHIFT", "RSHIFT", "BOOLAND", "BOOLOR",
    "NUMEQUAL", "NUMEQUALVERIFY", "NUMNOTEQUAL", "LESSTHAN", "GREATERTHAN", "LESSTHANOREQUAL",
    "GREATERTHANOREQUAL", "MIN", "MAX", "WITHIN", "RIPEMD160", "SHA1", "SHA256", "HASH160",
    "HASH256", "CODESEPARATOR", "CHECKSIG", "CHECKSIGVERIFY", "CHECKMULTISIG",
    "CHECKMULTISIGVERIFY", "NOP1", "CHECKLOCKTIMEVERIFY", "CHECKSEQUENCEVERIFY", "NOP4",
    "NOP5", "NOP6", "NOP7", "NOP8", "NOP9", "NOP10", "CHECKSIGADD",
)
_SIGHASH_NAMES = {1: "ALL", 2: "NONE", 3: "SINGLE", 0x81: "ALL|ANYONECANPAY",
                  0x82: "NONE|ANYONECANPAY", 0x83: "SINGLE|ANYONECANPAY"}


def _op_name(op: int) -> str:
    if op == 0x4F:
        return "-1"
    if 0x51 <= op <= 0x60:
        return str(op - 0x50)
    if op == 0x50:
        return "OP_RESERVED"
    if 0x61 <= op < 0x61 + len(_OP_NAMES_61):
        return "OP_" + _OP_NAMES_61[op - 0x61]
    if op == 0xFF:
        return "OP_INVALIDOPCODE"
    return "OP_UNKNOWN"


def parse_ops(script: bytes) -> list[tuple[int, bytes | None]] | None:
    """Split a script into (opcode, pushed data or None); None if a push runs off the end."""
    ops: list[tuple[int, bytes | None]] = []
    i, n = 0, len(script)
    while i < n:
        op = script[i]
        i += 1
        if op <= 0x4E:
            if op < 0x4C:
                size = op
            else:
                width = {0x4C: 1, 0x4D: 2, 0x4E: 4}[op]
                if i + width > n:
                    return None
                size = int.from_bytes(script[i:i + width], "little")
                i += width
            if i + size > n:
                return None
            ops.append((op, script[i:i + size]))
            i += size
        else:
            ops.append((op, None))
    return ops


def is_push_only(script: bytes) -> bool:
    ops = parse_ops(script)
    return ops is not None and all(op <= 0x60 for op, _ in ops)


def is_unspendable(spk: bytes) -> bool:
    return (len(spk) > 0 and spk[0] == 0x6A) or len(spk) > 10_000


def witness_program(spk: bytes) -> tuple[int, bytes] | None:
    if not 4 <= len(spk) <= 42:
        return None
    if spk[0] != 0 and not 0x51 <= spk[0] <= 0x60:
        return None
    if spk[1] + 2 != len(spk):
        return None
    return (0 if spk[0] == 0 else spk[0] - 0x50), spk[2:]


def _is_der_sig_with_hashtype(b: bytes) -> bool:
    # Bitcoin Core's IsValidSignatureEncoding, on the signature plus hashtype byte.
    if not 9 <= len(b) <= 73 or b[0] != 0x30 or b[1] != len(b) - 3:
        return False
    len_r = b[3]
    if 5 + len_r >= len(b):
        return False
    len_s = b[5 + len_r]
    if len_r + len_s + 7 != len(b) or b[2] != 0x02 or len_r == 0 or b[4] & 0x80:
        return False
    if len_r > 1 and b[4] == 0 and not b[5] & 0x80:
        return False
    if b[len_r + 4] != 0x02 or len_s == 0 or b[len_r + 6] & 0x80:
        return False
    return not (len_s > 1 and b[len_r + 6] == 0 and not b[len_r + 7] & 0x80)


def script_asm(script: bytes, *, sighash_decode: bool = False) -> str:
    """Core's ``ScriptToAsmStr``: small pushes as numbers, others as hex."""
    out: list[str] = []
    unspendable = is_unspendable(script)
    ops = parse_ops(script)
    parsed = ops if ops is not None else (parse_ops(_longest_valid_prefix(script)) or [])
    for op, data in parsed:
        if data is None:
            out.append(_op_name(op))
        elif len(data) <= 4:
            out.append(str(script_num_decode(data)))
        elif sighash_decode and not unspendable and _is_der_sig_with_hashtype(data) \
                and data[-1] in _SIGHASH_NAMES:
            out.append(data[:-1].hex() + f"[{_SIGHASH_NAMES[data[-1]]}]")
        else:
            out.append(data.hex())
    if ops is None:
        out.append("[error]")
    return " ".join(out)


def _longest_valid_prefix(script: bytes) -> bytes:
    for end in range(len(script), -1, -1):
        if parse_ops(script[:end]) is not None:
            return script[:end]
    return b""


@dataclass(frozen=True)
class ScriptInfo:
    type: str
    address: str | None
    desc: str


def _encode_address(spk: bytes, kind: str) -> str | None:
    if kind == "pubkeyhash":
        return str(base58.encode_check(bytes([P2PKH_VERSION]) + spk[3:23]))
    if kind == "scripthash":
        return str(base58.encode_check(bytes([P2SH_VERSION]) + spk[2:22]))
    wp = witness_program(spk)
    if wp is not None and kind.startswith(("witness_", "anchor")):
        encoded = bech32.encode(HRP, wp[0], wp[1])
        return encoded if isinstance(encoded, str) else None
    return None


def _classify(spk: bytes) -> str:
    if len(spk) == 25 and spk[:3] == b"\x76\xa9\x14" and spk[23:] == b"\x88\xac":
        return "pubkeyhash"
    if len(spk) == 23 and spk[:2] == b"\xa9\x14" and spk[22] == 0x87:
        return "scripthash"
    wp = witness_program(spk)
    if wp is not None:
        version, program = wp
        if version == 0 and len(program) == 20:
            return "witness_v0_keyhash"
        if version == 0 and len(program) == 32:
            return "witness_v0_scripthash"
        if version == 1 and len(program) == 32:
            return "witness_v1_taproot"
        if version == 1 and program == b"\x4e\x73":
            return "anchor"
        if version != 0:
            return "witness_unknown"
        return "nonstandard"
    if spk[:1] == b"\x6a" and is_push_only(spk[1:]):
        return "nulldata"
    ops = parse_ops(spk)
    if ops and len(ops) == 2 and ops[1][0] == 0xAC and ops[0][1] is not None \
            and len(ops[0][1]) in (33, 65):
        return "pubkey"
    if multisig_template(spk) is not None:
        return "multisig"
    return "nonstandard"


def multisig_template(script: bytes) -> tuple[int, list[bytes]] | None:
    """(m, pubkeys) for ``OP_m <pk>… OP_n OP_CHECKMULTISIG``, else None."""
    ops = parse_ops(script)
    if not ops or len(ops) < 4 or ops[-1][0] != 0xAE:
        return None
    m_op, n_op = ops[0][0], ops[-2][0]
    if not (0x51 <= m_op <= 0x60 and 0x51 <= n_op <= 0x60):
        return None
    keys = [d for _, d in ops[1:-2]]
    m, n = m_op - 0x50, n_op - 0x50
    if any(k is None or len(k) not in (33, 65) for k in keys) or len(keys) != n or m > n:
        return None
    return m, [k for k in keys if k is not None]


def script_info(spk: bytes) -> ScriptInfo:
    kind = _classify(spk)
    address = _encode_address(spk, kind)
    if address is not None:
        desc = f"addr({address})"
    elif kind == "pubkey":
        desc = f"pk({spk[1:-1].hex()})"
    elif kind == "multisig":
        tmpl = multisig_template(spk)
        assert tmpl is not None
        desc = f"multi({tmpl[0]},{','.join(k.hex() for k in tmpl[1])})"
    else:
        desc = f"raw({spk.hex()})"
    return ScriptInfo(kind, address, f"{desc}#{descriptor_checksum(desc)}")


_INPUT_CHARSET = ("0123456789()[],'/*abcdefgh@:$%{}IJKLMNOPQRSTUVWXYZ&+-.;<=>?!^_|~"
                  "ijklmnopqrstuvwxyzABCDEFGH`#\"\\ ")
_CHECKSUM_CHARSET = "qpzry9x8gf2tvdw0s3jn54khce6mua7l"
_GENERATORS = (0xF5DEE51989, 0xA9FDCA3312, 0x1BAB10E32D, 0x3706B1677A, 0x644D626FFD)


def _desc_polymod(c: int, val: int) -> int:
    top = c >> 35
    c = ((c & 0x7FFFFFFFF) << 5) ^ val
    for i, g in enumerate(_GENERATORS):
        if top >> i & 1:
            c ^= g
    return c


def descriptor_checksum(desc: str) -> str:
    """The 8-character checksum of an output descriptor (BIP 380)."""
    c, cls, count = 1, 0, 0
    for ch in desc:
        pos = _INPUT_CHARSET.find(ch)
        if pos < 0:
            raise ValueError(f"invalid descriptor character {ch!r}")
        c = _desc_polymod(c, pos & 31)
        cls = cls * 3 + (pos >> 5)
        count += 1
        if count == 3:
            c = _desc_polymod(c, cls)
            cls, count = 0, 0
    if count:
        c = _desc_polymod(c, cls)
    for _ in range(8):
        c = _desc_polymod(c, 0)
    c ^= 1
    return "".join(_CHECKSUM_CHARSET[(c >> (5 * (7 - j))) & 31] for j in range(8))


def address_to_spk(address: str) -> bytes:
    """The scriptPubKey of a regtest address; InvalidDestination for anything else."""
    addr = address.strip()
    if addr.lower().startswith(HRP + "1"):
        version, program = bech32.decode(HRP, addr)
        if version is None or program is None:
            raise InvalidDestination(f"Invalid address: {address}")
        if version == 1 and len(program) != 32 and bytes(program) != b"\x4e\x73":
            raise InvalidDestination(f"Invalid address: {address}")
        return bytes([0 if version == 0 else 0x50 + version, len(program)]) + bytes(program)
    try:
        payload: bytes = base58.decode_check(addr)
    except Exception as exc:
        raise InvalidDestination(f"Invalid address: {address}") from exc
    if len(payload) == 21 and payload[0] == P2PKH_VERSION:
        return b"\x76\xa9\x14" + payload[1:] + b"\x88\xac"
    if len(payload) == 21 and payload[0] == P2SH_VERSION:
        return b"\xa9\x14" + payload[1:] + b"\x87"
    raise InvalidDestination(f"Invalid address: {address}")


def dust_threshold(spk: bytes, dust_relay_sat_kvb: int = DUST_RELAY_SAT_KVB) -> int:
    """Outputs worth less than this are dust (Core's GetDustThreshold)."""
    if is_unspendable(spk):
        return 0
    size = 8 + _compact_len(len(spk)) + len(spk)
    if witness_program(spk) is not None:
        size += 32 + 4 + 1 + 107 // 4 + 4
    else:
        size += 32 + 4 + 1 + 107 + 4
    return -(-dust_relay_sat_kvb * size // 1000)


def _compact_len(n: int) -> int:
    return 1 if n < 0xFD else 3 if n <= 0xFFFF else 5 if n <= 0xFFFFFFFF else 9


def p2wpkh_spk(pubkey: bytes) -> bytes:
    return b"\x00\x14" + bytes(hashes.hash160(pubkey))
