"""Backends chosen by a settings string: ``chain_backend`` = simnet | bitcoind | esplora, or
the name of an installed ``chain_backends`` plug-in (:mod:`satvault.kernel.plugins`)."""

from __future__ import annotations

from satvault.backends.base import ChainBackend
from satvault.backends.bitcoind import BitcoindBackend
from satvault.backends.esplora import EsploraBackend
from satvault.config import Settings
from satvault.kernel.plugins import PluginError, load_plugin, plugin_names

__all__ = ["make_chain_backend"]


def make_chain_backend(settings: Settings) -> ChainBackend:
    kind = settings.chain_backend
    if kind in ("bitcoind", "simnet"):  # simnet speaks bitcoind's JSON-RPC over HTTP
        return BitcoindBackend(settings.bitcoind_url, cookie_file=settings.bitcoind_cookie_file)
    if kind == "esplora":
        if not settings.esplora_url:
            raise ValueError("chain_backend=esplora needs SATVAULT_ESPLORA_URL")
        return EsploraBackend(settings.esplora_url)
    if kind in plugin_names("chain_backends"):
        backend = load_plugin("chain_backends", kind)(settings)
        if not isinstance(backend, ChainBackend):
            raise PluginError(f"the chain backend plug-in {kind!r} made "
                              f"{type(backend).__name__}, which is not a ChainBackend")
        return backend
    known = ", ".join(("simnet", "bitcoind", "esplora", *plugin_names("chain_backends")))
    raise ValueError(f"unknown chain_backend {kind!r}: use {known}")
