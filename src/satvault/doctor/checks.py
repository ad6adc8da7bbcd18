"""The doctor's judgements: plain facts in (what a probe found, or the exception it met), one
:class:`Check` out, saying what is wrong and what to do. No I/O here but reading a file's
metadata or a certificate; the probes that talk to nodes and the database live in
:mod:`satvault.doctor.service`."""

from __future__ import annotations

import os
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from satvault.backends.base import ChainSync
from satvault.backends.lightning import NodeInfo
from satvault.doctor._chain import judge_chain
from satvault.doctor._report import Check, Status
from satvault.doctor.manifest import IntegrityResult
from satvault.ledger.check import CheckReport

__all__ = [
    "CERT_WARN_DAYS",
    "CLOCK_ERROR_SECONDS",
    "CLOCK_WARN_SECONDS",
    "DURABILITY_SETTINGS",
    "RELAY_LAG_ERROR_SECONDS",
    "RELAY_LAG_WARN_SECONDS",
    "DiskFacts",
    "RelayFacts",
    "SeedFacts",
    "judge_chain",
    "judge_clock",
    "judge_database",
    "judge_disk",
    "judge_event_stream",
    "judge_integrity",
    "judge_ledger",
    "judge_lightning",
    "judge_macaroon",
    "judge_migrations",
    "judge_passphrase",
    "judge_reconciliation",
    "judge_seed",
    "judge_signer",
    "judge_tls",
    "seed_facts",
    "worst",
]

# Against the database server's clock (another host, usually on NTP as well).
CLOCK_WARN_SECONDS = 5
CLOCK_ERROR_SECONDS = 120
# Bitcoin nodes refuse a block stamped more than 2 h past their own time, so a tip that far
# ahead of this host's clock means this clock is slow.
FUTURE_BLOCK_LIMIT = 2 * 3600
CERT_WARN_DAYS = 30
# How long the oldest event may wait for the relay (event_stream = nats) before it is worth
# a look, and before merchants are surely missing their webhooks and live updates.
RELAY_LAG_WARN_SECONDS = 60
RELAY_LAG_ERROR_SECONDS = 600
# The PostgreSQL settings the money's durability and the money paths' locking rest on.
DURABILITY_SETTINGS = ("fsync", "full_page_writes", "synchronous_commit",
                       "default_transaction_isolation")


def worst(statuses: Sequence[Status]) -> Status:
    order = (Status.OK, Status.WARN, Status.ERROR)
    return max(statuses, key=order.index, default=Status.OK)


def _err(exc: BaseException) -> str:
    return str(exc) or type(exc).__name__


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if abs(seconds) >= 3600 else f"{seconds:.0f} s"


# ----------------------------------------------------------------------------- database

def judge_migrations(current: str | BaseException | None, head: str) -> Check:
    if isinstance(current, BaseException):
        return Check("migrations", Status.ERROR,
                     f"cannot reach the database: {_err(current)}",
                     "check database_url, that the server runs and accepts this user")
    if current == head:
        return Check("migrations", Status.OK, f"the schema is at the head revision {head}")
    state = "has no schema" if current is None else f"is at revision {current}"
    return Check("migrations", Status.ERROR, f"the database {state}; this satvault needs {head}",
                 "back up the database, then run `satvault db upgrade`")


def judge_database(found: dict[str, str] | BaseException | None, *, production: bool
                   ) -> Check:
    """Whether a commit satvault has answered for survives a crash. ``found``: the server's
    :data:`DURABILITY_SETTINGS` as this process's connections see them (``pg_settings``), the
    exception met reading them, or None for SQLite."""
    if found is None:
        detail = ("SQLite (WAL, synchronous=NORMAL): one machine, and a power loss can undo "
                  "its last commits")
        if production:
            return Check("database", Status.ERROR, detail, "run PostgreSQL in production "
                         "(database_url = postgresql+asyncpg://…)")
        return Check("database", Status.OK, detail + " (development only)")
    if isinstance(found, BaseException):
        return Check("database", Status.WARN, f"cannot read the server's settings: "
                     f"{_err(found)}", "check that this user may read pg_settings")
    problems: list[tuple[Status, str, str]] = []
    missing = [name for name in DURABILITY_SETTINGS if name not in found]
    if missing:
        problems.append((Status.WARN, f"the server does not report {', '.join(missing)}",
                         "check that satvault's database is PostgreSQL"))
    if found.get("fsync") == "off":
        problems.append((Status.ERROR, "fsync is off: a crash can corrupt the database and "
                         "lose commits already answered for", "set fsync = on"))
    if found.get("full_page_writes") == "off":
        problems.append((Status.ERROR, "full_page_writes is off: a crash in the middle of a "
                         "page write can leave it torn", "set full_page_writes = on"))
    if found.get("synchronous_commit") == "off":
        problems.append((Status.ERROR, "synchronous_commit is off: a payment already answered "
                         "as done can vanish in a crash", "set synchronous_commit = on"))
    isolation = found.get("default_transaction_isolation", "read committed")
    if isolation != "read committed":
        problems.append((Status.WARN, f"default_transaction_isolation is {isolation}: the "
                         "money paths take their row locks themselves and are tested under "
                         "read committed", "reset default_transaction_isolation for satvault's "
                         "database and role"))
    if not problems:
        return Check("database", Status.OK, "PostgreSQL: fsync and full_page_writes on, "
                     f"synchronous_commit {found.get('synchronous_commit', '?')}, "
                     "read committed")
    return Check("database", worst([f[0] for f in problems]),
                 "; ".join(f[1] for f in problems),
                 "; ".join(f[2] for f in problems))


def judge_ledger(report: CheckReport | BaseException | None) -> Check:
    if report is None:
        return Check("ledger", Status.WARN, "not run: the schema is not current",
                     "fix the migrations check first")
    if isinstance(report, BaseException):
        return Check("ledger", Status.ERROR, f"the ledger check failed: {_err(report)}",
                     "run `satvault ledger check` to see the error")
    if report.ok:
        return Check("ledger", Status.OK, "the books balance: "
                     f"{report.stats.get('accounts', 0)} accounts, "
                     f"{report.stats.get('transfers', 0)} transfers checked")
    first = "; ".join(f"{p.check}: {p.message}" for p in report.problems[:3])
    return Check("ledger", Status.ERROR,
                 f"{len(report.problems)} problem(s) in the books: {first}",
                 "stop withdrawals, run `satvault ledger check` for the rows and investigate "
                 "before running the platform")


def judge_reconciliation(differences: Sequence[object] | BaseException | None,
                         reason: str = "") -> Check:
    scope = ("three ways: the ledger with itself, with the payment records, and with the "
             "chain and Lightning nodes")
    if differences is None:
        return Check("reconciliation", Status.WARN, f"not run: {reason}",
                     "fix the checks above, then run the doctor again")
    if isinstance(differences, BaseException):
        return Check("reconciliation", Status.WARN,
                     f"could not reconcile: {_err(differences)} ({scope})",
                     "run `satvault reconcile` once the nodes answer")
    if not differences:
        return Check("reconciliation", Status.OK, f"no difference: {scope}")
    named = "; ".join(f"{getattr(d, 'kind', '?')} {getattr(d, 'subject', '')}: "
                      f"{getattr(d, 'detail', str(d))}" for d in list(differences)[:3])
    return Check("reconciliation", Status.ERROR,
                 f"{len(differences)} difference(s): {named} ({scope})",
                 "run `satvault reconcile` for every difference row by row and find its cause "
                 "(a missed notification, a spend outside satvault, a bug) before moving money")


# ---------------------------------------------------------------------------- the nodes

def judge_lightning(info: NodeInfo | BaseException | None, *, kind: str, network: str) -> Check:
    if info is None:
        return Check("lightning", Status.OK, "no Lightning node is configured "
                     "(lightning_backend = none)")
    if isinstance(info, BaseException):
        return Check("lightning", Status.ERROR, f"cannot reach the {kind} node: {_err(info)}",
                     "check that the node runs, lnd_url / cln_rpc_path, the macaroon and the "
                     "TLS certificate")
    if info.network != network:
        return Check("lightning", Status.ERROR,
                     f"the node is on {info.network}, satvault is configured for {network}",
                     "point satvault at the node of the right network")
    if not info.synced:
        return Check("lightning", Status.ERROR,
                     f"the node ({info.alias or info.pubkey[:16]}) is not synced to the chain "
                     f"(height {info.block_height})", "wait for it to catch up; check its "
                     "connection to its bitcoind: until then invoices and payments may fail")
    return Check("lightning", Status.OK, f"{kind} node {info.alias or info.pubkey[:16]} synced "
                 f"to the chain at height {info.block_height}")


def judge_macaroon(*, kind: str, path: str | None, inline: bool) -> Check:
    if kind not in ("lnd", "simnet"):
        return Check("lnd_macaroon", Status.OK, f"not used by the {kind or 'none'} backend")
    if path:
        try:
            size = len(Path(path).read_bytes())
        except OSError as exc:
            return Check("lnd_macaroon", Status.ERROR,
                         f"cannot read the macaroon {path}: {exc.strerror or exc}",
                         "fix lnd_macaroon_path or the file's permissions for this user")
        if size == 0:
            return Check("lnd_macaroon", Status.ERROR, f"the macaroon {path} is empty",
                         "copy the node's admin or invoice macaroon there")
        mode = stat.S_IMODE(Path(path).stat().st_mode)
        if mode & 0o007:
            # Found from outside: a world-readable admin macaroon passed; whoever reads it
            # spends the node's funds.
            return Check("lnd_macaroon", Status.ERROR, f"the macaroon {path} has mode "
                         f"{mode:04o}: every user of this host may read it, and a macaroon "
                         "spends the node's funds", f"`chmod 600 {path}` (or 640 with a "
                         "group only satvault's user is in)")
        return Check("lnd_macaroon", Status.OK, f"{path} is readable ({size} bytes, mode "
                     f"{mode:04o})")
    if inline:
        return Check("lnd_macaroon", Status.OK, "given inline (lnd_macaroon_hex)")
    if kind == "simnet":
        return Check("lnd_macaroon", Status.OK, "the simulator needs none")
    return Check("lnd_macaroon", Status.WARN, "no macaroon configured: LND refuses most calls "
                 "without one", "set lnd_macaroon_path")


def judge_tls(*, kind: str, cert_path: str | None, url: str, now: datetime) -> Check:
    if kind not in ("lnd", "simnet"):
        return Check("lnd_tls", Status.OK, f"not used by the {kind or 'none'} backend")
    if not cert_path:
        plain = url.startswith("http://")
        return Check("lnd_tls", Status.WARN if plain and kind == "lnd" else Status.OK,
                     "plain HTTP: no TLS" if plain else "verified against the system's CAs",
                     "use https with the node's tls.cert (lnd_tls_cert) unless the node is on "
                     "this host" if plain and kind == "lnd" else "")
    from cryptography import x509

    try:
        data = Path(cert_path).read_bytes()
    except OSError as exc:
        return Check("lnd_tls", Status.ERROR, f"cannot read {cert_path}: {exc.strerror or exc}",
                     "fix lnd_tls_cert or the file's permissions")
    try:
        cert = x509.load_pem_x509_certificate(data)
    except ValueError:
        return Check("lnd_tls", Status.ERROR, f"{cert_path} is not a PEM certificate",
                     "copy the node's tls.cert there")
    expires = cert.not_valid_after_utc
    left = expires - now
    if left.total_seconds() <= 0:
        return Check("lnd_tls", Status.ERROR,
                     f"the certificate {cert_path} expired on {expires:%Y-%m-%d %H:%M} UTC",
                     "have LND make a new one (delete tls.cert and tls.key, restart it), copy "
                     "it here")
    if left.days < CERT_WARN_DAYS:
        return Check("lnd_tls", Status.WARN,
                     f"the certificate {cert_path} expires in {left.days} day(s), on "
                     f"{expires:%Y-%m-%d}", "renew it before then (LND makes a new one when "
                     "tls.cert and tls.key are deleted and it restarts)")
    return Check("lnd_tls", Status.OK, f"the certificate is valid until {expires:%Y-%m-%d} "
                 f"({left.days} days)")


# ------------------------------------------------------------------------ host and clock

def judge_clock(*, now: datetime, db_now: datetime | BaseException | None,
                sync: ChainSync | BaseException | None, network: str) -> Check:
    found: list[tuple[Status, str, str]] = []
    if isinstance(db_now, datetime):
        skew = (now - db_now).total_seconds()
        status = Status.ERROR if abs(skew) > CLOCK_ERROR_SECONDS \
            else Status.WARN if abs(skew) > CLOCK_WARN_SECONDS else Status.OK
        found.append((status, f"{'ahead of' if skew >= 0 else 'behind'} the database server "
                      f"by {abs(skew):.1f} s", "run NTP (chrony, systemd-timesyncd) on both "
                      "hosts: expiries and audit times depend on it"))
    if isinstance(sync, ChainSync) and network != "regtest":
        ahead = sync.tip_time - now.timestamp()
        if ahead > FUTURE_BLOCK_LIMIT:
            found.append((Status.ERROR, f"the chain tip is stamped {_hours(ahead)} in this "
                          "host's future, which nodes never accept: this clock is slow",
                          "set the clock right (NTP)"))
        elif sync.median_time is not None and now.timestamp() < sync.median_time:
            found.append((Status.ERROR, "this host's clock is behind the chain's median time "
                          "past, which itself lags real time by about an hour",
                          "set the clock right (NTP)"))
        else:
            found.append((Status.OK, f"consistent with the chain tip's time (tip "
                          f"{_hours(-ahead)} old)", ""))
    elif isinstance(sync, ChainSync):
        found.append((Status.OK, "no comparison with the chain: regtest block times are "
                      "synthetic", ""))
    if not found:
        return Check("clock", Status.WARN, "nothing to compare this host's clock with (SQLite "
                     "and no chain time)", "make sure NTP runs on this host")
    status = worst([f[0] for f in found])
    action = "; ".join(dict.fromkeys(f[2] for f in found if f[0] is not Status.OK and f[2]))
    return Check("clock", status, "this host's clock: " + "; ".join(f[1] for f in found), action)


@dataclass(frozen=True, slots=True)
class DiskFacts:
    path: str
    free: int
    total: int


def judge_disk(disks: Sequence[DiskFacts | tuple[str, BaseException]], *, warn_bytes: int,
               error_bytes: int) -> Check:
    found: list[tuple[Status, str]] = []
    for d in disks:
        if isinstance(d, tuple):
            found.append((Status.ERROR, f"{d[0]}: {_err(d[1])}"))
            continue
        status = Status.ERROR if d.free < error_bytes \
            else Status.WARN if d.free < warn_bytes else Status.OK
        found.append((status, f"{d.path}: {d.free / 1024**3:.1f} GiB free of "
                      f"{d.total / 1024**3:.1f} GiB"))
    status = worst([f[0] for f in found])
    action = "" if status is Status.OK else (
        "free space or grow the volume: a full disk stops the database mid-transaction "
        f"(warning below {warn_bytes / 1024**3:.1f} GiB, error below "
        f"{error_bytes / 1024**3:.1f} GiB)")
    return Check("disk", status, "; ".join(f[1] for f in found), action)


# ------------------------------------------------------------------------------- signer

def _not_the_signers(signer: dict[str, str], registered: dict[str, str],
                     network: str) -> tuple[list[str], list[str]]:
    """The registered wallets that derive other scripts than the signer's, and those that
    derive the same."""
    from satvault.onchain.descriptors import parse_wallet
    from satvault.onchain.errors import OnchainError

    wrong: list[str] = []
    same: list[str] = []
    for role in ("deposit", "hot"):
        if role not in registered:
            continue
        try:
            alike = role in signer and parse_wallet(registered[role], network).derives_like(
                parse_wallet(signer[role], network))
        except OnchainError:
            alike = False
        (same if alike else wrong).append(role)
    return wrong, same


def judge_signer(result: dict[str, str] | BaseException | None, *, socket: str,
                 production: bool, registered: dict[str, str] | None = None,
                 network: str = "", demo_unasked: bool = True) -> Check:
    """The signer answers, and (``registered``: the database's watch-only wallets by role)
    those wallets are its own: another seed's would collect deposits it cannot spend.
    Without a socket: an error with real money (``production``), a warning anywhere else
    the demo signer needs ``--demo-signer`` (``demo_unasked`` false: a test network)."""
    wrong, same = _not_the_signers(result, registered, network) \
        if isinstance(result, dict) and registered else ([], [])
    if wrong:
        return Check("signer", Status.ERROR, f"the {' and '.join(wrong)} wallet"
                     f"{'s' if len(wrong) > 1 else ''} in the database "
                     f"{'are' if len(wrong) > 1 else 'is'} not the signer's: the signer "
                     f"{f'at {socket}' if socket else 'in this process (its seed)'} derives "
                     "other addresses (deposits there cannot be spent; payouts get stuck)",
                     "start the signer from the seed this platform was set up with; a new "
                     "seed needs a new database")
    if not socket:
        if isinstance(result, BaseException):
            return Check("signer", Status.ERROR, "the in-process signer's seed cannot be "
                         f"opened: {_err(result)}", "check the seed file and its passphrase "
                         "(file), or run `satvault signer serve` and set signer_socket")
        if production:
            return Check("signer", Status.ERROR, "the signer runs inside this process (no "
                         "signer_socket): the web side holds the hot keys",
                         "run `satvault signer serve` as another user and set signer_socket")
        if not demo_unasked:
            return Check("signer", Status.WARN, "the demo signer runs inside this process "
                         f"(no signer_socket) on {network or 'a test network'}: the web side "
                         "holds the hot keys (worthless coins, but the set-up a deployment "
                         "keeps); the commands that sign need --demo-signer",
                         "run `satvault signer serve` as another user and set signer_socket, "
                         "as production will")
        return Check("signer", Status.OK, "in-process signer (development only)")
    if isinstance(result, BaseException):
        return Check("signer", Status.ERROR, f"the signer at {socket} does not answer: "
                     f"{_err(result)}", "start `satvault signer serve` (as its own user) and "
                     "check that this user may open the socket")
    mine = (f"; the {' and '.join(same)} wallet{'s are' if len(same) > 1 else ' is'} the "
            "signer's") if same else ""
    return Check("signer", Status.OK, f"the signer at {socket} answers "
                 f"({len(result or {})} descriptors){mine}")


@dataclass(frozen=True, slots=True)
class SeedFacts:
    path: str
    exists: bool
    mode: int = 0
    uid: int = -1
    error: str = ""


def seed_facts(path: Path) -> SeedFacts:
    try:
        st = path.stat()
    except FileNotFoundError:
        return SeedFacts(str(path), False)
    except OSError as exc:
        return SeedFacts(str(path), True, error=exc.strerror or str(exc))
    return SeedFacts(str(path), True, stat.S_IMODE(st.st_mode), st.st_uid)


def judge_passphrase(facts: SeedFacts) -> Check:
    """The demo signer's passphrase file, which opens the seed: 0600 like the seed (found
    from outside: a world-readable one passed while the seed's mode was checked)."""
    if not facts.exists:
        return Check("signer_passphrase", Status.OK, f"no passphrase file at {facts.path}")
    if facts.error:
        return Check("signer_passphrase", Status.OK, f"{facts.path} is not readable by this "
                     f"user ({facts.error})")
    if facts.mode & 0o077:
        return Check("signer_passphrase", Status.ERROR, f"{facts.path}: its mode is "
                     f"{facts.mode:04o}, others may read the passphrase that opens the seed",
                     f"`chmod 600 {facts.path}`")
    return Check("signer_passphrase", Status.OK, f"{facts.path}: mode {facts.mode:04o}")


def judge_seed(facts: SeedFacts, *, separate_signer: bool, uid: int | None = None) -> Check:
    """The encrypted seed file: 0600, and owned by the user that opens it (this one with the
    in-process signer; the signer's own user when a separate signer is configured)."""
    uid = os.geteuid() if uid is None else uid
    if not facts.exists:
        if separate_signer:
            return Check("seed_file", Status.OK, f"{facts.path} is not on this host: the "
                         "separate signer keeps it (run the doctor as the signer's user there "
                         "to check it)")
        return Check("seed_file", Status.ERROR, f"no seed file at {facts.path}",
                     "restore it from the backup, or create one with `satvault signer init`")
    if facts.error:
        if separate_signer:
            return Check("seed_file", Status.OK, f"{facts.path} is not readable by this user "
                         f"({facts.error}), as it should be with a separate signer")
        return Check("seed_file", Status.ERROR, f"cannot inspect {facts.path}: {facts.error}",
                     "fix the folder's permissions")
    problems = []
    if facts.mode & 0o077:
        problems.append(f"its mode is {facts.mode:04o}, others may read or change it")
    if facts.uid != uid and not separate_signer:
        problems.append(f"it is owned by uid {facts.uid}, not by the running user ({uid})")
    if problems:
        return Check("seed_file", Status.ERROR, f"{facts.path}: " + "; ".join(problems),
                     f"chown the file to the signer's user and `chmod 600 {facts.path}`")
    if separate_signer and facts.uid == uid:
        return Check("seed_file", Status.WARN, f"{facts.path} is owned by this user although "
                     "a separate signer is configured", "unless this is the signer's user, "
                     "give the file to the signer's user: the web side must not read the seed")
    return Check("seed_file", Status.OK, f"{facts.path}: mode {facts.mode:04o}, uid {facts.uid}")


# ------------------------------------------------------------------------ code integrity

def judge_integrity(result: IntegrityResult | BaseException | None, *, root: str,
                    manifest: str, configured: bool, production: bool) -> Check:
    make = ("make the manifest at build time (`satvault doctor manifest --key KEY`) and set "
            "code_manifest_public_key to the key's public half")
    if not configured:
        return Check("code_integrity", Status.ERROR if production else Status.WARN,
                     "not checked: no code_manifest_public_key is configured", make)
    if result is None or isinstance(result, BaseException):
        detail = _err(result) if result is not None else f"no manifest at {manifest}"
        return Check("code_integrity", Status.ERROR, detail, make)
    if not result.signature_ok:
        return Check("code_integrity", Status.ERROR, f"the manifest {manifest} is not signed "
                     "by the configured key: it cannot be trusted",
                     "reinstall satvault from a trusted build and its manifest")
    if result.ok:
        return Check("code_integrity", Status.OK, f"all {result.files} files of {root} match "
                     f"the signed manifest{f' of {result.version}' if result.version else ''}")

    def names(label: str, paths: list[str]) -> str:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10
                                         else "")
        return f"{label}: {shown}" if paths else ""

    what = "; ".join(filter(None, (names("changed", result.changed),
                                   names("missing", result.missing),
                                   names("extra", result.extra))))
    return Check("code_integrity", Status.ERROR, f"the installed code under {root} differs "
                 f"from the signed manifest: {what}",
                 "do not run it: find out who changed these files, then reinstall from a "
                 "trusted build")


@dataclass(frozen=True, slots=True)
class RelayFacts:
    """How far the event relay got: the last outbox event it published, and the events
    after it still waiting (how many, since when)."""

    position: int
    waiting: int
    oldest_waiting_at: datetime | None


def judge_event_stream(mode: str, *, url: str, stream: str,
                       last_seq: int | BaseException | None,
                       relay: RelayFacts | BaseException | None, now: datetime) -> Check:
    """``event_stream = nats``: whether NATS answers and how long the oldest event has waited
    for the relay (webhooks and live updates wait with it). Found from outside: with the
    relay stuck on a dead connection, doctor said nothing about it."""
    if mode != "nats":
        return Check("event_stream", Status.OK, "events go to webhooks and streams from the "
                     "outbox (event_stream = outbox): no NATS to reach")
    found: list[tuple[Status, str, str]] = []
    if isinstance(last_seq, BaseException):
        found.append((Status.ERROR, f"cannot reach NATS at {url}: {_err(last_seq)}",
                      "start nats-server with JetStream (-js) or fix nats_url: webhooks and "
                      "live updates wait meanwhile, and the relay catches up once it answers"))
    elif last_seq is None and isinstance(relay, RelayFacts) and relay.position > 0:
        # Found from outside: "no stream yet" was said of a stream deleted under the relay.
        found.append((Status.ERROR, f"NATS at {url} answers, but has no stream {stream} "
                      f"though the relay published up to event {relay.position}: it was "
                      "deleted, or NATS lost its storage",
                      "is satvault serve running? its relay sets the stream up again at its "
                      "next round and publishes the last 10 minutes' events again, and the "
                      "webhook fan-out subscribes again; older events the fan-out had not "
                      "handled are lost with the stream"))
    elif last_seq is None:
        found.append((Status.OK, f"NATS at {url} answers; it has no stream {stream} yet (the "
                      "relay creates it at its first round)", ""))
    else:
        found.append((Status.OK, f"NATS at {url} answers: stream {stream} is at sequence "
                      f"{last_seq}", ""))
    if isinstance(relay, BaseException):
        found.append((Status.WARN, f"cannot read the relay's cursor: {_err(relay)}", ""))
    elif relay is not None:
        if relay.waiting == 0 or relay.oldest_waiting_at is None:
            found.append((Status.OK, f"the relay is caught up (event {relay.position})", ""))
        else:
            age = max(0.0, (now - relay.oldest_waiting_at).total_seconds())
            status = Status.ERROR if age >= RELAY_LAG_ERROR_SECONDS else \
                Status.WARN if age >= RELAY_LAG_WARN_SECONDS else Status.OK
            found.append((status, f"{relay.waiting} event(s) wait for the relay after event "
                          f"{relay.position}, the oldest for {age:.0f} s",
                          "" if status == Status.OK else
                          "is satvault serve running (its event-relay worker, /healthz)? "
                          "webhooks and live updates wait for the relay"))
    status = worst([f[0] for f in found]) if found else Status.OK
    return Check("event_stream", status, "; ".join(f[1] for f in found),
                 "; ".join(f[2] for f in found if f[2]))
