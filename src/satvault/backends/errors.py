"""Backend errors: foreign errors (httpx, JSON-RPC codes) stop at the adapter and become these.

::

    BackendError
    ├── BackendUnavailable    cannot reach the node / it timed out: outcome UNKNOWN, retry later
    │   └── BackendWarmingUp  the node answers but is still loading (bitcoind -28)
    ├── BackendProtocolError  the node answered something we cannot read
    ├── NotFound              no such block / transaction (bitcoind -5, HTTP 404)
    ├── WrongChainNetwork     the node is on another network than SATVAULT_NETWORK
    └── TxRejected            the node refused a transaction; ``code`` and ``reason`` say why
        ├── TxAlreadyInChain  its outputs are already confirmed (bitcoind -27)
        └── TxMissingInputs   an input is missing or spent (bitcoind -25)
"""

from __future__ import annotations

from satvault.kernel.errors import SatvaultError

__all__ = ["BackendError", "BackendProtocolError", "BackendUnavailable", "BackendWarmingUp",
           "NotFound", "TxAlreadyInChain", "TxMissingInputs", "TxRejected", "WrongChainNetwork"]


class BackendError(SatvaultError):
    pass


class BackendUnavailable(BackendError):
    pass


class BackendWarmingUp(BackendUnavailable):
    pass


class BackendProtocolError(BackendError):
    pass


class NotFound(BackendError):
    pass


class WrongChainNetwork(BackendError):
    def __init__(self, found: str, configured: str) -> None:
        self.found = found
        self.configured = configured
        super().__init__(f"the chain node is on {found}, satvault is configured for "
                         f"{configured}")


class TxRejected(BackendError):
    def __init__(self, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(f"transaction rejected ({code}): {reason}")


class TxAlreadyInChain(TxRejected):
    pass


class TxMissingInputs(TxRejected):
    pass
