"""Settings: ``SATVAULT_*`` environment variables over an optional TOML file over defaults.

The TOML file is ``$SATVAULT_CONFIG`` if set, else ``$SATVAULT_HOME/satvault.toml`` when it
exists. Secrets are ``SecretStr`` so they never show in a repr, a log line or an error page.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote

from limits import parse_many
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from satvault.db import async_database_url

__all__ = ["ALL_BITCOIN_MSAT", "DEFAULT_KYC_TIER_LIMITS_MSAT", "KYC_RAILS", "ConfigError",
           "Settings", "get_settings", "redact_url", "reset_settings_cache", "sweep_window"]


# The tier table's default (msat): tier 0 small (no identity checked), tier 1 medium (identity
# verified), tier 2 large (enhanced due diligence). Same shape on every rail.
_SAT = 1000
DEFAULT_KYC_TIER_LIMITS_MSAT: dict[int, dict[str, tuple[int, int, int]]] = {
    tier: {rail: limits for rail in ("onchain", "lightning", "internal")}
    for tier, limits in (
        (0, (100_000 * _SAT, 200_000 * _SAT, 1_000_000 * _SAT)),
        (1, (5_000_000 * _SAT, 10_000_000 * _SAT, 100_000_000 * _SAT)),
        (2, (100_000_000 * _SAT, 1_000_000_000 * _SAT, 10_000_000_000 * _SAT)))}
KYC_RAILS = ("onchain", "lightning", "internal")
# Every bitcoin there will ever be, in msat: the largest limit that means anything.
ALL_BITCOIN_MSAT = 21_000_000 * 100_000_000_000


def _default_home() -> Path:
    return Path(os.environ.get("SATVAULT_HOME", "var")).resolve()


class ConfigError(ValueError):
    """The configuration cannot be read at all (a missing or malformed file, an unknown
    setting, a value that is not JSON where JSON is due): said in one line, never with the
    values (they may hold a password)."""


def _toml_path() -> Path | None:
    explicit = os.environ.get("SATVAULT_CONFIG")
    if explicit:
        if not Path(explicit).is_file():
            raise ConfigError(f"SATVAULT_CONFIG points at {explicit}, which does not exist")
        return Path(explicit)
    candidate = _default_home() / "satvault.toml"
    return candidate if candidate.exists() else None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SATVAULT_", extra="ignore")

    home: Path = Field(default_factory=_default_home)
    database_url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    public_url: str = ""
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    log_format: Literal["json", "console"] = "json"
    environment: Literal["development", "production"] = "development"
    network: Literal["mainnet", "testnet", "signet", "regtest"] = "regtest"
    chain_backend: str = "simnet"
    lightning_backend: str = "simnet"
    # Seals the TOTP secrets, JWT signing keys and webhook secrets in the database (AES-256-GCM
    # under a key derived from it, satvault.kernel.sealing); unset: they are stored in clear
    # (development). Changing it leaves what it sealed unreadable: users re-enroll TOTP,
    # `satvault auth rotate-keys` makes a new signing key, and each webhook's secret is rotated
    # (POST /api/v1/webhooks/{id}/rotate-secret).
    secret_key: SecretStr | None = None
    # The dashboard's session cookie: Secure (and named __Host-sv_session) when true; unset:
    # true in production, false in development (plain http://127.0.0.1).
    session_cookie_secure: bool | None = None
    # Proof of liabilities: the key from which every leaf's nonce is derived (HMAC-SHA256).
    # Empty: a random one is created in $SATVAULT_HOME/liabilities.secret on first use.
    liabilities_secret: SecretStr | None = None
    # How often the background worker expires overdue ledger holds, in seconds.
    hold_expiry_interval: float = Field(default=5.0, gt=0)
    # How often the audit worker seals new audit rows and ledger transfers into the hash chain.
    audit_seal_interval: float = Field(default=5.0, gt=0)
    # On: every sweep commits the audit chain's latest sealed head in a zero-value OP_RETURN
    # (when no anchor was requested with `satvault audit anchor --onchain`, and the head moved
    # since the last anchor). Off: only requested anchors go on chain, in the next sweep.
    audit_anchor_in_sweeps: bool = False
    db_pool_size: int = Field(default=20, ge=1, le=1000)
    # The API's internal payments of one payer that arrive while another of that payer runs
    # wait in the process and are committed together, each in a savepoint of its own
    # (satvault.kernel.grouped; docs/benchmarks.md). Off: one transaction per payment.
    payment_group_commit: bool = True
    # `satvault serve`'s event loop and HTTP parser (uvicorn's names). "auto" takes uvloop and
    # httptools (installed with satvault); "asyncio" / "h11", the pure-Python ones, only to
    # compare or to rule them out.
    server_loop: Literal["auto", "uvloop", "asyncio"] = "auto"
    server_http: Literal["auto", "httptools", "h11"] = "auto"
    # The most a request's head (request line and headers) may take; a longer one is refused
    # (431) before it is parsed further, whichever parser (satvault.web.http_head).
    server_max_head_bytes: int = Field(default=32 * 1024, ge=4096, le=1024 * 1024)
    # After SIGTERM, how long `satvault serve` lets requests in flight finish before it cuts
    # what is left (open event streams, which never end by themselves: their clients
    # reconnect with Last-Event-ID) and stops.
    shutdown_grace_seconds: int = Field(default=10, ge=0, le=600)
    # The garbage collector of a `satvault serve` process (docs/benchmarks.md, "the garbage
    # collector"): once started, everything alive is frozen out of the cyclic collector's
    # sweeps (``gc.freeze``), and the youngest generation is collected every
    # ``server_gc_gen0`` container allocations (Python's default: 700; 20,000 measured 4-5%
    # less CPU per store invoice). false / 700: Python's own behaviour.
    server_gc_freeze: bool = True
    server_gc_gen0: int = Field(default=20_000, ge=100, le=1_000_000)
    # How long a verified API key is remembered in memory, in seconds (0: check the database
    # on every request). A key revoked in another process keeps working at most this long.
    api_key_cache_seconds: float = Field(default=10.0, ge=0, le=300)
    # An Idempotency-Key's claim is refreshed by the request that holds it every
    # idempotency_heartbeat_seconds; another request may take it over only once it has not
    # been refreshed for idempotency_stale_seconds (its owner is gone, not merely slow).
    idempotency_stale_seconds: float = Field(default=60.0, gt=0)
    idempotency_heartbeat_seconds: float = Field(default=15.0, gt=0)

    # --- rate limits (web/ratelimit.py, docs/security.md) ----------------------------------
    # Each budget is a `limits` string of one or more windows, all of which must hold. Off
    # only for a benchmark measuring raw throughput, never in production.
    rate_limit_enabled: bool = True
    # "memory" (per process: each of `serve --workers N`'s processes has its own budgets) or
    # a redis:// (rediss://, unix://) URL shared by every process.
    rate_limit_storage: str = "memory"
    rate_limit_strategy: Literal["moving-window", "fixed-window",
                                 "sliding-window-counter"] = "moving-window"
    # Prefix of every key in the storage: two installations may share one Redis.
    rate_limit_key_prefix: str = Field(default="satvault", pattern=r"^[A-Za-z0-9_.:-]{1,64}$")
    # Comma-separated addresses or CIDR blocks of reverse proxies whose X-Forwarded-For is
    # believed; empty: the client address is the socket peer.
    rate_limit_trusted_proxies: str = ""
    # Failed authentications per client address and per API key id named in the token.
    rate_limit_auth_failures_per_address: str = "10/minute;30/hour;100/day"
    rate_limit_auth_failures_per_key: str = "10/minute;30/hour;100/day"
    # Unauthenticated endpoints per client address: reads (checkout pages, QR codes, LNURL
    # first calls, event streams, health), and those that create something (Lightning
    # Address callbacks, LNURL-auth challenges and logins, LNURL-withdraw redemptions).
    rate_limit_public: str = "300/minute"
    rate_limit_public_create: str = "30/minute;300/hour"
    # Object creation through the API, per API key.
    rate_limit_create: str = "30/second;1000/minute"
    # Event streams open at once (web/streamslots.py): per client address (counted as the
    # rate limits count it, and shared by every API process when they live in Redis), and in
    # one process. One more is a 429 until a stream ends.
    streams_per_address: int = Field(default=20, ge=1, le=10_000)
    streams_max: int = Field(default=1000, ge=1, le=20_000)
    # The largest request body accepted, in bytes; a larger one is a 413 before it is read
    # (by its Content-Length, or counted while a chunked body streams in).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)

    # --- on-chain -------------------------------------------------------------------------
    # Bitcoin Core JSON-RPC: http://user:password@host:port/ (or a cookie file). With
    # chain_backend = "simnet", `satvault serve` starts the built-in simulator on this URL.
    bitcoind_url: str = "http://simnet:simnet@127.0.0.1:18443/"
    bitcoind_cookie_file: str | None = None
    esplora_url: str = ""
    # The chain workers ask the node which network it is on at first contact, after it was
    # unreachable, and again once this many seconds (on the process clock) passed since its
    # last answer: a node swapped for one of another network on the same URL stops them
    # within this long. 0: ask before every tick.
    chain_network_recheck_seconds: float = Field(default=300.0, ge=0)
    # The watch-only deposit and hot wallets (xpub or descriptor); `satvault init` fills them
    # from the signer when empty.
    deposit_descriptor: str = ""
    hot_descriptor: str = ""
    gap_limit: int = Field(default=20, ge=1, le=10_000)
    # Confirmations a wallet top-up waits for, and the largest amount credited at 0-conf
    # (every unconfirmed transaction is replaceable since Bitcoin Core 28's full-RBF).
    deposit_confirmations: int = Field(default=1, ge=0, le=1000)
    zero_conf_max_sat: int = Field(default=100_000, ge=0)
    deposit_expiry_minutes: int = Field(default=24 * 60, ge=1)
    # Addresses of requests that expired unpaid may be handed out again after this many days
    # (0 = never recycle).
    recycle_after_days: int = Field(default=0, ge=0)
    watcher_interval: float = Field(default=2.0, gt=0)
    watcher_initial_rescan: int = Field(default=6, ge=0)

    # --- custody tiers (docs/custody.md) --------------------------------------------------
    # The cold wallet: a watch-only multisig descriptor, wsh(sortedmulti(m,[fp/48h/c'/0h/2h]
    # xpub/<0;1>/*,…)), whose keys stay with offline cosigners. Empty: no cold tier, and
    # sweeps move every deposit coin to the semi-cold wallet (a warning says so at start).
    # The signer reads it too: deposit sweeps may pay into it (and into the hot wallet).
    cold_descriptor: str = ""
    # Sweeps of confirmed deposit coins: this share goes to the semi-cold wallet (which pays
    # withdrawals), the rest to cold; the semi-cold wallet is filled to at least its floor
    # first and never above its ceiling (above it, everything goes cold).
    sweep_enabled: bool = True
    sweep_semicold_percent: int = Field(default=40, ge=0, le=100)
    semicold_floor_sat: int = Field(default=10_000_000, ge=0)
    semicold_ceiling_sat: int = Field(default=100_000_000, ge=0)
    # A sweep waits until this much has gathered, or until its oldest coin is this many
    # blocks old; at most this many inputs per sweep.
    sweep_min_sat: int = Field(default=100_000, ge=0)
    sweep_max_wait_blocks: int = Field(default=144, ge=1)
    sweep_max_inputs: int = Field(default=200, ge=1, le=1000)
    # Only deposit coins this deep are swept (a reorg rarely reaches them).
    sweep_min_confirmations: int = Field(default=6, ge=1)
    # Sweeps are not urgent: none while the fee market is above this, and (optional) only
    # inside this UTC hour window, e.g. "1-5" (from 01:00 to 04:59).
    sweep_max_feerate_sat_vb: int = Field(default=20, ge=1)
    sweep_window_utc: str = ""
    # Under its floor, the semi-cold wallet asks the cold cosigners for a refill up to this
    # (between the floor and the ceiling; unset, 50,000,000 moved into that range).
    semicold_refill_to_sat: int = Field(default=50_000_000, ge=0)
    custody_interval: float = Field(default=30.0, gt=0)

    # --- withdrawals and payouts ----------------------------------------------------------
    # Who pays the network fee of a withdrawal: "user" (a reserve is held with the amount and
    # the actual share posted) or "platform" (booked against equity).
    withdrawal_fee_policy: Literal["user", "platform"] = "user"
    withdrawal_fee_reserve_sat: int = Field(default=5_000, ge=0)
    # The most the platform pays of one payout's fee beyond its withdrawals' reserves; a
    # batch that would cost more waits for lower fees (a fee spike must not let anyone make
    # the platform pay 65,000 sat of fee per 1,000 sat withdrawal).
    payout_max_fee_excess_sat: int = Field(default=20_000, ge=0)
    withdrawal_min_sat: int = Field(default=1_000, ge=1)
    # A withdrawal is also refused above the signer's per-transaction cap less the fee
    # reserve (it could never be signed).
    withdrawal_max_sat: int = Field(default=100_000_000, ge=1)
    # Per wallet, over any 24 hours, on-chain and Lightning together (internal payments too).
    # At most 21 million BTC (ALL_BITCOIN_MSAT: that is "no limit"); a limit the database
    # compares must fit its integers.
    withdrawal_daily_limit_msat: int = Field(default=1_000_000_000_000, ge=0,
                                             le=ALL_BITCOIN_MSAT)
    # Withdrawal policy (maker-checker): how long a withdrawal waits for its approvers before
    # it is cancelled and its hold released; how long a new allow-list entry waits before it
    # counts (BitGo's 48 h); how often the expiry runs.
    withdrawal_approval_ttl_seconds: int = Field(default=24 * 3600, ge=60)
    withdrawal_allowlist_cooldown_seconds: int = Field(default=48 * 3600, ge=0)
    withdrawal_approval_expiry_interval: float = Field(default=30.0, gt=0)

    # --- KYC tiers (satvault.kyc) -------------------------------------------------------------
    # Per tier (0, 1, 2 …: an owner's tier is its latest approved KYC record's, 0 without one),
    # per rail ("onchain", "lightning", "internal"): [per transaction, any rolling 24 hours,
    # any rolling 30 days] in msat. A tier above the table's highest gets the highest's.
    # As JSON in SATVAULT_KYC_TIER_LIMITS_MSAT.
    kyc_tier_limits_msat: dict[int, dict[str, list[int]]] = Field(
        default_factory=lambda: {t: {r: list(v) for r, v in rails.items()}
                                 for t, rails in DEFAULT_KYC_TIER_LIMITS_MSAT.items()})
    # Sanctions/PEP name screening: a listed name scoring at least this (0-100) is a hit.
    kyc_screening_threshold: int = Field(default=88, ge=50, le=100)

    # --- merchant invoices ------------------------------------------------------------------
    # Platform fee on money received for store invoices, in basis points of each payment.
    invoice_fee_bp: int = Field(default=100, ge=0, le=10_000)
    invoice_monitoring_minutes: int = Field(default=24 * 60, ge=0)
    invoice_accept_late: bool = True
    # Rates: comma-separated sources (kraken, coinbase, bitstamp, coingecko, fixed), all asked
    # at once and their median used; fixed prices of 1 BTC for offline use and the demo
    # (next to live sources, fixed answers only when none of them does).
    rate_sources: str = "fixed"
    fixed_rates: dict[str, str] = Field(default_factory=lambda: {
        "USD": "60000.00", "EUR": "55000.00", "JPY": "9000000", "THB": "2100000.00"})
    rate_ttl_seconds: int = Field(default=60, ge=0)
    # No invoice (503) when fewer live sources answered, when one answer lies more than
    # max_spread_bp from their median, when the rate moved more than max_move_bp from the
    # last one accepted for the currency within rate_move_window_minutes, or when the rates
    # accepted within rate_drift_window_minutes would span more than max_drift_bp with it
    # (a window of 0: no such bound). Accepted rates are kept in the database, shared by
    # every process; `satvault rates accept` takes a genuine move past a bound.
    rate_min_sources: int = Field(default=1, ge=1)
    rate_max_spread_bp: int = Field(default=300, ge=0, le=10_000)
    rate_max_move_bp: int = Field(default=2000, ge=0, le=10_000)
    rate_move_window_minutes: int = Field(default=60, ge=0)
    rate_max_drift_bp: int = Field(default=3000, ge=0, le=100_000)
    rate_drift_window_minutes: int = Field(default=24 * 60, ge=0)
    # A currency's first rate (nothing accepted before to bound it) needs this many live
    # sources agreeing, or `satvault rates accept` (the fixed source alone is taken as given).
    rate_first_min_sources: int = Field(default=2, ge=1)
    # Reports: a customer-day whose money in, or out, across every rail exceeds this amount
    # of report_currency is listed in the large-transaction (CTR-style) report.
    report_currency: str = "USD"
    ctr_threshold: Decimal = Field(default=Decimal("10000"), gt=0)
    payout_interval: float = Field(default=10.0, gt=0)
    payout_max_batch: int = Field(default=100, ge=1)
    payout_confirmations: int = Field(default=1, ge=0)
    # A move booked as confirmed is watched until this deep: a reorg that takes it out of the
    # chain has it broadcast again (or, if an input was spent elsewhere, a person told).
    payout_final_confirmations: int = Field(default=6, ge=1)
    fee_target_blocks: int = Field(default=6, ge=1)
    min_feerate_sat_vb: int = Field(default=1, ge=1)
    max_feerate_sat_vb: int = Field(default=500, ge=1)
    # Replace (RBF) a payout still unconfirmed this many blocks after broadcast, raising the
    # feerate by payout_bump_percent (0 = only by operator command).
    payout_bump_after_blocks: int = Field(default=0, ge=0)
    payout_bump_percent: int = Field(default=50, ge=0)
    # The signer: a unix socket of a separate `satvault signer serve` process, or (empty) an
    # in-process signer for the demo, opened from the encrypted seed file below.
    signer_socket: str = ""
    signer_seed_file: str = ""
    # The signer's own caps on value leaving the platform (payments + fee, in sat): in one
    # transaction, and over any rolling 24 hours (rebuilt from its audit log on restart).
    # `satvault signer serve` reads these too; there is no "no limit". Keep signer_max_tx_sat
    # above the largest batch the payout job makes, or such a batch waits in `signing`.
    signer_max_tx_sat: int = Field(default=10_000_000, ge=1)
    signer_max_daily_sat: int = Field(default=50_000_000, ge=1)

    # --- Lightning -----------------------------------------------------------------------
    # lightning_backend = simnet | lnd | cln. simnet starts the built-in Lightning simulator
    # (LND's REST API) on lnd_url.
    lnd_url: str = "http://127.0.0.1:18080"
    lnd_macaroon_path: str | None = None
    lnd_macaroon_hex: SecretStr | None = None
    lnd_tls_cert: str | None = None
    # The HTTP client under the LND adapter: aiohttp's pool and parser (half the client CPU
    # per call) or httpx's own transport; the same API and error rules either way.
    lnd_http_client: Literal["aiohttp", "httpx"] = "aiohttp"
    cln_rpc_path: str = ""
    ln_invoice_expiry_seconds: int = Field(default=3600, ge=1)
    # Fee reserve held with every outgoing payment: max(ppm of the amount, the minimum).
    ln_fee_reserve_ppm: int = Field(default=5_000, ge=0, le=1_000_000)
    ln_fee_reserve_min_msat: int = Field(default=10_000, ge=0)
    ln_max_payment_msat: int = Field(default=10_000_000_000, ge=1)
    ln_pay_timeout_seconds: int = Field(default=30, ge=1)
    # An outgoing BOLT11 with less of its lifetime left than this is refused before anything
    # is held: the payer needs time to send it (a wake-up, retries, the pay timeout); an
    # invoice that expires on the way fails and the money goes back, but a voucher redeemed
    # with it was spent. 0: only an expired invoice is refused. Our own invoices, settled
    # inside the ledger at once, need only not be expired.
    ln_min_invoice_remaining_seconds: int = Field(default=60, ge=0)
    # Withdraw vouchers are bearer links holding their amount until redeemed: one created
    # without an expiry gets the default lifetime, and none may be given a longer one than the
    # maximum (both in days; a default of 0 means the maximum, a maximum of 0 none: with both
    # 0 a voucher without an expiry never expires).
    voucher_default_lifetime_days: int = Field(default=30, ge=0, le=3660)
    voucher_max_lifetime_days: int = Field(default=366, ge=0, le=3660)
    # Paying one of our own invoices takes it off the node before the risk rules (and the
    # withdrawal policy's window rules, and the limits under the payer's lock) decide: a
    # payment they refuse has cost the payee that BOLT11. A wallet with this many such
    # refusals in the last 24 hours is refused before it takes another invoice off the node.
    internal_refusals_per_day: int = Field(default=3, ge=1)
    # And a person's payments taking our invoices off the node at once: the next one is
    # refused (429) before the node is asked, so a burst that would be refused afterwards
    # cannot cancel more payees' invoices than this (satvault.lightning.takes).
    internal_payments_in_flight: int = Field(default=16, ge=1, le=1000)
    ln_max_attempts: int = Field(default=3, ge=1)
    ln_retry_base_seconds: float = Field(default=2.0, ge=0)
    ln_payer_interval: float = Field(default=1.0, gt=0)
    # Payments in flight at once, and at most this many of them to one destination node, so
    # that one slow receiver cannot delay everybody else's payments.
    ln_payer_concurrency: int = Field(default=16, ge=1, le=1000)
    ln_payer_per_destination: int = Field(default=4, ge=1, le=1000)

    # --- metrics and alerts (docs/operations.md) --------------------------------------------
    # GET /metrics (Prometheus text format). A token: scrapers must send it as a bearer token;
    # empty: open to whoever reaches the port (keep it off the public internet then).
    metrics_enabled: bool = True
    metrics_token: SecretStr | None = None
    # The alerts worker: how often it checks the critical conditions, and where it tells
    # someone when one starts or ends. Webhook URLs are comma-separated; each POST is signed
    # like a merchant webhook (Satvault-Signature) with alert_webhook_secret.
    alert_interval: float = Field(default=30.0, gt=0)
    alert_webhook_urls: str = ""
    alert_webhook_secret: SecretStr | None = None
    # E-mail through an SMTP relay: host empty = no e-mail. Recipients comma-separated.
    alert_smtp_host: str = ""
    alert_smtp_port: int = Field(default=25, ge=1, le=65535)
    alert_smtp_starttls: bool = False
    alert_smtp_username: str = ""
    alert_smtp_password: SecretStr | None = None
    alert_email_from: str = "satvault@localhost"
    alert_email_to: str = ""
    # Installed `notifiers` plug-ins to tell as well, by name, comma-separated (docs/plugins.md).
    alert_notifiers: str = ""
    # The chain watcher counts as stalled this many blocks behind the node's tip.
    alert_watcher_lag_blocks: int = Field(default=3, ge=1)
    # A signer refusal keeps its alert open this long after the last one.
    alert_signer_refusal_seconds: int = Field(default=3600, ge=1)

    # --- sign-in and mail (satvault.auth, docs/security.md) --------------------------------
    # The relay that sends sign-up verification and password-reset mail. Host empty: in
    # development the mail is written to the log (with a warning); in production sending
    # fails (503) rather than pretend.
    smtp_host: str = ""
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_starttls: bool = False
    smtp_username: str = ""
    smtp_password: SecretStr | None = None
    mail_from: str = "satvault@localhost"
    # JWT access tokens (POST /api/v1/auth/token): their life, and the life of the refresh
    # tokens that renew them (each used once, then replaced).
    auth_access_token_seconds: int = Field(default=600, ge=60, le=3600)
    auth_refresh_token_days: int = Field(default=30, ge=1, le=365)
    # How long the money scopes (withdrawals:write) of a token family hold after the step-up
    # that won them; past it, its tokens and refreshes carry the other scopes only.
    auth_money_scope_minutes: int = Field(default=15, ge=1, le=1440)
    # Progressive lockout of an account: from the threshold-th failed sign-in in a row, each
    # failure locks it for base * 2^(failures - threshold) seconds, at most max.
    auth_lockout_threshold: int = Field(default=5, ge=1, le=100)
    auth_lockout_base_seconds: int = Field(default=60, ge=1)
    auth_lockout_max_seconds: int = Field(default=3600, ge=1)

    # --- satvault doctor (docs/operations.md) ----------------------------------------------
    # The code-integrity check: the signed manifest of the installed package's files (empty:
    # _manifest.json inside the package) and the Ed25519 public key (64 hex digits) whose
    # signature it must carry. Without a key the check only warns (in production: an error).
    code_manifest_file: str = ""
    code_manifest_public_key: str = Field(default="", pattern=r"^([0-9a-fA-F]{64})?$")
    # Each of the doctor's network probes gives up after this long.
    doctor_timeout_seconds: float = Field(default=5.0, gt=0, le=120)
    # Free space under $SATVAULT_HOME (and the SQLite file's folder): below the first a
    # warning, below the second an error.
    doctor_disk_warn_bytes: int = Field(default=5 * 1024**3, ge=0)
    doctor_disk_error_bytes: int = Field(default=1024**3, ge=0)

    # --- the event stream (docs/events.md) ------------------------------------------------
    # "outbox": events stay in the database's outbox (webhooks and live updates read it).
    # "nats": the event-relay worker also publishes every outbox event, in outbox order, to
    # a NATS JetStream stream, one subject per aggregate: <prefix>.<subject_type>.<id>.
    event_stream: Literal["outbox", "nats"] = "outbox"
    nats_url: str = "nats://127.0.0.1:4222"
    nats_stream: str = Field(default="SATVAULT_EVENTS", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    nats_subject_prefix: str = Field(default="satvault.events",
                                     pattern=r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$",
                                     max_length=100)
    # JetStream drops a message whose Nats-Msg-Id it saw within this window: a relay that
    # crashed between a publish and recording it republishes within it (keep it well above
    # the lease). How long the stream keeps events (0: forever) bounds replay.
    nats_duplicate_window_seconds: int = Field(default=900, ge=10)
    nats_max_age_seconds: int = Field(default=30 * 86400, ge=0)
    event_relay_interval: float = Field(default=1.0, gt=0)
    event_relay_batch: int = Field(default=500, ge=1, le=10_000)
    # One relay publishes at a time: the process holding the singleton workers' lease
    # (worker_lease_seconds below), its cursor's writes fenced by the lease's epoch.
    # Several instances (docs/operations.md): on PostgreSQL the singleton workers run in the
    # one process holding the ``worker_leases`` row; another takes over at most this long
    # after the holder stops renewing. ``instance_id``: this process's name in the row
    # (empty: host name, process id and a random suffix).
    worker_lease_seconds: float = Field(default=15.0, ge=1, le=600)
    instance_id: str = Field(default="", max_length=80)

    @field_validator("rate_limit_auth_failures_per_address", "rate_limit_auth_failures_per_key",
                     "rate_limit_public", "rate_limit_public_create", "rate_limit_create")
    @classmethod
    def _rate_limit(cls, value: str) -> str:
        try:
            ok = bool(parse_many(value))
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(f"not a rate limit: {value!r} (write e.g. '10/minute;30/hour')")
        return value

    @field_validator("rate_limit_storage")
    @classmethod
    def _rate_limit_storage(cls, value: str) -> str:
        if value != "memory" and not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("rate_limit_storage is 'memory' or a redis://, rediss:// or "
                             "unix:// URL")
        return value

    @field_validator("rate_limit_trusted_proxies")
    @classmethod
    def _trusted_proxies(cls, value: str) -> str:
        for part in filter(None, (p.strip() for p in value.split(","))):
            ipaddress.ip_network(part, strict=False)  # a ValueError names the bad one
        return value

    @field_validator("kyc_tier_limits_msat")
    @classmethod
    def _kyc_tiers(cls, value: dict[int, dict[str, list[int]]]) -> dict[int, dict[str, list[int]]]:
        if sorted(value) != list(range(len(value))) or not value:
            raise ValueError("kyc_tier_limits_msat: tiers must be 0, 1, 2 … without gaps")
        for tier, rails in value.items():
            if set(rails) != set(KYC_RAILS):
                raise ValueError(f"kyc_tier_limits_msat: tier {tier} needs exactly the rails "
                                 f"{', '.join(KYC_RAILS)}")
            for rail, limits in rails.items():
                if len(limits) != 3 or any(x < 0 for x in limits) \
                        or not limits[0] <= limits[1] <= limits[2]:
                    raise ValueError(f"kyc_tier_limits_msat: tier {tier} {rail} needs [per "
                                     "transaction, 24 h, 30 d], non-negative and ascending")
                if limits[2] > ALL_BITCOIN_MSAT:
                    # Found from outside: a limit beyond SQLite's integers made every
                    # internal payment of every tier fail (each tier's limits are bound).
                    raise ValueError(f"kyc_tier_limits_msat: tier {tier} {rail}: a limit is "
                                     f"at most 21 million BTC ({ALL_BITCOIN_MSAT} msat, "
                                     "which is no limit)")
        return value

    @field_validator("sweep_window_utc")
    @classmethod
    def _sweep_window(cls, value: str) -> str:
        if value.strip():
            sweep_window(value)  # a ValueError says what is wrong
        return value

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        # A least above a most leaves nothing between (found from outside: a minimum
        # withdrawal above the maximum refused every one as "dust", and a minimum feerate
        # above the maximum was clamped without a word).
        for low, high in (("semicold_floor_sat", "semicold_ceiling_sat"),
                          ("withdrawal_min_sat", "withdrawal_max_sat"),
                          ("min_feerate_sat_vb", "max_feerate_sat_vb")):
            if getattr(self, low) > getattr(self, high):
                raise ValueError(f"{low} ({getattr(self, low)}) is above {high} "
                                 f"({getattr(self, high)})")
        # A refill tops semi-cold up to its target, which lies between the floor and the
        # ceiling (found from outside: a target below the floor made every refill pass raise,
        # and with it the custody worker's reconciliation; one above the ceiling raised refills
        # past it). Left unset, the default target moves into the range the two leave.
        lo, hi = self.semicold_floor_sat, self.semicold_ceiling_sat
        if "semicold_refill_to_sat" not in self.model_fields_set:
            self.semicold_refill_to_sat = min(max(self.semicold_refill_to_sat, lo), hi)
        elif not lo <= self.semicold_refill_to_sat <= hi:
            raise ValueError(f"semicold_refill_to_sat ({self.semicold_refill_to_sat}) is not "
                             f"between semicold_floor_sat ({lo}) and semicold_ceiling_sat "
                             f"({hi})")
        names = {n.strip().lower() for n in self.rate_sources.split(",") if n.strip()}
        live = len(names - {"fixed"}) or len(names)  # fixed next to live sources: no vote
        if self.rate_min_sources > live:
            raise ValueError(f"rate_min_sources is {self.rate_min_sources}, but rate_sources "
                             f"({self.rate_sources!r}) has {live} live source(s)")
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.home / 'satvault.db'}"
        self.database_url = async_database_url(self.database_url)
        if not self.public_url:
            self.public_url = f"http://{self.host}:{self.port}"
        return self

    def __repr_args__(self) -> Any:
        for key, value in super().__repr_args__():
            if key in _URL_SETTINGS:  # alert_webhook_urls holds several, comma-separated
                value = ",".join(redact_url(url) for url in value.split(","))
            yield key, value

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def real_money(self) -> bool:
        """Production, or the main Bitcoin network whatever ``environment`` says (a mainnet
        deployment left at the default ``development``): where the in-process demo signer is
        refused unless asked for, and reported as an error by the doctor."""
        return self.environment == "production" or self.network == "mainnet"

    @property
    def demo_signer_unasked(self) -> bool:
        """Where the in-process demo signer (no ``signer_socket``) runs without
        ``--demo-signer``: development on regtest only (``make run``, the tests). Production
        and mainnet are real money; testnet and signet are where a deployment rehearses, with
        the habits it will keep. The doctor reports it elsewhere (an error with real money,
        a warning on a test network)."""
        return not self.real_money and self.network == "regtest"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = _toml_path()
        if toml is not None:
            try:
                source = TomlConfigSettingsSource(settings_cls, toml_file=toml)
            except tomllib.TOMLDecodeError as exc:  # its message names the line, not a value
                raise ConfigError(f"{toml} is not valid TOML: {exc}") from None
            unknown = set(source.toml_data) - set(settings_cls.model_fields)
            if unknown:
                raise ConfigError(f"unknown setting(s) {sorted(unknown)} in {toml}")
            sources.append(source)
        return tuple(sources)


def sweep_window(text: str) -> tuple[int, int] | None:
    """``"1-5"`` → (1, 5): sweeps may start from 01:00 to 04:59 UTC; ``"22-4"`` wraps past
    midnight; empty → None (any time)."""
    if not text.strip():
        return None
    start, sep, end = text.strip().partition("-")
    try:
        a, b = int(start), int(end)
    except ValueError:
        a = b = -1
    if not sep or not (0 <= a <= 23 and 0 <= b <= 24) or a == b:
        raise ValueError(f"sweep_window_utc {text!r} is not 'START-END' in whole UTC hours, "
                         "e.g. '1-5'")
    return a, b


# Query parameters that carry a secret in the URLs we are given (libpq, asyncpg and redis
# take ``?password=``; hosted services a token or key).
_SECRET_PARAMS = frozenset({"password", "passwd", "pass", "pwd", "secret", "token",
                            "access_token", "auth", "key", "apikey", "api_key", "api-key"})
# The settings that hold a URL (alert_webhook_urls: several, comma-separated).
_URL_SETTINGS = frozenset({"database_url", "public_url", "bitcoind_url", "esplora_url",
                           "lnd_url", "nats_url", "rate_limit_storage", "alert_webhook_urls"})


def redact_url(url: str) -> str:
    """A URL fit for display (a database's, a node's, a webhook's): the password in its user
    information, and the value of each query parameter that carries a secret (``password``,
    ``token``, ``api_key``…), replaced by ``***``; the rest, the user name included, as
    given. The user information runs to the last ``@`` before the query, so a password
    holding ``/`` or ``@`` is masked whole."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    cut = min((i for i in (rest.find("?"), rest.find("#")) if i >= 0), default=len(rest))
    before, tail = rest[:cut], rest[cut:]
    creds, at, host = before.rpartition("@")
    if at:
        user, colon, _password = creds.partition(":")
        before = f"{user}{':***' if colon else ''}@{host}"
    if tail.startswith("?"):
        query, hash_, fragment = tail[1:].partition("#")
        params = []
        for param in query.split("&"):
            name, eq, _value = param.partition("=")
            secret = eq and unquote(name).strip().lower() in _SECRET_PARAMS
            params.append(f"{name}=***" if secret else param)
        tail = f"?{'&'.join(params)}{hash_}{fragment}"
    return f"{scheme}://{before}{tail}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()


def reset_settings_cache() -> None:
    get_settings.cache_clear()
