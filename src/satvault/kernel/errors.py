"""The error base every domain shares, and the kinds of refusal more than one domain raises.

Domains raise these (or their own subclasses); the HTTP edge maps them once, by type, to
problem+json (``web/problems.py``). Nothing here knows about HTTP.

::

    SatvaultError
    ├── NotFound              no such object, or not yours (the same answer either way)
    ├── AlreadyExists         e-mail taken, wallet exists …
    ├── InvalidInput          malformed or out-of-range input; nothing was changed
    ├── AuthError
    │   ├── Unauthenticated   no key, unknown key, revoked key, wrong password
    │   └── Forbidden         authenticated, but not allowed
    │       └── StepUpRequired  a money action needs a fresh TOTP code or payment password
    ├── ConcurrentUpdate      another transaction got there first: run the unit again
    └── Busy                  retryable conflicts outlived the retries
"""

from __future__ import annotations

__all__ = ["AlreadyExists", "AuthError", "Busy", "ConcurrentUpdate", "Forbidden",
           "InvalidInput", "NotFound", "NotHolder", "SatvaultError", "StaleVersion",
           "StepUpRequired", "Unauthenticated"]


class SatvaultError(Exception):
    """Base of every error a domain raises on purpose."""


class NotFound(SatvaultError):
    pass


class AlreadyExists(SatvaultError):
    pass


class InvalidInput(SatvaultError):
    pass


class AuthError(SatvaultError):
    pass


class Unauthenticated(AuthError):
    pass


class Forbidden(AuthError):
    pass


class NotHolder(Forbidden):
    """An admin who may see a wallet asked to move its money out (a withdrawal, an internal
    payment, a refund, a voucher, an allow-list entry): only its holders may."""


class StepUpRequired(Forbidden):
    """Signed in, but a money action (withdrawal, API key, payout destination) from the
    dashboard wants the TOTP code or the payment password again, within a few minutes."""


class ConcurrentUpdate(SatvaultError):
    """Another transaction got there first; the whole unit of work should run again."""


class StaleVersion(SatvaultError):
    """The caller acted on a version of a record that changed since it read it (an
    ``expected_version``): running the unit of work again cannot help, so it is not
    retryable like :class:`ConcurrentUpdate`; the caller reads the record again."""


class Busy(SatvaultError):
    """A retryable conflict (unique race, deadlock, lock timeout) outlived the retries."""
