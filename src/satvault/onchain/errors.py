"""On-chain errors.

::

    OnchainError
    ├── InvalidKey            not an extended public key, a private key, bad depth/point
    ├── InvalidDescriptor     unsupported or malformed output descriptor, bad checksum
    ├── InvalidAddress        not a Bitcoin address: bad checksum, bad program, unknown type
    │   └── WrongNetwork      a valid address, of another network
    ├── InvalidPaymentUri     a malformed BIP21 URI (bad amount, unknown required parameter)
    └── UnprovenAmount        a PSBT input's amount not proven by its previous transaction
                              (missing, another outpoint's, another amount or script)
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["InvalidAddress", "InvalidDescriptor", "InvalidKey", "InvalidPaymentUri",
           "OnchainError", "UnprovenAmount", "WrongNetwork"]


class OnchainError(SatvaultError):
    pass


class InvalidKey(OnchainError):
    pass


class InvalidDescriptor(OnchainError):
    pass


class InvalidAddress(OnchainError):
    pass


class WrongNetwork(InvalidAddress):
    pass


class InvalidPaymentUri(OnchainError):
    pass


class UnprovenAmount(OnchainError):
    pass
