"""The suite does not keep the apps it builds: each test's app (with its engine and pool)
must be free once the test is over (tests/conftest.py, ``forget_endpoints``)."""

from __future__ import annotations

import gc
import weakref
from pathlib import Path

from satvault.config import Settings
from satvault.web.app import create_app
from tests.conftest import forget_endpoints


def test_an_app_is_freed_once_its_test_forgets_the_endpoints(tmp_path: Path) -> None:
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{tmp_path}/x.db",
                              home=tmp_path), start_workers=False)
    assert any(getattr(r, "path", "") == "/docs" for r in app.routes)  # the closure is there
    freed = weakref.ref(app)
    del app
    forget_endpoints()
    gc.collect()
    assert freed() is None, "something still holds the app"
