"""The sealing helper now lives in :mod:`satvault.kernel.sealing`, where the webhooks (a layer
below auth) can use it too; this name stays for the sign-in code that imported it."""

from satvault.kernel.sealing import SealedSecretUnavailable, Sealer

__all__ = ["SealedSecretUnavailable", "Sealer"]
