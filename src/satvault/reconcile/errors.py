"""Errors of the operator's follow-up (review items).

::

    SatvaultError
    ├── ReviewItemResolved   the item was resolved already (by whom, when); nothing changed
    ├── CannotResolveBatch   a stuck payout batch cannot be resolved that way: not stuck (any
    │                        more), not a payout, or the chain does not prove it safe (a
    │                        version could still confirm, the transaction does not pay every
    │                        withdrawal …); nothing changed
    └── SignerNotReached     the signer could not be told of the versions given up; nothing
                             changed in the database (try again)
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["CannotResolveBatch", "ReviewItemResolved", "SignerNotReached"]


class ReviewItemResolved(SatvaultError):
    pass


class CannotResolveBatch(SatvaultError):
    pass


class SignerNotReached(SatvaultError):
    pass
