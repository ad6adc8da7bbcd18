"""Custody errors.

::

    CustodyError
    ├── CannotPublish            the balances cannot be published as a proof of liabilities (a
    │                            negative balance, a total past 64 bits, customer money with no
    │                            wallet id)
    ├── ProofInvalid             a proof of liabilities does not check out against its root;
    │                            the message says which check failed
    ├── ColdWalletError          a descriptor that is not a usable cold wallet
    ├── ColdPsbtError            building or reading a cold PSBT: bad inputs, outputs, fields
    │   ├── PsbtMismatch         not the transaction the platform asked for (combine, check)
    │   ├── BadSignature         a partial signature that does not verify (input and key named)
    │   └── NotEnoughSignatures  an input has fewer than m valid signatures
    ├── SigningRefused           the offline cosigner will not sign this PSBT (reason given)
    ├── QrExportError            the PSBT does not fit the QR sequence
    └── ProofError               a proof of reserves cannot be built or finalized
        └── ProofRejected        a proof that does not hold (the reason says why)
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["BadSignature", "CannotPublish", "ColdPsbtError", "ColdWalletError", "CustodyError",
           "NotEnoughSignatures", "ProofError", "ProofInvalid", "ProofRejected",
           "PsbtMismatch", "QrExportError", "SigningRefused"]


class CustodyError(SatvaultError):
    pass


class CannotPublish(CustodyError):
    pass


class ProofInvalid(CustodyError):
    pass


class ColdWalletError(CustodyError):
    pass


class ColdPsbtError(CustodyError):
    pass


class PsbtMismatch(ColdPsbtError):
    pass


class BadSignature(ColdPsbtError):
    pass


class NotEnoughSignatures(ColdPsbtError):
    pass


class SigningRefused(CustodyError):
    pass


class QrExportError(CustodyError):
    pass


class ProofError(CustodyError):
    pass


class ProofRejected(ProofError):
    pass
