"""Custody errors.

::

    CustodyError
    ├── CannotPublish   the balances cannot be published as a proof of liabilities (a negative
    │                   balance, a total past 64 bits, customer money with no wallet id)
    └── ProofInvalid    a proof of liabilities does not check out against its root; the
                        message says which check failed
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["CannotPublish", "CustodyError", "ProofInvalid"]


class CustodyError(SatvaultError):
    pass


class CannotPublish(CustodyError):
    pass


class ProofInvalid(CustodyError):
    pass
