"""Account and access errors.

::

    AccountsError
    ├── NotFound              no such user/merchant/store/wallet, or not yours (same answer)
    ├── AlreadyExists         e-mail taken, wallet exists …
    ├── InvalidInput          malformed e-mail, unknown scope, bad owner id
    └── AuthError
        ├── Unauthenticated   no key, unknown key, revoked key, wrong password
        └── Forbidden         authenticated, but the key lacks a scope
"""

from __future__ import annotations

__all__ = ["AccountsError", "AlreadyExists", "AuthError", "Forbidden", "InvalidInput",
           "NotFound", "Unauthenticated"]


class AccountsError(Exception):
    pass


class NotFound(AccountsError):
    pass


class AlreadyExists(AccountsError):
    pass


class InvalidInput(AccountsError):
    pass


class AuthError(AccountsError):
    pass


class Unauthenticated(AuthError):
    pass


class Forbidden(AuthError):
    pass
