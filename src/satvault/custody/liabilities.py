"""Proof of liabilities: a Merkle-sum tree of every customer balance, which anyone can check.

The platform publishes one root (a hash and the total it owes its customers) at a block
height, and hands every customer a proof: their own leaves and, for each, the sibling hashes
and sums up to the root. A customer who verifies the proof knows that their balance is
counted in the published total; as every customer can check, the operator cannot leave
anyone out without the risk of being caught. Compared with the coins the platform shows it
holds (proof of reserves), the total says whether it is solvent.

The format is public and fixed (docs/custody.md says it byte by byte)::

    leaf = SHA256("satvault-pol-leaf-v2" || u16be(len(account)) || account
                                         || nonce[32] || u64be(balance_msat))
    node = SHA256("satvault-pol-node" || left.hash || u64be(left.sum)
                                      || right.hash || u64be(right.sum))
    node.sum = left.sum + right.sum          (refused past 2**64 - 1)

A leaf names its account (the wallet id, UTF-8; empty for padding): a proof checks only for
the account it is for, so one customer's leaves cannot be handed to another as theirs (found
from outside, stop 32: with leaves of the same amounts, an operator could publish half the
liabilities and give both customers proofs that checked). Both children's sums are inside
the node hash, so a proof cannot show a sibling's sum lower
than the one the root was built with (the "broken sum" attack on the first Merkle-sum
trees). Sums are never negative: a negative balance would let the operator cancel out other
customers' money, so publishing refuses one.

Privacy. Each balance is split into 1 to 4 leaves of random amounts at random positions among
zero-balance padding leaves (the bottom level is padded to a power of two); every leaf has
its own nonce, HMAC-SHA256 of a server secret over the round, the account and the leaf
number (:func:`leaf_nonce`), and padding nonces are random. So a leaf hash tells nothing
without its nonce, a proof shows the customer's own leaves and only the sums of the subtrees
beside their path, and two publications of the same balances share no hash, position or
amount a reader could link.

This module is pure: values in, values out. Reading balances and storing rounds is
:mod:`satvault.custody.liabilities_service`'s; randomness comes from ``rng`` (the operating
system's by default: :class:`random.SystemRandom` reads ``os.urandom``).
"""

from __future__ import annotations

import hashlib
import hmac
import random
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from satvault.custody.errors import CannotPublish, ProofInvalid

__all__ = ["LEAF_TAG", "MAX_LEAVES_PER_ACCOUNT", "NODE_TAG", "U64_MAX", "Node", "Publication",
           "Verified", "build", "leaf_hash", "leaf_nonce", "node", "verify"]

LEAF_TAG = b"satvault-pol-leaf-v2"
NODE_TAG = b"satvault-pol-node"
NONCE_TAG = b"satvault-pol-nonce"
U64_MAX = 2**64 - 1
MAX_LEAVES_PER_ACCOUNT = 4
NONCE_BYTES = 32
# What an account id may look like: it names a file (proofs/<account>.json) and goes into
# the nonce derivation length-prefixed.
ACCOUNT_ID = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-fA-F]{64}$")

Side = Literal["left", "right"]


@dataclass(frozen=True, slots=True)
class Node:
    """A tree node (or leaf): its hash and the sum of the balances below it, in msat."""

    hash: bytes
    sum: int


def _u64(value: int) -> bytes:
    return struct.pack(">Q", value)


def leaf_hash(account: str, nonce: bytes, balance_msat: int) -> Node:
    """A leaf of ``account`` ("" for padding)."""
    if len(nonce) != NONCE_BYTES:
        raise ValueError("a leaf nonce is 32 bytes")
    if not 0 <= balance_msat <= U64_MAX:
        raise ValueError("a leaf balance is an unsigned 64-bit integer")
    name = account.encode()
    if len(name) > 0xFFFF:
        raise ValueError("an account name is at most 65,535 bytes")
    return Node(hashlib.sha256(LEAF_TAG + struct.pack(">H", len(name)) + name + nonce
                               + _u64(balance_msat)).digest(), balance_msat)


def node(left: Node, right: Node) -> Node:
    """The parent of two nodes; :class:`OverflowError` if their sum passes 64 bits."""
    total = left.sum + right.sum
    if total > U64_MAX:
        raise OverflowError(f"{left.sum} + {right.sum} msat does not fit in 64 bits")
    digest = hashlib.sha256(NODE_TAG + left.hash + _u64(left.sum)
                            + right.hash + _u64(right.sum)).digest()
    return Node(digest, total)


def leaf_nonce(secret: bytes, round_id: str, account: str, leaf_no: int) -> bytes:
    """HMAC-SHA256(secret, "satvault-pol-nonce" || u16be(len) || round_id || u16be(len) ||
    account || u32be(leaf_no)): unpredictable without the secret, different in every round,
    and the operator can derive it again to answer a customer's question about a round."""
    r, a = round_id.encode(), account.encode()
    msg = (NONCE_TAG + struct.pack(">H", len(r)) + r + struct.pack(">H", len(a)) + a
           + struct.pack(">I", leaf_no))
    return hmac.new(secret, msg, hashlib.sha256).digest()


# ------------------------------------------------------------------------------- publishing

@dataclass(frozen=True, slots=True)
class Publication:
    """One round: the root object everybody sees and one proof object per account with a
    balance (the JSON shapes of ``root.json`` and ``proofs/<account>.json``)."""

    root: dict[str, Any]
    proofs: dict[str, dict[str, Any]]

    @property
    def total_msat(self) -> int:
        return int(self.root["total_msat"])


def _split(balance: int, rng: random.Random) -> list[int]:
    """``balance`` as 1 to 4 positive parts of random sizes (fewer if it is only a few msat)."""
    parts = min(rng.randint(1, MAX_LEAVES_PER_ACCOUNT), balance)
    cuts = sorted(rng.sample(range(1, balance), parts - 1))
    return [b - a for a, b in zip([0, *cuts], [*cuts, balance], strict=True)]


def build(balances: Mapping[str, int], *, height: int, round_id: str, secret: bytes,
          rng: random.Random | None = None) -> Publication:
    """The tree of ``balances`` (account id → msat) at block ``height``.

    Accounts with a zero balance get no leaf and no proof. Refuses (:class:`CannotPublish`)
    a negative or non-integer balance, a total past 64 bits, an account id unfit for a file
    name, an empty secret."""
    rng = rng or random.SystemRandom()
    if not secret:
        raise CannotPublish("the liabilities secret is empty")
    if isinstance(height, bool) or not isinstance(height, int) or height < 0:
        raise CannotPublish(f"block height {height!r} is not a non-negative integer")
    total = 0
    for account, balance in balances.items():
        if not ACCOUNT_ID.match(account):
            raise CannotPublish(f"account id {account!r} is not [A-Za-z0-9_.-]{{1,64}}")
        if isinstance(balance, bool) or not isinstance(balance, int):
            raise CannotPublish(f"account {account}: balance {balance!r} is not an integer")
        if balance < 0:
            raise CannotPublish(f"account {account} has a negative balance ({balance} msat); "
                                "the books are wrong, and a proof would hide it")
        total += balance
    if total > U64_MAX:
        raise CannotPublish(f"the total of {total} msat does not fit in 64 bits")

    # (account or None for padding, leaf node, nonce)
    entries: list[tuple[str | None, Node, bytes]] = []
    for account, balance in sorted(balances.items()):
        if balance == 0:
            continue
        for leaf_no, part in enumerate(_split(balance, rng)):
            nonce = leaf_nonce(secret, round_id, account, leaf_no)
            entries.append((account, leaf_hash(account, nonce, part), nonce))
    size = 1
    while size < len(entries):
        size *= 2
    while len(entries) < size:
        nonce = rng.randbytes(NONCE_BYTES)
        entries.append((None, leaf_hash("", nonce, 0), nonce))
    rng.shuffle(entries)

    levels: list[list[Node]] = [[n for _, n, _ in entries]]
    while len(levels[-1]) > 1:
        below = levels[-1]
        levels.append([node(below[i], below[i + 1]) for i in range(0, len(below), 2)])
    top = levels[-1][0]
    assert top.sum == total

    proofs: dict[str, dict[str, Any]] = {}
    for index, (owner, leaf, nonce) in enumerate(entries):
        if owner is None:
            continue
        proof = proofs.setdefault(owner, {"account": owner, "height": height,
                                          "balance_msat": balances[owner], "leaves": []})
        proof["leaves"].append({"index": index, "nonce": nonce.hex(),
                                "balance_msat": leaf.sum, "path": _path(levels, index)})
    root = {"root": top.hash.hex(), "total_msat": total, "height": height, "leaves": size}
    return Publication(root=root, proofs=proofs)


def _path(levels: Sequence[Sequence[Node]], index: int) -> list[dict[str, Any]]:
    path = []
    for level in levels[:-1]:
        sibling = level[index ^ 1]
        path.append({"hash": sibling.hash.hex(), "sum": sibling.sum,
                     "side": "right" if index % 2 == 0 else "left"})
        index //= 2
    return path


# ------------------------------------------------------------------------------- verifying

@dataclass(frozen=True, slots=True)
class Verified:
    """A proof that checked out: ``balance_msat`` of ``account`` is counted in ``root``'s
    ``total_msat``, published at block ``height``."""

    account: str
    balance_msat: int
    height: int
    root: str
    total_msat: int
    leaves: int

    def as_dict(self) -> dict[str, Any]:
        return {"account": self.account, "balance_msat": self.balance_msat,
                "height": self.height, "root": self.root, "total_msat": self.total_msat,
                "leaves": self.leaves}


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= U64_MAX:
        raise ProofInvalid(f"{what} is not an unsigned 64-bit integer: {value!r}")
    return value


def _hex32(value: Any, what: str) -> bytes:
    if not isinstance(value, str) or not _HEX64.match(value):
        raise ProofInvalid(f"{what} is not 32 bytes of hex: {value!r}")
    return bytes.fromhex(value)


def _field(obj: Mapping[str, Any], key: str, what: str) -> Any:
    if key not in obj:
        raise ProofInvalid(f"{what} has no {key!r}")
    return obj[key]


def verify(root: Any, proof: Any, *, expected_balance_msat: int | None = None) -> Verified:
    """Check ``proof`` (a parsed ``proofs/<account>.json``) against ``root`` (a parsed
    ``root.json``). Returns what it proves, or raises :class:`ProofInvalid` naming the first
    check that failed. ``expected_balance_msat``: the balance the customer saw in their
    wallet at that height; a proof covering a different amount is refused."""
    if not isinstance(root, Mapping):
        raise ProofInvalid("the root is not a JSON object")
    if not isinstance(proof, Mapping):
        raise ProofInvalid("the proof is not a JSON object")
    root_hash = _hex32(_field(root, "root", "the root object"), "the root hash")
    total = _int(_field(root, "total_msat", "the root object"), "the root's total_msat")
    height = _int(_field(root, "height", "the root object"), "the root's height")
    size = _int(_field(root, "leaves", "the root object"), "the root's leaves")
    if size < 1 or size & (size - 1):
        raise ProofInvalid(f"the root's leaves ({size}) is not a power of two")
    depth = size.bit_length() - 1

    account = _field(proof, "account", "the proof")
    if not isinstance(account, str) or not account or len(account.encode()) > 0xFFFF:
        raise ProofInvalid(f"the proof's account is not a name: {account!r}"[:200])
    proof_height = _int(_field(proof, "height", "the proof"), "the proof's height")
    if proof_height != height:
        raise ProofInvalid(f"wrong height: the proof is for block height {proof_height}, the "
                           f"root for block height {height} (they are from different "
                           "publications)")
    stated = _int(_field(proof, "balance_msat", "the proof"), "the proof's balance_msat")
    leaves = _field(proof, "leaves", "the proof")
    if not isinstance(leaves, list) or not leaves:
        raise ProofInvalid("the proof has no leaves")

    seen: set[int] = set()
    parsed: list[tuple[int, Node, list[tuple[Node, Side]]]] = []
    for n, leaf in enumerate(leaves):
        if not isinstance(leaf, Mapping):
            raise ProofInvalid(f"leaf #{n} is not a JSON object")
        index = _int(_field(leaf, "index", f"leaf #{n}"), f"leaf #{n}'s index")
        where = f"leaf at index {index}"
        if index >= size:
            raise ProofInvalid(f"{where} is outside the tree's {size} leaves")
        if index in seen:
            raise ProofInvalid(f"extra leaf: index {index} appears twice in the proof")
        seen.add(index)
        nonce = _hex32(_field(leaf, "nonce", where), f"{where}: the nonce")
        balance = _int(_field(leaf, "balance_msat", where), f"{where}: balance_msat")
        path = _field(leaf, "path", where)
        if not isinstance(path, list):
            raise ProofInvalid(f"{where}: the path is not a list")
        if len(path) != depth:
            raise ProofInvalid(f"{where}: the path has {len(path)} steps, but a tree of "
                               f"{size} leaves needs {depth} (path length mismatch)")
        steps: list[tuple[Node, Side]] = []
        position = index
        for k, step in enumerate(path):
            if not isinstance(step, Mapping):
                raise ProofInvalid(f"{where}, step {k}: not a JSON object")
            side = _field(step, "side", f"{where}, step {k}")
            if side not in ("left", "right"):
                raise ProofInvalid(f"{where}, step {k}: side is {side!r}, not left or right")
            expected: Side = "right" if position % 2 == 0 else "left"
            if side != expected:
                raise ProofInvalid(f"{where}, step {k}: the sibling is said to be on the "
                                   f"{side}, but index {index} puts it on the {expected} "
                                   "(index/side mismatch)")
            sibling = Node(_hex32(_field(step, "hash", f"{where}, step {k}"),
                                  f"{where}, step {k}: the hash"),
                           _int(_field(step, "sum", f"{where}, step {k}"),
                                f"{where}, step {k}: the sum"))
            steps.append((sibling, side))
            position //= 2
        parsed.append((index, leaf_hash(account, nonce, balance), steps))

    proven = sum(leaf.sum for _, leaf, _ in parsed)
    if proven != stated:
        raise ProofInvalid(f"the leaves add up to {proven} msat, but the proof states a balance "
                           f"of {stated} msat (a leaf was dropped or added, or a balance was "
                           "changed)")
    for index, leaf, steps in parsed:
        where = f"leaf at index {index}"
        current = leaf
        for k, (sibling, side) in enumerate(steps):
            try:
                current = node(current, sibling) if side == "right" else node(sibling, current)
            except OverflowError:
                raise ProofInvalid(f"{where}, step {k}: the sums overflow 64 bits") from None
        if current.sum != total:
            raise ProofInvalid(f"{where}: the sums along its path add up to {current.sum} msat, "
                               f"not the published total of {total} msat (a balance or a sum "
                               "was changed)")
        if not hmac.compare_digest(current.hash, root_hash):
            raise ProofInvalid(f"{where}: its path does not hash to the published root "
                               f"{root_hash.hex()} (wrong root, or a nonce, hash or sum was "
                               "changed)")
    if expected_balance_msat is not None and proven != expected_balance_msat:
        raise ProofInvalid(f"the proof covers {proven} msat, but your balance at block height "
                           f"{height} was {expected_balance_msat} msat (the balance proven is "
                           "posted_msat + frozen_msat of the wallet)")
    return Verified(account=account, balance_msat=proven, height=height, root=root_hash.hex(),
                    total_msat=total, leaves=size)

