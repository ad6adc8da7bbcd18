"""The `lnd` adapter's reading of answers it cannot use (against ``httpx.MockTransport``)."""

from __future__ import annotations

import httpx
import pytest

from satvault.backends.errors import BackendProtocolError, BackendUnavailable
from satvault.backends.lnd import LndBackend

DEEP = "[" * 100_000 + "]" * 100_000


@pytest.mark.parametrize(("status", "error"), [(200, BackendProtocolError),
                                               (502, BackendUnavailable)])
async def test_an_answer_nested_past_the_parsers_limit_is_no_json(status: int,
                                                                   error: type) -> None:
    """Found from outside (in LNURL answers, the same parse): JSON nested ~100k deep raised
    RecursionError, which the adapter's "no JSON" handling did not catch."""
    lnd = LndBackend("http://lnd.test", transport=httpx.MockTransport(
        lambda request: httpx.Response(status, text=DEEP)))
    try:
        with pytest.raises(error):
            await lnd.get_info()
    finally:
        await lnd.close()
