"""The withdrawal policy's errors::

    SatvaultError
    └── PolicyError
        ├── WithdrawalBlocked        a rule blocks this withdrawal (nothing is held)  403
        ├── InvalidPolicy            a proposed policy or allow-list entry is malformed 422
        ├── ApprovalClosed           the withdrawal no longer awaits approval       409
        └── NotAnApprover            not in the group, or the initiator themself    403
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["ApprovalClosed", "InvalidPolicy", "NotAnApprover", "PolicyError",
           "WithdrawalBlocked"]


class PolicyError(SatvaultError):
    pass


class WithdrawalBlocked(PolicyError):
    pass


class InvalidPolicy(PolicyError):
    pass


class ApprovalClosed(PolicyError):
    pass


class NotAnApprover(PolicyError):
    pass
