"""Risk features from plug-ins: ``plugin.<name>`` fields computed for each screening.

A ``risk_features`` plug-in (:mod:`satvault.kernel.plugins`) is an object with a ``kind``
(``number``, ``string``, ``bool`` or ``list``) and ``__call__(event, features)`` returning a
value of that kind from the event and the built-in features (it must not do I/O: it runs
inside the payment's transaction). Only the plug-ins the live rule set reads are called; their
values are stored with the other features, so a decision is explained and re-checked from
what was stored, even after the plug-in changed or was removed. A plug-in that raises or
returns the wrong kind yields no value and names itself in ``plugin_errors``, which holds the
payment for review rather than approving it.
"""

from __future__ import annotations

import math
from typing import Any

from satvault.kernel.plugins import load_plugin
from satvault.logs import get_logger
from satvault.risk.features import Event
from satvault.risk.rules import PLUGIN_PREFIX, RuleSetDoc

__all__ = ["add_plugin_features"]

log = get_logger(__name__)

_TYPES: dict[str, tuple[type, ...]] = {"number": (int, float), "string": (str,),
                                       "bool": (bool,), "list": (list, tuple)}


def _ok(kind: str, value: Any) -> bool:
    if kind == "number":
        return (isinstance(value, int | float) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, _TYPES.get(kind, ()))


def add_plugin_features(doc: RuleSetDoc, event: Event, features: dict[str, Any]) -> None:
    """Put each ``plugin.*`` field ``doc`` reads into ``features``."""
    if not doc.plugin_fields:
        return
    failed: list[str] = []
    for field in doc.plugin_fields:
        name = field.removeprefix(PLUGIN_PREFIX)
        try:
            plugin = load_plugin("risk_features", name)
            value = plugin(event, dict(features))
            if not _ok(plugin.kind, value):
                raise TypeError(f"returned {value!r}, not a {plugin.kind}")
        except Exception as exc:  # an extension's bug must not stop or approve payments
            log.warning("risk_plugin_failed", plugin=name, error=repr(exc))
            failed.append(name)
            features[field] = None
            continue
        features[field] = list(value) if isinstance(value, tuple) else value
    if failed:
        features["plugin_errors"] = failed
