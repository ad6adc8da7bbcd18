"""Found from outside (stop 41): a password reset for an address with an account waited for
the mail relay, one for an unknown address did not, so the time of one request told which
addresses have an account. The answer now goes out first and the mail after it, on the API
and on the page; served by uvicorn over a real socket, with a relay that takes 2 s a mail."""

from __future__ import annotations

import time
from typing import Any

import httpx

from satvault.web.app import create_app
from tests.auth.conftest import settings_for
from tests.auth.test_api import signed_up
from tests.liveserver import serve
from tests.mailbox import Mailbox
from tests.waiting import eventually

SLOW = 2.0


async def _timed(client: httpx.AsyncClient, path: str, **kw: Any) -> tuple[float, httpx.Response]:
    started = time.monotonic()
    r = await client.post(path, **kw)
    return time.monotonic() - started, r


async def test_a_reset_answers_before_its_mail_is_sent(engine, db_url, smtp) -> None:
    mailbox: Mailbox = smtp[0]
    app = create_app(settings_for(db_url, smtp[1], rate_limit_enabled=False), engine=engine,
                     start_workers=False)
    async with app.router.lifespan_context(app), serve(app) as url, \
            httpx.AsyncClient(base_url=url, timeout=30) as c:
        email = "erin@example.com"
        await signed_up(c, mailbox, email)
        mailbox.delay = SLOW
        sent = len(mailbox.to(email))
        unknown, r = await _timed(c, "/api/v1/auth/password-reset",
                                  json={"email": "nobody@example.com"})
        assert r.status_code == 202
        known, r = await _timed(c, "/api/v1/auth/password-reset", json={"email": email})
        assert r.status_code == 202
        assert known < SLOW / 2, (known, unknown)
        await eventually(lambda: len(mailbox.to(email)) == sent + 1, timeout=10)
        assert mailbox.last_link(email, "/password-reset/confirm")
        # The page's form likewise (its CSRF cookie and token from the form first).
        form = await c.get("/password-reset")
        token = form.text.split('name="csrf_token" value="', 1)[1].split('"', 1)[0]
        known, r = await _timed(c, "/password-reset",
                                data={"email": email, "csrf_token": token})
        assert r.status_code == 200, r.text
        assert known < SLOW / 2, known
        await eventually(lambda: len(mailbox.to(email)) == sent + 2, timeout=10)
        assert mailbox.to("nobody@example.com") == []
