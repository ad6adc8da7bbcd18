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
    InvalidInput (kernel)
    └── SameAsPaymentPassword   a new sign-in password equal to the payment password
    MailUnavailable             no SMTP relay configured outside development, or it refused

Raised before anything is written, except where a route commits the failure count first.
"""

from __future__ import annotations

from satvault.kernel.errors import Forbidden, InvalidInput, SatvaultError, Unauthenticated

__all__ = ["AccountLocked", "EnrollmentRequired", "InvalidCode", "MailUnavailable",
           "SameAsPaymentPassword", "SecondFactorNeeded"]


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


class SameAsPaymentPassword(InvalidInput):
    """Raised after the refusal was counted as a guess at the payment password (and, on a
    reset, the link spent): the caller answers it as a response so that those commit."""

    def __init__(self) -> None:
        super().__init__("The new password must differ from the payment password.")


class MailUnavailable(SatvaultError):
    pass
