"""The TLS context every outgoing HTTPS client shares.

Building a context loads and parses the CA bundle, 30-50 ms of CPU on this machine, and an
``httpx.AsyncClient`` made with ``verify=True`` builds one at construction whether or not it
ever speaks TLS. The node adapters, the rate sources, the webhook dispatcher, the alert
channels and the LNURL resolution of every Lightning-address payment each made one, the last
once per payment. An ``ssl.SSLContext`` is made to be shared by many connections (httpx's own
advice), so it is built once per process: ``trust_env`` as httpx reads it (``SSL_CERT_FILE``,
``SSL_CERT_DIR``), each way at most once.
"""

from __future__ import annotations

import functools
import ssl

import httpx


@functools.cache
def default_context(trust_env: bool = True) -> ssl.SSLContext:
    """The system's trust store as httpx builds it for ``verify=True``; never change it (it
    is every client's): a client that needs another trust makes a context of its own."""
    return httpx.create_ssl_context(trust_env=trust_env)
