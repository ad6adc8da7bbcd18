"""The HTTP timing metric's labels: whatever a client sends, the series stay few."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

from satvault.config import Settings
from satvault.web.app import create_app
from tests.liveserver import serve


async def test_made_up_http_methods_do_not_make_new_series(engine, db_url):
    """Found from outside: the method label was the request's method as sent, so every
    made-up method (any token is a method to HTTP/1.1) added a series to every scrape."""
    app = create_app(Settings(database_url=db_url, rate_limit_enabled=False),
                     engine=engine, start_workers=False)
    async with serve(app) as base, httpx.AsyncClient(timeout=20) as c:
        for n in range(30):
            r = await c.request(f"PROBE{n}", f"{base}/healthz")
            assert r.status_code in (404, 405), r.status_code
            r = await c.request(f"PROBE{n}", f"{base}/no/such/page")
            assert r.status_code in (404, 405), r.status_code
        text = (await c.get(f"{base}/metrics")).text
    methods = {s.labels["method"] for f in text_string_to_metric_families(text)
               if f.name == "satvault_http_request_duration_seconds" for s in f.samples}
    assert not any(m.startswith("PROBE") for m in methods), sorted(methods)
    assert methods <= {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other"}
