"""Signer errors, shared by both sides: the signer process raises them, the web side
(the socket client, the PSBT builder, the payout job) raises and catches them.

Every refusal to sign is a :class:`SigningRefused`: it is raised before any signature leaves
the signer, so catching one means nothing was signed (the signer's audit log gets a
``"refused"`` line, never a signature line). The names travel over the signer socket and are
re-raised on the client as the same classes.

:class:`LimitExceeded` is the one refusal that is not about the transaction being wrong: the
signer's own caps on value leaving the platform (per transaction, per rolling 24 hours) are
reached. The same PSBT may be signed later, when the window has rolled on.

::

    SignerError
    ├── SeedError                 the encrypted seed file
    │   ├── NoPassphrase          neither SATVAULT_SIGNER_PASSPHRASE nor …_FILE gives one
    │   ├── SeedFileExists        create refuses to overwrite an existing file
    │   ├── WrongPassphrase       the passphrase does not open this file
    │   └── CorruptSeedFile       malformed, truncated or tampered (the right passphrase fails)
    ├── PsbtBuildError            make_psbt: inconsistent inputs/outputs or account keys
    ├── InvalidColdDescriptor     the signer's cold descriptor (start-up configuration)
    ├── SigningRefused            a policy check failed; nothing was signed
    │   ├── InvalidRequest        bad arguments: payments, limits
    │   ├── InvalidPsbt           unreadable PSBT, unsupported input features or fields
    │   ├── UnknownInput          an input is not provably from the deposit or hot wallet
    │   ├── OutputMismatch        an output is neither a requested payment nor an own wallet's
    │   │   ├── MissingPayment    a requested payment has no matching output
    │   │   ├── BadChange         an output claims to be the hot or cold wallet's, but is not
    │   │   └── DepositOutflow    deposit coins would pay an output outside the platform
    │   ├── NegativeFee           outputs exceed inputs
    │   ├── FeeTooHigh            fee above max_fee_sat, or feerate above max_feerate_sat_vb
    │   ├── PaidBefore            a payment ref an earlier signature paid, from other coins
    │   └── LimitExceeded         the signer's own per-transaction or 24-hour cap is reached
    ├── AuditLogError             the audit line could not be written; the signature is withheld
    ├── SignerUnavailable         no answer from the signer socket (missing, refused, timeout)
    └── SignerProtocolError       a malformed request/response on the wire, or an internal error
"""

from __future__ import annotations

__all__ = [
    "ERROR_TYPES",
    "AuditLogError",
    "BadChange",
    "CorruptSeedFile",
    "DepositOutflow",
    "FeeTooHigh",
    "InvalidColdDescriptor",
    "InvalidPsbt",
    "InvalidRequest",
    "LimitExceeded",
    "MissingPayment",
    "NegativeFee",
    "NoPassphrase",
    "OutputMismatch",
    "PaidBefore",
    "PsbtBuildError",
    "SeedError",
    "SeedFileExists",
    "SignerError",
    "SignerProtocolError",
    "SignerUnavailable",
    "SigningRefused",
    "UnknownInput",
    "WrongPassphrase",
]


class SignerError(Exception):
    pass


class SeedError(SignerError):
    pass


class NoPassphrase(SeedError):
    pass


class SeedFileExists(SeedError):
    pass


class WrongPassphrase(SeedError):
    pass


class CorruptSeedFile(SeedError):
    pass


class PsbtBuildError(SignerError):
    pass


class SigningRefused(SignerError):
    pass


class InvalidRequest(SigningRefused):
    pass


class InvalidPsbt(SigningRefused):
    pass


class UnknownInput(SigningRefused):
    pass


class OutputMismatch(SigningRefused):
    pass


class MissingPayment(OutputMismatch):
    pass


class BadChange(OutputMismatch):
    pass


class DepositOutflow(OutputMismatch):
    """Deposit coins may only be swept into the platform's own wallets (hot, cold)."""


class NegativeFee(SigningRefused):
    pass


class FeeTooHigh(SigningRefused):
    pass


class PaidBefore(SigningRefused):
    """A payment this transaction makes (its ``ref``, a withdrawal id) was paid by a
    transaction signed earlier that spends none of this one's inputs: both could confirm, and
    pay it twice (a database restored from a backup older than that payout, say)."""


class LimitExceeded(SigningRefused):
    """The value this transaction would send out of the platform (payments + fee) is above
    the signer's per-transaction cap, or above what is left of its rolling 24-hour cap."""


class InvalidColdDescriptor(SignerError):
    pass


class AuditLogError(SignerError):
    pass


class SignerUnavailable(SignerError):
    pass


class SignerProtocolError(SignerError):
    pass


def _subclasses(cls: type[SignerError]) -> list[type[SignerError]]:
    out = [cls]
    for sub in cls.__subclasses__():
        out.extend(_subclasses(sub))
    return out


# The wire carries the class name; the client looks it up here. Only this tree is ever
# instantiated from a name received over the socket.
ERROR_TYPES: dict[str, type[SignerError]] = {c.__name__: c for c in _subclasses(SignerError)}
