"""An earlier migration of ``versions/``, loaded as a module, for what it wrote: a migration
that replaces a function reads the earlier body, columns or statement from the migration
that wrote them (for its downgrade, or to change one part), instead of restating them."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

__all__ = ["load"]


def load(filename: str) -> ModuleType:
    """The migration ``versions/<filename>`` as a module of its own (not registered)."""
    path = Path(__file__).with_name("versions") / filename
    spec = importlib.util.spec_from_file_location(f"_migration_{path.stem}", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
