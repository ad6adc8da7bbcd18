"""Proof of liabilities: the tree (every proof checks out and sums to the root; each kind of
tampering is caught with its own message; two rounds cannot be linked; a proof shows nothing
of other customers but its sibling sums), publication from the books through the command line
(height from the chain tip) on both databases, the API (the caller's proof, never another's),
and the browser verifier's script run under Node against the same proofs."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import random
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.exc import IntegrityError
from typer.testing import CliRunner

from satvault.accounts import service as acc
from satvault.cli.liabilities import app as liabilities_cli
from satvault.config import Settings
from satvault.custody.errors import CannotPublish, ProofInvalid
from satvault.custody.liabilities import (
    U64_MAX,
    Node,
    Publication,
    build,
    leaf_hash,
    leaf_nonce,
    node,
    verify,
)
from satvault.custody.liabilities_models import LiabilityProof, LiabilityRound
from satvault.custody.liabilities_service import liability_balances, store_round
from satvault.ledger.core import TransferKind, TransferSpec
from satvault.ledger.platform import ensure_platform_accounts
from satvault.ledger.store import submit
from satvault.simnet.chain import Chain
from satvault.simnet.rpc import SimnetServer
from satvault.web.app import create_app
from tests import factories
from tests.test_cli import last_json, sv_here

VERIFY_JS = Path(__file__).resolve().parents[2] / "src/satvault/custody/static/verify.js"
SECRET = b"test secret"


def publish(balances: dict[str, int], *, height: int = 100, round_id: str = "pol_test",
            seed: int | None = 1) -> Any:
    rng = random.Random(seed) if seed is not None else None
    return build(balances, height=height, round_id=round_id, secret=SECRET, rng=rng)


BALANCES = {"wal_alice": 150_000_000, "wal_bob": 1, "wal_carol": 2**60, "wal_dave": 7_000,
            "wal_erin": 123_456_789_000, "wal_zero": 0}


# ------------------------------------------------------------------------------ the tree

def test_every_proof_verifies_and_the_proofs_sum_to_the_root_total():
    pub = publish(BALANCES)
    assert set(pub.proofs) == set(BALANCES) - {"wal_zero"}  # no balance, nothing to prove
    assert pub.root["total_msat"] == sum(BALANCES.values())
    size = pub.root["leaves"]
    assert size & (size - 1) == 0 and size >= sum(len(p["leaves"]) for p in pub.proofs.values())
    indices: list[int] = []
    for account, proof in pub.proofs.items():
        assert 1 <= len(proof["leaves"]) <= 4
        assert all(leaf["balance_msat"] > 0 for leaf in proof["leaves"])
        got = verify(pub.root, proof, expected_balance_msat=BALANCES[account])
        assert (got.account, got.balance_msat, got.height) == (account, BALANCES[account], 100)
        assert got.total_msat == pub.total_msat and got.root == pub.root["root"]
        indices += [leaf["index"] for leaf in proof["leaves"]]
    assert len(indices) == len(set(indices))  # no leaf is shared
    # wal_bob's single msat cannot be split; some balance was split (seeded rng)
    assert len(pub.proofs["wal_bob"]["leaves"]) == 1
    assert max(len(p["leaves"]) for p in pub.proofs.values()) > 1


def test_a_single_leaf_tree_and_an_empty_one():
    one = publish({"wal_only": 5}, seed=3)
    if one.root["leaves"] == 1:
        assert one.proofs["wal_only"]["leaves"][0]["path"] == []
    assert verify(one.root, one.proofs["wal_only"]).balance_msat == 5
    empty = publish({})
    assert empty.proofs == {} and empty.root["total_msat"] == 0 and empty.root["leaves"] == 1


@pytest.mark.parametrize(("balances", "why"), [
    ({"wal_a": 10, "wal_b": -1}, "negative balance"),
    ({"wal_a": U64_MAX, "wal_b": 1}, "does not fit in 64 bits"),
    ({"wal_a": True}, "not an integer"),
    ({"wal_a": 1.5}, "not an integer"),
    ({"../etc/passwd": 1}, "is not [A-Za-z0-9_.-]"),
])
def test_publishing_refuses_what_the_tree_cannot_honestly_hold(balances, why):
    with pytest.raises(CannotPublish, match=why.replace("[", r"\[").replace(".", r"\.")):
        publish(balances)


def test_the_node_hash_covers_both_sums_and_refuses_overflow():
    a, b = leaf_hash("wal_a", b"\1" * 32, 5), leaf_hash("wal_b", b"\2" * 32, 7)
    parent = node(a, b)
    expected = hashlib.sha256(b"satvault-pol-node" + a.hash + (5).to_bytes(8, "big")
                              + b.hash + (7).to_bytes(8, "big")).digest()
    assert parent == Node(expected, 12)
    assert node(a, Node(b.hash, 6)).hash != parent.hash  # a lowered sum changes the hash
    with pytest.raises(OverflowError):
        node(Node(a.hash, U64_MAX), Node(b.hash, 1))
    assert leaf_hash("wal_a", b"\1" * 32, 5).hash == hashlib.sha256(
        b"satvault-pol-leaf-v2" + (5).to_bytes(2, "big") + b"wal_a" + b"\1" * 32
        + (5).to_bytes(8, "big")).digest()


def test_the_worked_example_of_the_docs():
    """docs/custody.md walks through this tree; its numbers must be the code's."""
    n = [bytes([i]) * 32 for i in range(4)]
    leaves = [leaf_hash("wal_example", n[0], 3000), leaf_hash("", n[1], 0),
              leaf_hash("wal_example", n[2], 2000), leaf_hash("wal_other", n[3], 5000)]
    left, right = node(leaves[0], leaves[1]), node(leaves[2], leaves[3])
    root = node(left, right)
    doc = (Path(__file__).resolve().parents[2] / "docs/custody.md").read_text()
    for value in (*leaves, left, right, root):
        assert value.hash.hex() in doc
    proof = {"account": "wal_example", "height": 870000, "balance_msat": 5000, "leaves": [
        {"index": 0, "nonce": n[0].hex(), "balance_msat": 3000, "path": [
            {"hash": leaves[1].hash.hex(), "sum": 0, "side": "right"},
            {"hash": right.hash.hex(), "sum": 7000, "side": "right"}]},
        {"index": 2, "nonce": n[2].hex(), "balance_msat": 2000, "path": [
            {"hash": leaves[3].hash.hex(), "sum": 5000, "side": "right"},
            {"hash": left.hash.hex(), "sum": 3000, "side": "left"}]}]}
    root_obj = {"root": root.hash.hex(), "total_msat": 10000, "height": 870000, "leaves": 4}
    assert verify(root_obj, proof).balance_msat == 5000
    assert json.dumps(root_obj) in doc
    shown = doc.split("`wal_example`'s proof:", 1)[1].split("```")[1]
    assert json.loads(shown) == proof


def _multi_leaf(pub: Any) -> dict[str, Any]:
    return copy.deepcopy(max(pub.proofs.values(), key=lambda p: len(p["leaves"])))


def _other_leaf(pub: Any, proof: dict[str, Any]) -> dict[str, Any]:
    return copy.deepcopy(next(p for a, p in pub.proofs.items()
                              if a != proof["account"])["leaves"][0])


# (name, how to tamper (root, proof), the message it must give)
def _sum(root: dict, proof: dict) -> None:
    proof["leaves"][0]["path"][0]["sum"] += 1


def _dropped(root: dict, proof: dict) -> None:
    proof["leaves"].pop()


def _balance(root: dict, proof: dict) -> None:
    proof["leaves"][0]["balance_msat"] += 1


def _balance_and_stated(root: dict, proof: dict) -> None:
    proof["leaves"][0]["balance_msat"] += 1
    proof["balance_msat"] += 1


def _side(root: dict, proof: dict) -> None:
    step = proof["leaves"][0]["path"][0]
    step["side"] = "left" if step["side"] == "right" else "right"


def _root(root: dict, proof: dict) -> None:
    root["root"] = hashlib.sha256(b"another tree").hexdigest()


def _total(root: dict, proof: dict) -> None:
    root["total_msat"] += 1


def _height(root: dict, proof: dict) -> None:
    proof["height"] -= 1


def _short_path(root: dict, proof: dict) -> None:
    proof["leaves"][0]["path"].pop()


def _more_leaves(root: dict, proof: dict) -> None:
    root["leaves"] *= 2


def _duplicate(root: dict, proof: dict) -> None:
    proof["leaves"].append(copy.deepcopy(proof["leaves"][0]))
    proof["balance_msat"] += proof["leaves"][0]["balance_msat"]


def _nonce(root: dict, proof: dict) -> None:
    proof["leaves"][0]["nonce"] = "00" * 32


def _index(root: dict, proof: dict) -> None:
    proof["leaves"][0]["index"] = root["leaves"]


def _sibling_hash(root: dict, proof: dict) -> None:
    step = proof["leaves"][0]["path"][-1]
    step["hash"] = "ff" * 32


TAMPERING: list[tuple[str, Callable[[dict, dict], None], str]] = [
    ("tampered sum", _sum, "sums along its path add up to"),
    ("dropped leaf", _dropped, "a leaf was dropped or added"),
    ("changed balance", _balance, "a leaf was dropped or added, or a balance was changed"),
    ("changed balance, stated too", _balance_and_stated, "a balance or a sum was changed"),
    ("swapped side", _side, "index/side mismatch"),
    ("wrong root", _root, "does not hash to the published root"),
    ("changed total", _total, "not the published total"),
    ("wrong height", _height, "wrong height"),
    ("short path", _short_path, "path length mismatch"),
    ("leaves count", _more_leaves, "path length mismatch"),
    ("duplicated leaf", _duplicate, "appears twice"),
    ("changed nonce", _nonce, "does not hash to the published root"),
    ("index out of the tree", _index, "outside the tree"),
    ("changed sibling hash", _sibling_hash, "does not hash to the published root"),
]


def _tampered(pub: Any, tamper: Callable[[dict, dict], None]) -> tuple[dict, dict]:
    root, proof = copy.deepcopy(pub.root), _multi_leaf(pub)
    tamper(root, proof)
    return root, proof


@pytest.mark.parametrize(("name", "tamper", "message"), TAMPERING, ids=[t[0] for t in TAMPERING])
def test_tampering_is_caught_and_named(name, tamper, message):
    pub = publish(BALANCES)
    assert len(_multi_leaf(pub)["leaves"]) > 1
    root, proof = _tampered(pub, tamper)
    with pytest.raises(ProofInvalid, match=message.replace("(", r"\(")):
        verify(root, proof)


def test_another_customers_leaf_or_the_wrong_balance_is_refused():
    pub = publish(BALANCES)
    mine = _multi_leaf(pub)
    # Borrowing another customer's (valid) leaf inflates what the proof covers: the stated
    # balance no longer matches, and with it changed the customer's own balance does not.
    stolen = copy.deepcopy(mine)
    stolen["leaves"].append(_other_leaf(pub, mine))
    with pytest.raises(ProofInvalid, match="a leaf was dropped or added"):
        verify(pub.root, stolen)
    stolen["balance_msat"] += stolen["leaves"][-1]["balance_msat"]
    with pytest.raises(ProofInvalid, match="does not hash to the published root"):
        verify(pub.root, stolen)  # a leaf names its account: the other's is not this one's
    with pytest.raises(ProofInvalid, match="but your balance at block height 100 was"):
        verify(pub.root, mine, expected_balance_msat=BALANCES[mine["account"]] + 1)


def test_the_broken_sum_attack_fails():
    """A sibling sum shown lower than the one hashed (so that a customer's leaf seems to sit in
    a smaller total) cannot reach the root: both sums are inside every node hash."""
    pub = publish(BALANCES)
    proof = _multi_leaf(pub)
    step = proof["leaves"][0]["path"][-1]
    cut = min(step["sum"], 1000)
    step["sum"] -= cut
    root = {**pub.root, "total_msat": pub.root["total_msat"] - cut}
    with pytest.raises(ProofInvalid, match="does not hash to the published root"):
        verify(root, proof)


@pytest.mark.parametrize(("root", "proof", "message"), [
    ([], {}, "the root is not a JSON object"),
    ({"root": "zz", "total_msat": 1, "height": 1, "leaves": 1}, {}, "not 32 bytes of hex"),
    ({"root": "00" * 32, "total_msat": -1, "height": 1, "leaves": 1}, {}, "unsigned 64-bit"),
    ({"root": "00" * 32, "total_msat": 1, "height": 1, "leaves": 3}, {}, "not a power of two"),
    ({"root": "00" * 32, "total_msat": 1, "height": True, "leaves": 1}, {}, "unsigned 64-bit"),
    ({"root": "00" * 32, "total_msat": 1, "height": 1, "leaves": 1},
     {"account": "wal_x", "height": 1, "balance_msat": 1, "leaves": []}, "has no leaves"),
    ({"root": "00" * 32, "total_msat": 1, "height": 1, "leaves": 1},
     {"account": "wal_x", "height": 1, "leaves": [{}]}, "has no 'balance_msat'"),
])
def test_malformed_files_get_a_clear_error(root, proof, message):
    with pytest.raises(ProofInvalid, match=message):
        verify(root, proof)


def test_two_publications_of_the_same_balances_cannot_be_linked():
    first = publish(BALANCES, round_id="pol_one", seed=None)
    second = publish(BALANCES, round_id="pol_two", seed=None)
    assert first.root["root"] != second.root["root"]
    assert first.root["total_msat"] == second.root["total_msat"]

    def leaves(pub: Any) -> tuple[set[str], set[str]]:
        nonces, hashes = set(), set()
        for proof in pub.proofs.values():
            for leaf in proof["leaves"]:
                nonces.add(leaf["nonce"])
                hashes |= {s["hash"] for s in leaf["path"]}
        return nonces, hashes

    n1, h1 = leaves(first)
    n2, h2 = leaves(second)
    assert not n1 & n2 and not h1 & h2  # no nonce, no subtree hash in common
    # The nonces come from the secret, the round and the account: never reused, and not
    # computable without the secret.
    assert leaf_nonce(SECRET, "pol_one", "wal_bob", 0) != leaf_nonce(SECRET, "pol_two",
                                                                       "wal_bob", 0)
    assert leaf_nonce(SECRET, "pol_one", "wal_bob", 0) != leaf_nonce(b"other", "pol_one",
                                                                       "wal_bob", 0)
    assert leaf_nonce(SECRET, "pol_one", "wal_bob", 0) != leaf_nonce(SECRET, "pol_one",
                                                                       "wal_bob", 1)
    bob = first.proofs["wal_bob"]["leaves"][0]["nonce"]
    assert bob == leaf_nonce(SECRET, "pol_one", "wal_bob", 0).hex()


def _numbers(value: Any) -> set[int]:
    if isinstance(value, dict):
        return set().union(*map(_numbers, value.values()))
    if isinstance(value, list):
        return set().union(*map(_numbers, value))
    return {value} if isinstance(value, int) else set()


def test_a_proof_reveals_no_other_balance_than_its_sibling_sums():
    pub = publish(BALANCES)
    for account, proof in pub.proofs.items():
        text = json.dumps(proof)
        assert not any(other in text for other in BALANCES if other != account)
        own = {leaf["balance_msat"] for leaf in proof["leaves"]}
        siblings = {s["sum"] for leaf in proof["leaves"] for s in leaf["path"]}
        numbers = _numbers(proof)
        indices = {leaf["index"] for leaf in proof["leaves"]}
        assert numbers <= own | siblings | indices | {proof["height"], proof["balance_msat"]}
        # The sibling sums: one per level, each the total of a whole subtree beside the path.
        assert len(siblings) <= len(proof["leaves"]) * (pub.root["leaves"].bit_length() - 1)


# ------------------------------------------------------------------- from the books (CLI)

async def _world(sessions) -> dict[str, Any]:
    """Users and a merchant with posted balances, a hold, an unconfirmed credit, an empty
    wallet and platform money (not a liability)."""
    async with sessions() as s, s.begin():
        platform = await ensure_platform_accounts(s, "BTC")
        users = [await acc.create_user(s, email=f"u{i}@example.com", is_admin=i == 6)
                 for i in range(7)]
        merchant = await acc.create_merchant(s, name="Shop")
        wallets = [await acc.ensure_wallet(s, owner_type="user", owner_id=u.id) for u in users]
        wallets.append(await acc.ensure_wallet(s, owner_type="merchant", owner_id=merchant.id))
        _, key0 = await acc.create_api_key(s, owner_id=users[0].id, scopes=["wallet:read"])
        _, key1 = await acc.create_api_key(s, owner_id=users[1].id, scopes=["wallet:read"])
        _, weak = await acc.create_api_key(s, owner_id=users[0].id, scopes=["invoices:read"])
        _, admin = await acc.create_api_key(s, owner_id=users[6].id, scopes=["admin"])
    amounts = [1_000_000 * (i + 1) + i for i in range(6)] + [0, 42_000_000]
    funded = [(w, a) for w, a in zip(wallets, amounts, strict=True) if a]
    specs = [TransferSpec(f"dep:{w.id}", platform.external.id, w.ledger_account_id, a, "BTC",
                          code="deposit") for w, a in funded]
    specs += [
        # a withdrawal held, not yet gone: still owed
        TransferSpec("hold:0", wallets[0].ledger_account_id, platform.clearing.id, 400_000,
                     "BTC", kind=TransferKind.PENDING, timeout_seconds=3600),
        # an unconfirmed deposit: not owed yet
        TransferSpec("incoming:1", platform.external.id, wallets[1].ledger_account_id,
                     9_000_000, "BTC", kind=TransferKind.PENDING, timeout_seconds=3600),
        # the platform's own money
        TransferSpec("fee", wallets[2].ledger_account_id, platform.fees.id, 1_000, "BTC"),
    ]
    outcomes = await submit(sessions, specs)
    assert all(o.ok for o in outcomes), outcomes
    expected = {w.id: a for w, a in funded}
    expected[wallets[2].id] -= 1_000
    return {"wallets": wallets, "expected": expected, "keys": [key0, key1], "weak": weak,
            "admin": admin, "empty": wallets[6].id}


def _verify_cli(*args: str) -> tuple[int, dict[str, Any]]:
    result = CliRunner().invoke(liabilities_cli, ["verify", *args])
    return result.exit_code, json.loads(result.stdout.strip().splitlines()[-1])


def _files(out: Path, account: str) -> tuple[dict, dict]:
    return (json.loads((out / "root.json").read_text()),
            json.loads((out / "proofs" / f"{account}.json").read_text()))


@pytest.fixture
def chain_node():
    node = SimnetServer(Chain(), port=0, user="u", password="p").start()
    node.chain.mine(12)
    try:
        yield node
    finally:
        node.stop()


async def test_publish_from_the_books_and_verify_every_proof(db_url, sessions, tmp_path,
                                                             chain_node, monkeypatch):
    world = await _world(sessions)
    expected: dict[str, int] = world["expected"]
    home, out = tmp_path / "home", tmp_path / "pol"
    # The height comes from the chain backend's tip (the simulator, over bitcoind's RPC).
    monkeypatch.setenv("SATVAULT_CHAIN_BACKEND", "bitcoind")
    monkeypatch.setenv("SATVAULT_BITCOIND_URL", chain_node.url)
    summary = last_json(sv_here("liabilities", "publish", "--out", str(out), url=db_url,
                                 home=home))
    again = sv_here("liabilities", "publish", "--out", str(out), url=db_url, home=home,
                    check=False)
    assert again.returncode == 1 and "is not empty" in last_json(again)["error"]
    height = chain_node.chain.height
    assert summary["ok"] and summary["height"] == height > 12
    assert summary["total_msat"] == sum(expected.values())
    assert summary["accounts"] == len(expected)
    assert (home / "liabilities.secret").stat().st_mode & 0o777 == 0o600

    root = json.loads((out / "root.json").read_text())
    assert root == {k: summary[k] for k in ("root", "total_msat", "height", "leaves")}
    assert {p.stem for p in (out / "proofs").iterdir()} == set(expected)
    assert world["empty"] not in expected
    assert (out / "verify.html").read_text().count('src="verify.js"') == 1
    assert (out / "verify.js").read_bytes() == VERIFY_JS.read_bytes()
    proven = 0
    for wallet_id, balance in expected.items():
        code, got = _verify_cli("--root", str(out / "root.json"), "--proof",
                                str(out / "proofs" / f"{wallet_id}.json"),
                                "--balance", str(balance))
        assert code == 0, got
        assert got["account"] == wallet_id and got["balance_msat"] == balance
        proven += got["balance_msat"]
    assert proven == root["total_msat"]

    async with sessions() as s:
        row = await s.get(LiabilityRound, summary["round"])
        assert row is not None and (row.root, row.total_msat, row.height) == (
            root["root"], root["total_msat"], height)
        stored = await s.get(LiabilityProof, (row.id, world["wallets"][0].id))
        assert stored is not None
        assert json.loads(stored.proof) == _files(out, world["wallets"][0].id)[1]

    # Each kind of tampering, through the command line, with its reason.
    account = max(expected, key=lambda a: len(_files(out, a)[1]["leaves"]))
    assert len(_files(out, account)[1]["leaves"]) > 1  # 8 wallets: 1 in 65,536 to fail here
    for name, tamper, message in TAMPERING:
        root_obj, proof = _files(out, account)
        tamper(root_obj, proof)
        (tmp_path / "r.json").write_text(json.dumps(root_obj))
        (tmp_path / "p.json").write_text(json.dumps(proof))
        code, got = _verify_cli("--root", str(tmp_path / "r.json"), "--proof",
                                str(tmp_path / "p.json"))
        assert code == 1 and got["ok"] is False, name
        assert got["error"].startswith("proof rejected: ") and message in got["error"], (
            name, got)
    code, got = _verify_cli("--root", str(out / "root.json"), "--proof",
                            str(out / "proofs" / f"{account}.json"), "--balance",
                            str(expected[account] + 1))
    assert code == 1 and f"but your balance at block height {height} was" in got["error"]
    (tmp_path / "bad.json").write_text("{not json")
    code, got = _verify_cli("--root", str(tmp_path / "bad.json"), "--proof",
                            str(out / "proofs" / f"{account}.json"))
    assert code == 1 and "is not JSON" in got["error"]

    # The same balances published again (height given): nothing links the two rounds.
    out2 = tmp_path / "pol2"
    second = last_json(sv_here("liabilities", "publish", "--out", str(out2), "--height",
                               str(height), url=db_url, home=home))
    assert second["root"] != summary["root"] and second["total_msat"] == summary["total_msat"]
    for wallet_id in expected:
        one, two = _files(out, wallet_id)[1], _files(out2, wallet_id)[1]
        assert not {leaf["nonce"] for leaf in one["leaves"]} & {
            leaf["nonce"] for leaf in two["leaves"]}


def test_publish_without_a_chain_tip_asks_for_a_height(tmp_path, monkeypatch):
    url = f"sqlite+aiosqlite:///{tmp_path / 'unused.db'}"
    monkeypatch.setenv("SATVAULT_CHAIN_BACKEND", "bitcoind")
    monkeypatch.setenv("SATVAULT_BITCOIND_URL", "http://u:p@127.0.0.1:9/")
    proc = sv_here("liabilities", "publish", "--out", str(tmp_path / "out"), url=url,
                   home=tmp_path, check=False)
    assert proc.returncode == 1
    assert "pass --height N" in last_json(proc)["error"]


async def test_the_database_keeps_rounds_unique_and_well_formed(sessions):
    world = await _world(sessions)
    pub = await _publish_in_process(sessions, "pol_one", 5)
    with pytest.raises(IntegrityError):  # the same root twice
        async with sessions() as s, s.begin():
            await store_round(s, round_id="pol_two", asset="BTC", publication=pub)
    with pytest.raises(IntegrityError):  # a second proof of one wallet in one round
        async with sessions() as s, s.begin():
            s.add(LiabilityProof(round_id="pol_one", wallet_id=world["wallets"][0].id,
                                 balance_msat=1, proof="{}"))
    bad = {**pub.root, "root": "ab" * 32, "leaves": 3}  # not a power of two
    with pytest.raises(IntegrityError):
        async with sessions() as s, s.begin():
            await store_round(s, round_id="pol_three", asset="BTC",
                              publication=Publication(root=bad, proofs={}))


async def test_customer_money_outside_any_wallet_is_refused(sessions):
    await factories.books(sessions, wallets=1, fund=5_000)  # ledger accounts, no wallet rows
    async with sessions() as s:
        with pytest.raises(CannotPublish, match="belongs to no wallet"):
            await liability_balances(s)


# ----------------------------------------------------------------------------------- API

@asynccontextmanager
async def client_for(engine, db_url) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(database_url=db_url, lightning_backend="none"), engine=engine,
                     start_workers=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield client


async def _publish_in_process(sessions, round_id: str, height: int) -> Any:
    async with sessions() as s:
        balances = await liability_balances(s)
    pub = build(balances, height=height, round_id=round_id, secret=SECRET)
    async with sessions() as s, s.begin():
        await store_round(s, round_id=round_id, asset="BTC", publication=pub)
    return pub


async def test_the_api_serves_the_callers_own_proof_from_the_latest_round(engine, db_url,
                                                                          sessions):
    world = await _world(sessions)
    w0, w1 = world["wallets"][0].id, world["wallets"][1].id
    bearer = [{"Authorization": f"Bearer {k}"} for k in world["keys"]]
    path = "/api/v1/me/liabilities-proof"
    async with client_for(engine, db_url) as c:
        r = await c.get(path, headers=bearer[0])
        assert r.status_code == 404 and "published" in r.json()["detail"]
        assert r.headers["content-type"] == "application/problem+json"
        await _publish_in_process(sessions, "pol_first", 10)
        latest = await _publish_in_process(sessions, "pol_second", 11)

        r = await c.get(path, headers=bearer[0])
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["round_id"] == "pol_second" and body["root"] == latest.root
        assert body["proof"] == latest.proofs[w0]
        assert verify(body["root"], body["proof"]).balance_msat == world["expected"][w0]
        r = await c.get(path, headers=bearer[1])
        assert r.json()["proof"]["account"] == w1

        # Never another wallet's: named explicitly, it is the same 404 as an unknown one.
        r = await c.get(path, params={"wallet_id": w1}, headers=bearer[0])
        assert r.status_code == 404 and w1 in r.json()["detail"]
        assert w1 not in (await c.get(path, params={"wallet_id": w0},
                                      headers=bearer[0])).text
        admin = {"Authorization": f"Bearer {world['admin']}"}
        r = await c.get(path, params={"wallet_id": w0}, headers=admin)
        assert r.status_code == 404  # an admin key too: this is "my" proof
        r = await c.get(path, headers=admin)  # the admin's own wallet had no balance
        assert r.status_code == 404 and "no balance" in r.json()["detail"]
        r = await c.get(path, headers={"Authorization": f"Bearer {world['weak']}"})
        assert r.status_code == 403  # the proof shows the balance: wallet:read
        assert (await c.get(path)).status_code == 401

        page = await c.get("/liabilities/verify")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert '<script src="verify.js">' in page.text
        script = await c.get("/liabilities/verify.js")
        assert script.status_code == 200 and script.content == VERIFY_JS.read_bytes()
        assert script.headers["content-type"].startswith("text/javascript")


# ------------------------------------------------------------------- the browser's script

NODE = shutil.which("node")
NODE_RUNNER = r"""
const v = require(process.argv[1]);
const fs = require("fs");
const cases = JSON.parse(fs.readFileSync(0, "utf8"));
(async () => {
  const out = [];
  for (const c of cases) {
    const answers = [];
    for (const digest of [undefined, v.sha256js]) {
      try {
        const r = await v.verify(c.root, c.proof, { sha256: digest,
                                                     expectedBalanceMsat: c.expected });
        answers.push({ ok: true, balance_msat: r.balance_msat.toString(),
                       total_msat: r.total_msat.toString(), account: r.account });
      } catch (e) {
        answers.push({ ok: false, error: e.message, kind: e.constructor.name });
      }
    }
    out.push(answers);
  }
  const hashes = (c) =>
    Buffer.from(v.sha256js(new Uint8Array(Buffer.from(c, "hex")))).toString("hex");
  process.stdout.write(JSON.stringify({ out, hashes: HASH_INPUTS.map(hashes) }));
})();
"""


@pytest.mark.skipif(NODE is None, reason="node is not installed (the Python verifier is the "
                                         "main test; this checks the page's script agrees)")
def test_the_pages_script_agrees_with_the_python_verifier():
    big = {**BALANCES, "wal_whale": 2**62 + 12_345}  # past 2**53: JSON.parse would round it
    pub = publish(big, seed=7)
    proof = _multi_leaf(pub)
    cases: list[dict[str, Any]] = []
    for account, p in pub.proofs.items():
        cases.append({"root": json.dumps(pub.root), "proof": json.dumps(p),
                      "expected": str(big[account])})
    for _name, tamper, _message in TAMPERING:
        root, bad = copy.deepcopy(pub.root), copy.deepcopy(proof)
        tamper(root, bad)
        cases.append({"root": json.dumps(root), "proof": json.dumps(bad), "expected": None})
    cases.append({"root": json.dumps(pub.root), "proof": json.dumps(proof),
                  "expected": str(proof["balance_msat"] + 1)})
    cases.append({"root": "{\"root\": 1", "proof": "{}", "expected": None})
    inputs = [os.urandom(n).hex() for n in (0, 1, 55, 56, 63, 64, 65, 119, 120, 1000)]
    runner = NODE_RUNNER.replace("HASH_INPUTS", json.dumps(inputs))
    proc = subprocess.run([NODE, "-e", runner, str(VERIFY_JS)], input=json.dumps(cases),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["hashes"] == [hashlib.sha256(bytes.fromhex(i)).hexdigest() for i in inputs]
    for case, (subtle, plain) in zip(cases, result["out"], strict=True):
        assert subtle == plain  # WebCrypto and the built-in SHA-256 agree
        try:
            root = json.loads(case["root"])
            got = verify(root, json.loads(case["proof"]),
                         expected_balance_msat=int(case["expected"]) if case["expected"]
                         else None)
        except (ProofInvalid, ValueError) as exc:
            assert subtle["ok"] is False and subtle["kind"] == "ProofInvalid", (case, subtle)
            if isinstance(exc, ProofInvalid):
                assert subtle["error"] == str(exc)  # the same words as the command line
        else:
            assert subtle == {"ok": True, "balance_msat": str(got.balance_msat),
                              "total_msat": str(got.total_msat), "account": got.account}
    assert sum(1 for s, _ in result["out"] if s["ok"]) == len(pub.proofs)



def test_one_customers_leaves_cannot_serve_as_another_customers_proof():
    """Found from outside (stop 32): the books owe alice and bob 5000 msat each; the operator
    publishes a tree of alice alone (half the liabilities hidden) and hands bob alice's
    proof under bob's name. The leaves name their account, so it does not check."""
    pub = build({"wal_alice": 5000}, height=100, round_id="r1", secret=b"s",
                rng=random.Random(1))
    alice = pub.proofs["wal_alice"]
    verify(pub.root, alice, expected_balance_msat=5000)
    forged = copy.deepcopy(alice)
    forged["account"] = "wal_bob"
    with pytest.raises(ProofInvalid, match="root"):
        verify(pub.root, forged, expected_balance_msat=5000)
