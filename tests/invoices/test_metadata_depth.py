"""JSON nested too deep is refused at the edge, on every route, before anything is stored
(found from outside, stop 32: invoice metadata 300 objects deep, 1.8 kB, was accepted, and
from then on every read of the invoice answered a 500, the store's invoice list included:
the answer's serializer stops at a depth)."""

from __future__ import annotations

from typing import Any

from tests.chainenv import LnEnv, api_client
from tests.invoices.test_invoices import create, shop  # noqa: F401
from tests.web.rows import row_counts


def nested(depth: int) -> dict[str, Any]:
    """An object ``depth`` objects deep (``{"a": {"a": … {}}}``)."""
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


async def test_json_nested_too_deep_is_refused_and_what_passes_stays_readable(
        lnenv: LnEnv, shop):  # noqa: F811
    async with api_client(lnenv) as c:
        before = await row_counts(lnenv.sessions)
        for depth in (33, 300):
            r = await create(c, shop, f"deep{depth}", amount="1000", currency="SATS",
                             metadata=nested(depth - 1))  # inside the body: one more
            assert r.status_code == 422, r.text
            assert r.json()["type"].endswith("/invalid-request")
            assert "nests deeper than 32" in r.json()["detail"]
        deepest = "[" * 100_000 + "]" * 100_000  # deeper than the parser's own recursion
        r = await c.post(f"/api/v1/stores/{shop['store']}/invoices", content=deepest,
                         headers={**shop["key"], "Idempotency-Key": "deepest",
                                  "Content-Type": "application/json"})
        assert r.status_code == 422 and "nests deeper" in r.json()["detail"], r.text
        assert await row_counts(lnenv.sessions) == before
        r = await create(c, shop, "deep32", amount="1000", currency="SATS",
                         metadata=nested(31))
        assert r.status_code == 201, r.text
        got = await c.get(f"/api/v1/invoices/{r.json()['id']}", headers=shop["read"])
        assert got.status_code == 200 and got.json()["metadata"] == nested(31)
        listed = await c.get(f"/api/v1/stores/{shop['store']}/invoices", headers=shop["read"])
        assert listed.status_code == 200, listed.text
