"""Errors of the operator's follow-up (review items).

::

    SatvaultError
    └── ReviewItemResolved   the item was resolved already (by whom, when); nothing changed
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["ReviewItemResolved"]


class ReviewItemResolved(SatvaultError):
    pass
