"""A hostile LNURL service may answer with JSON nested deeper than the parser recurses
(found from outside: ~100k levels, ~200 kB, under the response cap, made the withdrawal a
500): every such answer is an LNURL refusal (422), the payRequest, its ``metadata`` string
and the callback's answer alike, and nothing is paid."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import httpx
import pytest

from tests.lightning_lnurl.conftest import LnEnv
from tests.lightning_lnurl.fakes import make_bolt11
from tests.lightning_lnurl.test_withdraw import FUND, withdrawals

DEEP = "[" * 100_000 + "]" * 100_000  # ~200 kB: under the 256 kB cap
METADATA = json.dumps([["text/plain", "A coffee"]])


def _pay_request(metadata: str) -> str:
    return json.dumps({"tag": "payRequest", "callback": "http://deep.test/cb",
                       "minSendable": 1_000, "maxSendable": 1_000_000, "metadata": metadata})


def _service(where: str) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/.well-known/lnurlp/deep":
            body = DEEP if where == "payRequest" else \
                _pay_request(DEEP if where == "metadata" else METADATA)
            return httpx.Response(200, text=body)
        if where == "callback":
            return httpx.Response(200, text=DEEP)
        digest = hashlib.sha256(METADATA.encode()).digest()
        answer: dict[str, Any] = {"pr": make_bolt11(int(request.url.params["amount"]),
                                                    description_hash=digest), "routes": []}
        # Deep but far inside the recursion limit: refused all the same (nothing keeps it).
        answer["successAction"] = {"tag": "message", "message": "hi", "x": json.loads(
            "[" * 200 + "]" * 200)}
        return httpx.Response(200, json=answer)
    return httpx.MockTransport(handler)


@pytest.mark.parametrize("where", ["payRequest", "metadata", "callback", "successAction"])
async def test_deeply_nested_answers_are_lnurl_errors(ln: LnEnv, where: str):
    await ln.fund("alice", FUND)
    async with httpx.AsyncClient(transport=_service(where)) as hostile:
        ln.client._transport.app.state.lnurl_http = hostile  # type: ignore[attr-defined]
        answer = await ln.client.post(
            f"/api/v1/wallets/{ln.wallets['alice'].id}/withdrawals",
            headers={**ln.auth("alice"), "Idempotency-Key": where},
            json={"destination": "deep@deep.test", "amount_msat": 10_000})
    assert answer.status_code == 422, answer.text
    assert answer.json()["type"].endswith("/lnurl-error"), answer.text
    assert await withdrawals(ln) == 0
    assert (await ln.balance("alice"))["available"] == FUND
