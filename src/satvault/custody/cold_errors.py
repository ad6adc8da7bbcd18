"""Errors of the cold ceremony and of proofs of reserves.

::

    CustodyError
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

__all__ = ["BadSignature", "ColdPsbtError", "ColdWalletError", "CustodyError",
           "NotEnoughSignatures", "ProofError", "ProofRejected", "PsbtMismatch",
           "QrExportError", "SigningRefused"]


class CustodyError(SatvaultError):
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
