"""Sign-in errors.

::

    AuthError (kernel)
    ├── Unauthenticated (kernel)
    │   ├── AccountLocked       too many failed sign-ins: refused until ``retry_after``
    │   ├── SecondFactorNeeded  the password was right; a TOTP or recovery code is needed too
    │   └── InvalidCode         a wrong, replayed or spent TOTP / recovery code
    └── Forbidden (kernel)
        ├── StepUpRequired (kernel)  a money action from the dashboard needs a fresh step-up
        └── EnrollmentRequired  an admin (or a merchant an admin marked) has no TOTP yet
    MailUnavailable             no SMTP relay configured outside development, or it refused

Raised before anything is written, except where a route commits the failure count first.
"""

from __future__ import annotations

from satvault.kernel.errors import Forbidden, SatvaultError, Unauthenticated

__all__ = ["AccountLocked", "EnrollmentRequired", "InvalidCode", "MailUnavailable",
           "SecondFactorNeeded"]


class AccountLocked(Unauthenticated):
    def __init__(self, retry_after: int) -> None:
        self.retry_after = max(1, retry_after)
        super().__init__(f"too many failed sign-ins; try again in {self.retry_after} s")


class SecondFactorNeeded(Unauthenticated):
    pass


class InvalidCode(Unauthenticated):
    pass


class EnrollmentRequired(Forbidden):
    pass


class MailUnavailable(SatvaultError):
    pass
