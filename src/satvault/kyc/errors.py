"""KYC errors.

::

    KycError
    ├── LimitExceeded      a withdrawal over the owner's tier limit (per transaction, 24 h, 30 d)
    ├── WalletFrozen       the wallet is frozen: nothing leaves it on any rail
    ├── ReviewerIsSubject  (also a Forbidden) nobody reviews their own KYC record
    └── InvalidKycInput    (also an InvalidInput) a malformed record, list or freeze request

Raised before anything is written; the unit of work rolls back.
"""

from __future__ import annotations

from satvault.kernel.errors import ConcurrentUpdate, Forbidden, InvalidInput, SatvaultError

__all__ = ["InvalidKycInput", "KycError", "LimitExceeded", "RequestDecided", "ReviewerIsSubject",
           "WalletFrozen"]

_WINDOWS = {"transaction": "per transaction", "24h": "over any rolling 24 hours",
            "30d": "over any rolling 30 days"}


class KycError(SatvaultError):
    pass


class LimitExceeded(KycError):
    """Names the limit, the window, what is left and how to raise it."""

    def __init__(self, *, tier: int, rail: str, window: str, limit_msat: int, left_msat: int,
                 next_tier: int | None) -> None:
        self.tier, self.rail, self.window = tier, rail, window
        self.limit_msat, self.left_msat, self.next_tier = limit_msat, left_msat, next_tier
        how = (f"an approved KYC record for tier {next_tier} raises it" if next_tier is not None
               else "this is the highest KYC tier")
        super().__init__(
            f"this withdrawal exceeds the KYC tier {tier} {rail} limit of {limit_msat} msat "
            f"{_WINDOWS[window]}; {left_msat} msat left in that window ({how})")

    def as_problem(self) -> dict[str, object]:
        return {"limit": "kyc_tier", "kyc_tier": self.tier, "rail": self.rail,
                "window": self.window, "limit_msat": self.limit_msat,
                "left_msat": self.left_msat,
                "raise_by": (f"KYC record approving tier {self.next_tier}"
                             if self.next_tier is not None else None)}


class WalletFrozen(KycError):
    def __init__(self, wallet_id: str, reason: str) -> None:
        self.wallet_id, self.reason = wallet_id, reason
        super().__init__(f"wallet {wallet_id} is frozen ({reason}): no withdrawal or payment "
                         "leaves it until an operator unfreezes it")


class ReviewerIsSubject(KycError, Forbidden):
    pass


class InvalidKycInput(KycError, InvalidInput):
    pass


class RequestDecided(KycError, ConcurrentUpdate):
    """The KYC request was decided already (by another reviewer, or a repeated form)."""
