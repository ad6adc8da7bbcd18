"""Real servers for tests: an ASGI app served by uvicorn on a free 127.0.0.1 port in the
test's own event loop, and Debian's Chromium for the browser tests (driven by Playwright,
which never downloads a browser of its own)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from tests.waiting import eventually

__all__ = ["CHROMIUM", "LAUNCH_ARGS", "free_port", "require_browser", "serve"]

CHROMIUM = os.environ.get("SATVAULT_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run"]


@asynccontextmanager
async def serve(app: Any, *, lifespan: bool = False, port: int = 0) -> AsyncIterator[str]:
    """Serve ``app`` and yield its base URL; ``lifespan``: run the app's start-up and
    shut-down around it (its workers, if it has any); ``port``: one chosen beforehand (see
    :func:`free_port`; the app's settings may need its own URL), else any free one."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="off", log_level="error", log_config=None, ws="none",
                            http="h11", timeout_graceful_shutdown=0.5, access_log=False)
    server = uvicorn.Server(config)
    async with contextlib.AsyncExitStack() as stack:
        if lifespan:
            await stack.enter_async_context(app.router.lifespan_context(app))
        task = asyncio.create_task(server._serve(sockets=[sock]))  # no signal handlers
        try:
            await eventually(lambda: server.started or task.done(), timeout=10)
            if task.done():
                task.result()  # it failed to start: say why
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            with contextlib.suppress(asyncio.CancelledError):
                await task
            sock.close()


def free_port() -> int:
    """A 127.0.0.1 port free just now, for a server started a little later."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def require_browser() -> None:
    """Skip without Chromium and Playwright, or fail when SATVAULT_REQUIRE_BROWSER=1 (CI)."""
    problem = None
    if not Path(CHROMIUM).exists():
        problem = (f"{CHROMIUM} is missing: install Debian's chromium "
                   "(apt-get install -y chromium); never `playwright install`")
    else:
        try:
            import playwright.async_api  # noqa: F401
        except ImportError:
            problem = "the playwright package is not installed (pip install -e '.[dev]')"
    if problem is None:
        return
    if os.environ.get("SATVAULT_REQUIRE_BROWSER") == "1":
        pytest.fail(f"SATVAULT_REQUIRE_BROWSER=1 but {problem}", pytrace=False)
    pytest.skip(problem)


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    """Debian's Chromium, launched by Playwright (which never downloads a browser)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


def sqlite_copy(tmp_path: Path, sqlite_template: Path) -> str:
    """A fresh copy of the migrated SQLite database: the browser tests run on SQLite only
    (their pages' behaviour is tested on both databases elsewhere)."""
    target = tmp_path / "satvault.db"
    shutil.copy(sqlite_template, target)
    return f"sqlite+aiosqlite:///{target}"
