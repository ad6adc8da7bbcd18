"""``satvault doctor`` and ``GET /api/v1/admin/doctor`` against the simulators over their wire
protocols (bitcoind JSON-RPC, LND REST, the signer's unix socket), on both databases: all ok,
then each way it can go wrong, named with what to do."""

from __future__ import annotations

import asyncio
import functools
import json
import os
import secrets
import shutil
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic.script import ScriptDirectory
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from sqlalchemy import text
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from satvault.accounts import service as acc
from satvault.backends.base import ChainSync, TxIndex
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.lnd import LndBackend
from satvault.cli import app as cli_app
from satvault.config import Settings, reset_settings_cache
from satvault.doctor import Status, run_doctor
from satvault.doctor.checks import (
    SeedFacts,
    judge_chain,
    judge_database,
    judge_integrity,
    judge_macaroon,
    judge_seed,
    judge_signer,
    judge_tls,
    seed_facts,
)
from satvault.doctor.manifest import (
    generate_key,
    load_private_key,
    verify_manifest,
    write_manifest,
)
from satvault.migrate import alembic_config, head_revision
from satvault.signer.core import HotSigner
from satvault.signer.server import start_server
from satvault.simnet.chain import Chain
from satvault.simnet.ln.lnd_rest import LndRestServer
from satvault.simnet.ln.network import LnNetwork
from satvault.simnet.rpc import SimnetServer
from satvault.web.app import create_app
from tests.events.conftest import stream  # noqa: F401

SEED = bytes(range(64))


@functools.cache
def hot_signer() -> HotSigner:
    return HotSigner(SEED, "regtest")  # half a second to derive: once per run
MACAROON = "0201036c6e6402f801030a10" + "cd" * 20


@dataclass
class Site:
    """The simulators and a configuration that points at them; ``env`` is the configuration
    as ``SATVAULT_*`` variables, for the command line."""

    db_url: str
    home: Path
    chain: Chain
    bitcoind: SimnetServer
    network: LnNetwork
    lnd: LndRestServer
    socket: str
    tree: Path
    public_key: str
    env: dict[str, str]

    def settings(self, **overrides: Any) -> Settings:
        values = {k.removeprefix("SATVAULT_").lower(): v for k, v in self.env.items()}
        values.update(overrides)
        return Settings(**values)

    async def cli(self, *args: str, **env: str) -> tuple[int, str]:
        """``satvault …`` in this process (its own thread and event loop, while this test's
        loop keeps serving the signer's socket)."""
        def invoke() -> Any:
            reset_settings_cache()
            try:
                return CliRunner().invoke(cli_app, list(args), env={
                    **self.env, **env, "SATVAULT_CONFIG": None}, catch_exceptions=False)
            finally:
                reset_settings_cache()
        result = await asyncio.to_thread(invoke)
        return result.exit_code, result.stdout

    async def report(self, *args: str, **env: str) -> tuple[int, dict[str, Any]]:
        code, out = await self.cli("doctor", "--format", "json", *args, **env)
        return code, json.loads(out.strip().splitlines()[-1])


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {c["name"]: c["status"] for c in report["checks"]}


def check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["checks"] if c["name"] == name)


def _cert(path: Path, not_after: datetime) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "lnd")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(not_after - timedelta(days=400)).not_valid_after(not_after)
            .sign(key, hashes.SHA256()))
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


@pytest.fixture
async def site(db_url: str, tmp_path: Path) -> AsyncIterator[Site]:
    chain = Chain()
    bitcoind = SimnetServer(chain, port=0, user="u", password="p").start()
    network = LnNetwork()
    lnd = LndRestServer(network, node="platform", macaroon_hex=MACAROON).start()
    (tmp_path / "admin.macaroon").write_bytes(bytes.fromhex(MACAROON))
    os.chmod(tmp_path / "admin.macaroon", 0o600)  # as a node writes it: others may not read
    _cert(tmp_path / "tls.cert", datetime.now(UTC) + timedelta(days=365))
    sock_dir = tempfile.mkdtemp(prefix="svd", dir="/tmp")  # a unix socket path is short
    socket = os.path.join(sock_dir, "signer.sock")
    server = await start_server(socket, hot_signer())
    tree = tmp_path / "pkg"  # a small stand-in for the installed package
    (tree / "sub").mkdir(parents=True)
    (tree / "__init__.py").write_text("VERSION = 1\n")
    (tree / "ledger.py").write_text("def balance():\n    return 0\n")
    (tree / "sub" / "rules.toml").write_text("limit = 10\n")
    public_key = generate_key(tmp_path / "manifest.key")
    write_manifest(tree, load_private_key(tmp_path / "manifest.key"), tree / "_manifest.json",
                   version="test")
    env = {"SATVAULT_HOME": str(tmp_path / "home"), "SATVAULT_DATABASE_URL": db_url,
           "SATVAULT_NETWORK": "regtest", "SATVAULT_CHAIN_BACKEND": "bitcoind",
           "SATVAULT_BITCOIND_URL": bitcoind.url, "SATVAULT_LIGHTNING_BACKEND": "lnd",
           "SATVAULT_LND_URL": lnd.url, "SATVAULT_SIGNER_SOCKET": socket,
           "SATVAULT_LND_MACAROON_PATH": str(tmp_path / "admin.macaroon"),
           "SATVAULT_LND_TLS_CERT": str(tmp_path / "tls.cert"),
           "SATVAULT_CODE_MANIFEST_PUBLIC_KEY": public_key,
           "SATVAULT_CODE_MANIFEST_FILE": str(tree / "_manifest.json"),
           "SATVAULT_DOCTOR_TIMEOUT_SECONDS": "3",
           # the test machine's free space is not what these tests are about
           "SATVAULT_DOCTOR_DISK_WARN_BYTES": "1", "SATVAULT_DOCTOR_DISK_ERROR_BYTES": "0"}
    (tmp_path / "home").mkdir()
    try:
        yield Site(db_url, tmp_path / "home", chain, bitcoind, network, lnd, socket, tree,
                   public_key, env)
    finally:
        server.close()
        await server.wait_closed()
        shutil.rmtree(sock_dir, ignore_errors=True)
        lnd.stop()
        bitcoind.stop()
        network.close()


async def test_all_ok_on_the_command_line_and_the_api(site: Site, sessions, engine) -> None:
    code, report = await site.report("--package-root", str(site.tree))
    assert code == 0 and report["ok"] is True, report
    assert set(statuses(report).values()) == {"ok"}, report
    assert list(statuses(report)) == [
        "migrations", "database", "chain", "lightning", "lnd_macaroon", "lnd_tls", "clock", "disk",
        "ledger", "reconciliation", "signer", "seed_file", "signer_passphrase",
        "code_integrity", "event_stream"]
    assert "3 files" in check(report, "code_integrity")["detail"]
    assert "three ways" in check(report, "reconciliation")["detail"]
    assert f"signer at {site.socket} answers" in check(report, "signer")["detail"]

    code, table = await site.cli("doctor", "--package-root", str(site.tree))
    assert code == 0 and "safe to run" in table and "code_integrity" in table

    async with sessions() as s, s.begin():
        admin = await acc.create_user(s, email="root@example.com", is_admin=True)
        alice = await acc.create_user(s, email="alice@example.com")
        _, admin_key = await acc.create_api_key(s, owner_id=admin.id, scopes=["admin"])
        _, alice_key = await acc.create_api_key(s, owner_id=alice.id, scopes=["wallet:read"])
    # The app verifies the installed package: give it its own tree's manifest.
    app = create_app(site.settings(), engine=engine, start_workers=False)
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t") as c:
        r = await c.get("/api/v1/admin/doctor", headers={"Authorization": f"Bearer {admin_key}"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert statuses(body)["chain"] == "ok" and statuses(body)["signer"] == "ok"
        # the installed package is not the tree the manifest was made of
        assert statuses(body)["code_integrity"] == "error" and body["ok"] is False
        assert body["exit_code"] == 1
        r = await c.get("/api/v1/admin/doctor", headers={"Authorization": f"Bearer {alice_key}"})
        assert r.status_code == 403
        r = await c.get("/api/v1/admin/doctor")
        assert r.status_code == 401


async def test_nodes_unsynced_then_unreachable(site: Site) -> None:
    rpc = BitcoindBackend(site.bitcoind.url, retries=0)
    try:
        await rpc.call("simnet_setsync", 12)
    finally:
        await rpc.close()
    site.network.set_synced("platform", False)
    code, report = await site.report("--package-root", str(site.tree))
    assert code == 1 and report["ok"] is False
    chain = check(report, "chain")
    assert chain["status"] == "error" and "syncing" in chain["detail"]
    assert "best header 12" in chain["detail"] and "wait" in chain["action"]
    ln = check(report, "lightning")
    assert ln["status"] == "error" and "not synced" in ln["detail"] and "wait" in ln["action"]

    site.bitcoind.set_offline(True)
    site.lnd.stop()
    await asyncio.to_thread(shutil.rmtree, os.path.dirname(site.socket))  # the signer is gone
    code, report = await site.report("--package-root", str(site.tree))
    assert code == 1
    assert "cannot reach" in check(report, "chain")["detail"]
    assert "bitcoind_url" in check(report, "chain")["action"]
    assert "cannot reach" in check(report, "lightning")["detail"]
    signer = check(report, "signer")
    assert signer["status"] == "error" and "signer serve" in signer["action"]
    assert check(report, "reconciliation")["status"] == "warn"
    assert "u:p@" not in json.dumps(report)  # the node's password is not shown
    for name in ("migrations", "ledger", "code_integrity"):
        assert check(report, name)["status"] == "ok", report


async def test_a_chain_node_of_another_network_is_an_error(site: Site) -> None:
    """The node says which chain it is on; one that is not SATVAULT_NETWORK's is an error
    with what to do, and the three-way reconciliation is not run against it."""
    code, report = await site.report("--package-root", str(site.tree))
    assert code == 0 and "regtest" in check(report, "chain")["detail"], report
    rpc = BitcoindBackend(site.bitcoind.url, retries=0)
    try:
        await rpc.call("simnet_setchain", "test")  # a testnet3 node
    finally:
        await rpc.close()
    code, report = await site.report("--package-root", str(site.tree))
    assert code == 1 and report["ok"] is False
    chain = check(report, "chain")
    assert chain["status"] == "error", report
    assert chain["detail"] == "the node is on testnet, satvault is configured for regtest"
    assert "bitcoind_url" in chain["action"] and "SATVAULT_NETWORK" in chain["action"]
    recon = check(report, "reconciliation")
    assert recon["status"] == "warn" and "another network" in recon["detail"]
    assert check(report, "lightning")["status"] == "ok"  # the Lightning node is regtest's

    code, table = await site.cli("doctor", "--package-root", str(site.tree))
    assert code == 1 and "configured for regtest" in table

    # SATVAULT_NETWORK=testnet and the node agree on the chain (the Lightning node does not)
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_NETWORK="testnet")
    assert check(report, "chain")["status"] == "ok", report
    assert check(report, "lightning")["status"] == "error"


async def test_a_bitcoind_without_txindex_is_an_error_and_one_still_indexing_a_warning(
        site: Site) -> None:
    """Without -txindex, Bitcoin Core finds a confirmed transaction only with its block hash:
    satvault never sees a payout confirm. The doctor asks ``getindexinfo`` and says so, with
    what to do; an index still being built is a warning (it will be there)."""
    code, report = await site.report("--package-root", str(site.tree))
    chain = check(report, "chain")
    assert code == 0 and chain["status"] == "ok" and "txindex" in chain["detail"], report
    rpc = BitcoindBackend(site.bitcoind.url, retries=0)
    try:
        await rpc.call("simnet_settxindex", False)
        code, report = await site.report("--package-root", str(site.tree))
        assert code == 1 and report["ok"] is False
        chain = check(report, "chain")
        assert chain["status"] == "error", report
        assert "without -txindex" in chain["detail"]
        assert "-txindex=1" in chain["action"]
        code, table = await site.cli("doctor", "--package-root", str(site.tree))
        assert code == 1 and "-txindex=1" in table

        await rpc.call("simnet_settxindex", True, False)  # building it after a restart
        code, report = await site.report("--package-root", str(site.tree))
        chain = check(report, "chain")
        assert code == 0 and chain["status"] == "warn", report
        assert "still building" in chain["detail"] and "wait" in chain["action"]
    finally:
        await rpc.close()


def test_an_esplora_server_always_indexes_and_an_old_core_cannot_say() -> None:
    synced = ChainSync(100, 100, False, 1.0, 0, None, "regtest")
    found = judge_chain(synced, kind="esplora", url="u", network="regtest",
                        txindex=TxIndex(True))
    assert found.status is Status.OK and "txindex" not in found.detail
    found = judge_chain(synced, kind="bitcoind", url="u", network="regtest", txindex=None)
    assert found.status is Status.WARN and "getindexinfo" in found.detail
    assert "-txindex=1" in found.action
    # the network and the sync state come first: one finding per check, the worst
    elsewhere = ChainSync(100, 100, False, 1.0, 0, None, "mainnet")
    found = judge_chain(elsewhere, kind="bitcoind", url="u", network="regtest",
                        txindex=TxIndex(False, False))
    assert found.status is Status.ERROR and "configured for regtest" in found.detail


async def test_no_url_setting_shows_its_credentials(site: Site) -> None:
    """Found from outside: bitcoind_url's password was masked, esplora_url was shown as
    configured, user and password included."""
    secret_url = "https://reader:esplora-s3cret@127.0.0.1:9/api?api_key=k3y-s3cret&page=2"
    env = {"SATVAULT_CHAIN_BACKEND": "esplora", "SATVAULT_ESPLORA_URL": secret_url}
    code, report = await site.report("--package-root", str(site.tree), **env)
    assert code == 1
    chain = check(report, "chain")
    assert "cannot reach" in chain["detail"]
    assert "https://reader:***@127.0.0.1:9/api?api_key=***&page=2" in chain["detail"]
    _, table = await site.cli("doctor", "--package-root", str(site.tree), **env)
    for shown in (json.dumps(report), table):
        assert "esplora-s3cret" not in shown and "k3y-s3cret" not in shown


async def test_lnd_certificate_expired_or_expiring_and_macaroon(site: Site, sessions,
                                                                tmp_path: Path) -> None:
    now = datetime.now(UTC)
    expired = tmp_path / "old.cert"
    _cert(expired, now - timedelta(days=1))
    lnd = LndBackend(site.lnd.url, macaroon_hex=MACAROON)
    try:
        report = await run_doctor(site.settings(lnd_tls_cert=str(expired)), sessions,
                                  lightning=lnd, root=site.tree)
    finally:
        await lnd.close()
    tls = report.get("lnd_tls")
    assert tls.status is Status.ERROR and "expired on" in tls.detail, tls
    assert "tls.cert" in tls.action and report.exit_code == 1
    assert report.get("lightning").status is Status.OK  # the node itself answers
    for days, status, words in ((10, Status.WARN, "expires in 9 day"),
                                (300, Status.OK, "valid until")):
        cert = tmp_path / f"{days}.cert"
        _cert(cert, now + timedelta(days=days))
        tls = judge_tls(kind="lnd", cert_path=str(cert), url=site.lnd.url, now=now)
        assert tls.status is status and words in tls.detail, tls
    not_pem = tmp_path / "garbage.cert"
    not_pem.write_text("hello")
    assert judge_tls(kind="lnd", cert_path=str(not_pem), url="https://x",
                     now=now).status is Status.ERROR
    # built from the settings, an unreadable macaroon stops the adapter itself
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_LND_MACAROON_PATH=str(tmp_path / "nope"))
    assert code == 1 and check(report, "lightning")["status"] == "error"
    macaroon = check(report, "lnd_macaroon")
    assert macaroon["status"] == "error" and "nope" in macaroon["detail"]
    assert "lnd_macaroon_path" in macaroon["action"]
    # Found from outside: a macaroon every user may read passed.
    mac = tmp_path / "admin.macaroon"
    mac.write_bytes(bytes.fromhex(MACAROON))
    for mode, status in ((0o644, Status.ERROR), (0o640, Status.OK), (0o600, Status.OK)):
        os.chmod(mac, mode)
        judged = judge_macaroon(kind="lnd", path=str(mac), inline=False)
        assert judged.status is status, (oct(mode), judged)
    os.chmod(mac, 0o644)
    assert "chmod 600" in judge_macaroon(kind="lnd", path=str(mac), inline=False).action


async def test_seed_file_permissions(site: Site, tmp_path: Path) -> None:
    seed = site.home / "signer.json"
    seed.write_text("{}")
    os.chmod(seed, 0o644)
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_SIGNER_SOCKET="")  # the in-process signer
    entry = check(report, "seed_file")
    assert code == 1 and entry["status"] == "error"
    assert "0644" in entry["detail"] and "chmod 600" in entry["action"]
    # "{}" is no seed: the in-process signer cannot open it (said since the doctor compares
    # its wallets with the database's).
    signer = check(report, "signer")
    assert signer["status"] == "error" and "cannot be opened" in signer["detail"], signer
    os.chmod(seed, 0o600)
    assert judge_seed(seed_facts(seed), separate_signer=False).status is Status.OK
    # another user's file is refused for the in-process signer, expected for a separate one
    other = SeedFacts(str(seed), True, 0o600, os.geteuid() + 1)
    assert judge_seed(other, separate_signer=False).status is Status.ERROR
    assert "not by the running user" in judge_seed(other, separate_signer=False).detail
    assert judge_seed(other, separate_signer=True).status is Status.OK
    own = SeedFacts(str(seed), True, 0o600, os.geteuid())
    assert judge_seed(own, separate_signer=True).status is Status.WARN
    os.unlink(seed)
    gone = judge_seed(seed_facts(seed), separate_signer=False)
    assert gone.status is Status.ERROR and "no seed file" in gone.detail
    production = judge_signer(None, socket="", production=True)
    assert production.status is Status.ERROR and "another user" in production.action


async def test_the_signer_passphrase_file_is_private_like_the_seed(site: Site) -> None:
    """Found from outside: a world-readable passphrase file (it opens the seed) passed while
    a world-readable seed was an error."""
    passphrase = site.home / "signer.passphrase"
    passphrase.write_text("correct horse")
    os.chmod(passphrase, 0o644)
    code, report = await site.report("--package-root", str(site.tree))
    entry = check(report, "signer_passphrase")
    assert code == 1 and entry["status"] == "error" and "0644" in entry["detail"]
    assert "chmod 600" in entry["action"]
    os.chmod(passphrase, 0o600)
    code, report = await site.report("--package-root", str(site.tree))
    assert check(report, "signer_passphrase")["status"] == "ok"


async def test_the_demo_signer_off_regtest_is_a_warning_and_with_real_money_an_error(
        site: Site) -> None:
    """Found in the known gaps: a testnet or signet deployment left at `development` got the
    in-process demo signer silently, and the doctor called it fine. Off regtest it is now a
    warning (the commands that sign need --demo-signer there), with real money an error."""
    judged = {}
    for network in ("regtest", "signet", "testnet"):
        code, report = await site.report("--package-root", str(site.tree),
                                         SATVAULT_SIGNER_SOCKET="", SATVAULT_NETWORK=network)
        judged[network] = check(report, "signer")
    assert judged["regtest"]["status"] == "ok", judged
    for network in ("signet", "testnet"):
        entry = judged[network]
        assert entry["status"] == "warn" and network in entry["detail"], entry
        assert "--demo-signer" in entry["detail"] and "signer serve" in entry["action"]
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_SIGNER_SOCKET="", SATVAULT_NETWORK="mainnet")
    assert code == 1 and check(report, "signer")["status"] == "error"


async def test_tampered_code_is_named(site: Site, tmp_path: Path) -> None:
    (site.tree / "ledger.py").write_text("def balance():\n    return 10**9\n")
    (site.tree / "sub" / "rules.toml").unlink()
    (site.tree / "sub" / "backdoor.py").write_text("import os\n")
    (site.tree / "__pycache__").mkdir()
    (site.tree / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"\0")  # not listed
    code, report = await site.report("--package-root", str(site.tree))
    entry = check(report, "code_integrity")
    assert code == 1 and entry["status"] == "error"
    assert "changed: ledger.py" in entry["detail"]
    assert "missing: sub/rules.toml" in entry["detail"]
    assert "extra: sub/backdoor.py" in entry["detail"] and "pyc" not in entry["detail"]
    assert "reinstall" in entry["action"]

    # re-made by the command line over the changed tree, it matches again; signed by a key
    # other than the configured one, it is refused whatever the files say
    manifest = site.tree / "_manifest.json"
    code, out = await site.cli("doctor", "manifest", "--key", str(tmp_path / "manifest.key"),
                               "--package-root", str(site.tree))
    assert code == 0 and json.loads(out)["files"] == 3
    assert verify_manifest(site.tree, manifest, site.public_key).ok
    code, out = await site.cli("doctor", "keygen", "--out", str(tmp_path / "other.key"))
    assert code == 0 and json.loads(out)["public_key"] != site.public_key
    assert os.stat(tmp_path / "other.key").st_mode & 0o777 == 0o600
    code, _ = await site.cli("doctor", "manifest", "--key", str(tmp_path / "other.key"),
                             "--package-root", str(site.tree))
    assert code == 0
    forged = verify_manifest(site.tree, manifest, site.public_key)
    assert not forged.signature_ok and not forged.ok
    entry = judge_integrity(forged, root=str(site.tree), manifest=str(manifest),
                            configured=True, production=False)
    assert entry.status is Status.ERROR and "not signed by the configured key" in entry.detail
    # no key configured: a warning in development, an error in production
    for production, status in ((False, Status.WARN), (True, Status.ERROR)):
        assert judge_integrity(None, root="r", manifest="m", configured=False,
                               production=production).status is status


async def test_database_not_at_head_low_disk_unusable_settings(site: Site, engine) -> None:
    previous = ScriptDirectory.from_config(alembic_config("sqlite://")).get_revision(
        head_revision()).down_revision
    async with engine.begin() as conn:
        await conn.execute(text("UPDATE alembic_version SET version_num = :v"), {"v": previous})
    try:
        code, report = await site.report("--package-root", str(site.tree))
    finally:
        async with engine.begin() as conn:
            await conn.execute(text("UPDATE alembic_version SET version_num = :v"),
                               {"v": head_revision()})
    migrations = check(report, "migrations")
    assert code == 1 and migrations["status"] == "error"
    assert f"revision {previous}" in migrations["detail"]
    assert "satvault db upgrade" in migrations["action"]
    assert check(report, "ledger")["detail"].startswith("not run")
    assert check(report, "reconciliation")["status"] == "warn"

    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_DOCTOR_DISK_WARN_BYTES=str(10**18),
                                     SATVAULT_DOCTOR_DISK_ERROR_BYTES=str(10**17))
    disk = check(report, "disk")
    assert code == 1 and disk["status"] == "error" and "GiB free" in disk["detail"]
    assert "free space" in disk["action"]
    code, out = await site.cli("doctor", SATVAULT_CHAIN_BACKEND="carrier-pigeon")
    assert code == 2 and "unknown chain_backend" in out


async def test_a_database_that_can_lose_commits_is_named(site: Site, engine) -> None:
    """PostgreSQL: settings a role or database overrides (``ALTER ROLE … SET``) are what the
    platform's connections run with, and what the doctor reads: a role of its own here, so
    no other connection sees them. SQLite: fine for development, an error in production."""
    if site.db_url.startswith("sqlite"):
        code, report = await site.report("--package-root", str(site.tree))
        database = check(report, "database")
        assert database["status"] == "ok" and "development only" in database["detail"]
        code, report = await site.report("--package-root", str(site.tree),
                                         SATVAULT_ENVIRONMENT="production")
        database = check(report, "database")
        assert code == 1 and database["status"] == "error"
        assert "run PostgreSQL in production" in database["action"]
        return
    code, report = await site.report("--package-root", str(site.tree))
    database = check(report, "database")
    assert database["status"] == "ok", database
    assert "synchronous_commit on" in database["detail"]
    role = f"doctor_probe_{secrets.token_hex(4)}"
    async with engine.connect() as conn:
        await conn.execute(text(f"CREATE ROLE {role} LOGIN"))
        await conn.execute(text(f"GRANT pg_read_all_data TO {role}"))
        await conn.execute(text(f"ALTER ROLE {role} SET synchronous_commit = off"))
        await conn.execute(text(
            f"ALTER ROLE {role} SET default_transaction_isolation = 'repeatable read'"))
        await conn.commit()
    try:
        url = make_url(site.db_url).set(username=role).render_as_string(hide_password=False)
        code, report = await site.report("--package-root", str(site.tree),
                                         SATVAULT_DATABASE_URL=url)
    finally:
        async with engine.connect() as conn:
            await conn.execute(text(f"DROP ROLE {role}"))
            await conn.commit()
    database = check(report, "database")
    assert code == 1 and database["status"] == "error", database
    assert "synchronous_commit is off" in database["detail"]
    assert "default_transaction_isolation is repeatable read" in database["detail"]
    assert "set synchronous_commit = on" in database["action"]
    # what read it is the platform's own engine: the other checks still pass under that role
    assert statuses(report)["migrations"] == "ok" and statuses(report)["ledger"] == "ok"


def test_settings_a_test_database_cannot_turn_off() -> None:
    """fsync and full_page_writes are the server's own (not a role's or a database's): judged
    from the facts."""
    sound = {"fsync": "on", "full_page_writes": "on", "synchronous_commit": "on",
             "default_transaction_isolation": "read committed"}
    assert judge_database(sound, production=True).status is Status.OK
    for name, words in (("fsync", "can corrupt the database"),
                        ("full_page_writes", "can leave it torn")):
        verdict = judge_database({**sound, name: "off"}, production=False)
        assert verdict.status is Status.ERROR and words in verdict.detail
        assert f"set {name} = on" in verdict.action
    assert judge_database({**sound, "synchronous_commit": "local"},
                          production=True).status is Status.OK
    partial = judge_database({"synchronous_commit": "on"}, production=True)
    assert partial.status is Status.WARN and "does not report fsync" in partial.detail
    unread = judge_database(PermissionError("no"), production=True)
    assert unread.status is Status.WARN and "cannot read" in unread.detail


def test_the_chain_checks_network_before_sync_and_warns_when_it_cannot_tell() -> None:
    syncing_elsewhere = ChainSync(100, 120, True, 0.5, 0, None, "mainnet")
    found = judge_chain(syncing_elsewhere, kind="bitcoind", url="u", network="regtest")
    assert (found.status, found.detail) == (
        Status.ERROR, "the node is on mainnet, satvault is configured for regtest")
    silent = ChainSync(100, 100, False, 1.0, 0, None)  # a plug-in that does not say
    found = judge_chain(silent, kind="plugin", url="u", network="signet")
    assert found.status is Status.WARN and "does not say which network" in found.detail
    assert "on signet" in found.action


async def test_registered_wallets_that_are_not_the_signers_are_an_error(site: Site,
                                                                        sessions) -> None:
    """Found from outside: the database's watch-only wallets were never compared with the
    signer's keys (a signer started from another seed, or a configured descriptor of another
    key): deposits then went to addresses the signer cannot spend, and every batch got
    `stuck`. The doctor compares what each wallet derives with the signer's own."""
    from satvault.onchain.service import register_wallet

    ours = hot_signer().descriptors()
    async with sessions() as s, s.begin():
        await register_wallet(s, role="hot", descriptor=ours["hot"], network="regtest")
    code, report = await site.report("--package-root", str(site.tree))
    assert check(report, "signer")["status"] == "ok", report
    assert "the hot wallet is the signer's" in check(report, "signer")["detail"]

    other = HotSigner(bytes([7]) * 64, "regtest").descriptors()
    async with sessions() as s, s.begin():
        await register_wallet(s, role="deposit", descriptor=other["deposit"], network="regtest")
    code, report = await site.report("--package-root", str(site.tree))
    entry = check(report, "signer")
    assert code == 1 and entry["status"] == "error", report
    assert "the deposit wallet in the database is not the signer's" in entry["detail"]
    assert "seed" in entry["action"]


async def test_the_in_process_signers_seed_is_compared_too(site: Site, sessions) -> None:
    """Found from outside: with the in-process (demo) signer the doctor said "ok" before it
    compared anything, so a database restored from another seed's platform passed. Its seed's
    descriptors are compared with the database's wallets as a socket signer's are."""
    from satvault.onchain.service import register_wallet
    from satvault.signer.seed import create_seed_file, load_seed_file

    seed = site.home / "signer.json"
    create_seed_file(seed, "demo passphrase", network="regtest")
    env = {"SATVAULT_SIGNER_SOCKET": "", "SATVAULT_SIGNER_PASSPHRASE": "demo passphrase"}
    mine = HotSigner.from_material(load_seed_file(seed, "demo passphrase")).descriptors()
    async with sessions() as s, s.begin():
        await register_wallet(s, role="hot", descriptor=mine["hot"], network="regtest")
    code, report = await site.report("--package-root", str(site.tree), **env)
    assert check(report, "signer")["status"] == "ok", report
    other = HotSigner(bytes([9]) * 64, "regtest").descriptors()
    async with sessions() as s, s.begin():
        await register_wallet(s, role="deposit", descriptor=other["deposit"], network="regtest")
    code, report = await site.report("--package-root", str(site.tree), **env)
    entry = check(report, "signer")
    assert code == 1 and entry["status"] == "error", report
    assert "the deposit wallet in the database is not the signer's" in entry["detail"]
    assert "in this process" in entry["detail"]
    # A seed that cannot be opened is said, not called ok.
    code, report = await site.report("--package-root", str(site.tree), **{
        **env, "SATVAULT_SIGNER_PASSPHRASE": "not the passphrase"})
    assert check(report, "signer")["status"] == "error", report


async def test_the_event_stream_and_the_relays_lag_are_checked(site: Site, sessions,
                                                               stream) -> None:  # noqa: F811
    """Found from outside: with ``event_stream = nats`` and the relay stuck (NATS gone),
    doctor listed fourteen checks and none about NATS or the events waiting for it."""
    from sqlalchemy import update

    from satvault.events.jetstream import JetStream
    from satvault.events.models import OutboxEvent
    from satvault.events.relay import EventRelay
    from tests.events.test_relay import emit_events

    code, report = await site.report("--package-root", str(site.tree))
    assert check(report, "event_stream")["status"] == "ok"
    assert "outbox" in check(report, "event_stream")["detail"]
    nats = {"SATVAULT_EVENT_STREAM": "nats", "SATVAULT_NATS_STREAM": stream.settings.stream,
            "SATVAULT_NATS_SUBJECT_PREFIX": stream.settings.prefix}
    [event] = await emit_events(sessions, [("invoice.created", "invoice", "inv_a")])
    async with sessions() as s, s.begin():  # emitted two minutes ago, and still waiting
        await s.execute(update(OutboxEvent).where(OutboxEvent.id == event).values(
            created_at=datetime.now(UTC) - timedelta(seconds=120)))
    closed = f"nats://127.0.0.1:{_free_port()}"
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_NATS_URL=closed, **nats)
    found = check(report, "event_stream")
    assert code == 1 and found["status"] == "error", found
    assert "cannot reach NATS" in found["detail"] and "nats_url" in found["action"]
    assert "1 event(s) wait for the relay" in found["detail"], found

    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_NATS_URL=stream.settings.url, **nats)
    found = check(report, "event_stream")
    assert found["status"] == "warn" and "answers" in found["detail"], found
    assert "the oldest for 1" in found["detail"] and "serve" in found["action"], found
    relay = EventRelay(sessions, JetStream(stream.settings))
    try:
        assert await relay.tick() == 1
    finally:
        await relay.close()
    code, report = await site.report("--package-root", str(site.tree),
                                     SATVAULT_NATS_URL=stream.settings.url, **nats)
    found = check(report, "event_stream")
    assert found["status"] == "ok" and f"caught up (event {event})" in found["detail"], found
    # The stream deleted under the relay is not a stream the relay has yet to make.
    await stream.js.delete_stream(stream.settings.stream)
    try:
        code, report = await site.report("--package-root", str(site.tree),
                                         SATVAULT_NATS_URL=stream.settings.url, **nats)
    finally:
        await stream.ensure_stream()
    found = check(report, "event_stream")
    assert found["status"] == "error" and f"up to event {event}" in found["detail"], found


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
