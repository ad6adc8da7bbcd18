"""Every state-changing page route is CSRF-protected: a new form handler that forgets the
dependency fails here before it can ship (the behaviour itself, a post without the token
refused with nothing changed, is tested page by page)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi.routing import iter_route_contexts

from satvault.config import Settings
from satvault.web.app import create_app
from satvault.web.pages.deps import csrf_protected

CHANGES = {"POST", "PUT", "PATCH", "DELETE"}


def _calls(dependant: Any) -> list[Callable[..., Any]]:
    found = []
    for dep in dependant.dependencies:
        found.append(dep.call)
        found += _calls(dep)
    return found


def test_every_page_form_checks_its_csrf_token(tmp_path):
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db"),
                     start_workers=False)
    checked, missing = 0, []
    for ctx in iter_route_contexts(app.routes):
        endpoint = ctx.endpoint
        if (endpoint is None or not endpoint.__module__.startswith("satvault.web.pages")
                or not (ctx.methods or set()) & CHANGES):
            continue
        calls = _calls(ctx.route.dependant)
        # signed in: the session's token; signed out (sign-in, sign-up, reset): the
        # double-submit cookie's
        if csrf_protected in calls or any(
                getattr(c, "__name__", "") == "_pre_session_csrf" for c in calls):
            checked += 1
        else:
            missing.append(f"{sorted(ctx.methods or ())} {ctx.path}")
    assert not missing, missing
    assert checked > 50  # the pages' forms were found (the walk itself works)
