"""Plug-ins: extensions another installed package offers through Python entry points.

A package extends satvault by declaring entry points in one of the groups below (in its
``pyproject.toml``, ``[project.entry-points."satvault.rate_sources"]`` …); installing the
package is the whole registration: nothing is imported until a setting names the plug-in.

=====================  ==================================================================
group                  the entry point is
=====================  ==================================================================
``rate_sources``       ``factory(*, timeout, transport) -> RateSource``
``chain_backends``     ``factory(settings) -> ChainBackend``
``lightning_backends`` ``factory(settings) -> LightningBackend``
``risk_features``      a :class:`satvault.risk.rules.PluginFeature`-like object: ``kind``
                       (``number`` | ``string`` | ``bool`` | ``list``) and
                       ``__call__(event, features) -> value``, read by rules as
                       ``plugin.<name>``
``notifiers``          ``factory(settings) -> Notifier`` (``async notify(alert)``)
=====================  ==================================================================

A built-in name always wins over a plug-in of the same name, so installing a package cannot
silently replace, say, the ``bitcoind`` backend.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points
from typing import Any

__all__ = ["GROUPS", "PluginError", "load_plugin", "plugin_names", "reset_plugin_cache"]

GROUPS = ("rate_sources", "chain_backends", "lightning_backends", "risk_features", "notifiers")


class PluginError(ValueError):
    """A plug-in that is not installed, or that failed to load."""


def _check(group: str) -> str:
    if group not in GROUPS:
        raise PluginError(f"unknown plug-in group {group!r}: use {', '.join(GROUPS)}")
    return f"satvault.{group}"


@cache
def _entry_points(group: str) -> dict[str, EntryPoint]:
    found: dict[str, EntryPoint] = {}
    for ep in entry_points(group=_check(group)):
        found.setdefault(ep.name.strip().lower(), ep)
    return found


def plugin_names(group: str) -> tuple[str, ...]:
    """The installed plug-ins of ``group``, sorted."""
    return tuple(sorted(_entry_points(group)))


def load_plugin(group: str, name: str) -> Any:
    """The object ``name``'s entry point in ``group`` refers to."""
    ep = _entry_points(group).get(name.strip().lower())
    if ep is None:
        raise PluginError(f"no {group} plug-in named {name!r} is installed")
    try:
        return ep.load()
    except Exception as exc:  # an installed but broken package: say which and why
        dist = ep.dist.name if ep.dist is not None else "?"
        raise PluginError(f"the {group} plug-in {name!r} ({ep.value}, from the package "
                          f"{dist}) failed to load: {exc!r}") from exc


def reset_plugin_cache() -> None:
    """Forget what was found (after installing a package into a running process)."""
    _entry_points.cache_clear()
