"""Wiring for the money-moving parts: chain backend, signer, watcher, payout job.

``satvault serve`` builds one :class:`Runtime` from the settings; tests build one around a
simnet server. The signer is reached over its unix socket when ``signer_socket`` is set
(production: keys in another process); otherwise an in-process signer is opened from the
encrypted seed file (the embedded demo).
"""

from __future__ import annotations

import asyncio
import os
import secrets
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.backends.base import ChainBackend
from satvault.backends.lightning import LightningBackend
from satvault.backends.lnd import LndBackend
from satvault.backends.registry import make_chain_backend
from satvault.config import Settings
from satvault.invoices.service import apply_payment
from satvault.lightning.invoices import InvoiceListener, StoreInvoiceHook
from satvault.lightning.payments import LightningPayer
from satvault.logs import get_logger
from satvault.onchain.models import OnchainWallet
from satvault.onchain.service import register_wallet
from satvault.onchain.watcher import Watcher
from satvault.payouts.job import PayoutJob
from satvault.rates.service import RateService, build_rate_service
from satvault.signer.base import InProcessSigner, Signer
from satvault.signer.core import HotSigner
from satvault.signer.seed import create_seed_file, load_seed_file

__all__ = ["Runtime", "ensure_dev_signer", "open_signer", "register_signer_wallets"]

log = get_logger(__name__)


def _seed_path(settings: Settings) -> Path:
    return Path(settings.signer_seed_file) if settings.signer_seed_file \
        else settings.home / "signer.json"


def _passphrase(settings: Settings) -> str:
    env = os.environ.get("SATVAULT_SIGNER_PASSPHRASE")
    if env:
        return env
    file = os.environ.get("SATVAULT_SIGNER_PASSPHRASE_FILE") or str(
        settings.home / "signer.passphrase")
    try:
        return Path(file).read_text().strip()
    except OSError as exc:
        raise RuntimeError("no signer passphrase: set SATVAULT_SIGNER_PASSPHRASE or "
                           "SATVAULT_SIGNER_PASSPHRASE_FILE") from exc


def ensure_dev_signer(settings: Settings) -> bool:
    """For the embedded demo only: create an encrypted seed and a passphrase file under
    ``$SATVAULT_HOME`` if neither a socket nor a seed exists. Returns True if it created one."""
    if settings.signer_socket:
        return False
    seed = _seed_path(settings)
    if seed.exists():
        return False
    settings.home.mkdir(parents=True, exist_ok=True)
    pass_file = settings.home / "signer.passphrase"
    if not os.environ.get("SATVAULT_SIGNER_PASSPHRASE") and not pass_file.exists():
        fd = os.open(pass_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(24))
    create_seed_file(seed, _passphrase(settings), network=settings.network)
    log.warning("dev_signer_created", path=str(seed),
                note="demo only: production runs `satvault signer serve` as another user")
    return True


def open_signer(settings: Settings) -> Signer:
    if settings.signer_socket:
        from satvault.signer.client import UnixSocketSigner

        return UnixSocketSigner(settings.signer_socket)
    material = load_seed_file(_seed_path(settings), _passphrase(settings))
    return InProcessSigner(HotSigner.from_material(
        material, audit_log=settings.home / "signer-audit.jsonl"))


async def register_signer_wallets(session: AsyncSession, signer: Signer,
                                  settings: Settings) -> dict[str, OnchainWallet]:
    """Register the watch-only deposit and hot wallets from the signer's public descriptors
    (or from the configured descriptors, which must then belong to the signer)."""
    descs = await signer.descriptors()
    wanted = {"deposit": settings.deposit_descriptor or descs["deposit"],
              "hot": settings.hot_descriptor or descs["hot"]}
    return {role: await register_wallet(session, role=role, descriptor=d,
                                        network=settings.network, gap_limit=settings.gap_limit)
            for role, d in wanted.items()}


def make_lightning_backend(settings: Settings) -> LightningBackend | None:
    kind = settings.lightning_backend
    if kind in ("simnet", "lnd"):  # the simulator speaks LND's REST API
        macaroon = settings.lnd_macaroon_hex.get_secret_value() \
            if settings.lnd_macaroon_hex else None
        return LndBackend(settings.lnd_url, macaroon_hex=macaroon,
                          macaroon_path=settings.lnd_macaroon_path,
                          tls_cert=settings.lnd_tls_cert)
    if kind == "cln":
        from satvault.backends.cln import ClnBackend

        return ClnBackend(settings.cln_rpc_path)
    if kind in ("", "none"):
        return None
    raise ValueError(f"unknown lightning_backend {kind!r}: use simnet, lnd, cln or none")


@dataclass
class Runtime:
    settings: Settings
    backend: ChainBackend
    signer: Signer
    watcher: Watcher
    payouts: PayoutJob
    lightning: LightningBackend | None = None
    listener: InvoiceListener | None = None
    payer: LightningPayer | None = None
    payer_wake: asyncio.Event | None = None
    rates: RateService | None = None
    # Brings a store invoice's status up to date in the transaction that credits a payment.
    on_store_invoice: StoreInvoiceHook | None = None

    @classmethod
    def build(cls, settings: Settings, sessions: async_sessionmaker[AsyncSession], *,
              backend: ChainBackend | None = None, signer: Signer | None = None,
              lightning: LightningBackend | bool | None = True,
              start_height: int | None = None) -> Runtime:
        """``lightning``: a backend, ``True`` to build one from the settings, ``None`` for none."""
        backend = backend or make_chain_backend(settings)
        signer = signer or open_signer(settings)
        on_store_invoice = partial(apply_payment, settings=settings)
        watcher = Watcher(sessions, backend, zero_conf_max_sat=settings.zero_conf_max_sat,
                          initial_rescan=settings.watcher_initial_rescan,
                          start_height=start_height, invoice_fee_bp=settings.invoice_fee_bp,
                          on_store_invoice=on_store_invoice)
        ln = make_lightning_backend(settings) if lightning is True else lightning or None
        rt = cls(settings, backend, signer, watcher,
                 PayoutJob(sessions, backend, signer, settings), lightning=ln,
                 on_store_invoice=on_store_invoice)
        rt.rates = build_rate_service(settings.rate_sources, dict(settings.fixed_rates),
                                      ttl_seconds=settings.rate_ttl_seconds)
        if ln is not None:
            rt.listener = InvoiceListener(sessions, ln, node=settings.lightning_backend,
                                          invoice_fee_bp=settings.invoice_fee_bp,
                                          on_store_invoice=on_store_invoice)
            rt.payer = LightningPayer(sessions, ln, settings)
        return rt

    async def close(self) -> None:
        await self.backend.close()
        if self.lightning is not None:
            await self.lightning.close()
        if self.rates is not None:
            await self.rates.close()
