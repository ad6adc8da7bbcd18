"""The API reference pages work without internet: Debian's Chromium (driven by Playwright)
opens /docs and /redoc on the app served by uvicorn on 127.0.0.1, with every request to any
other host aborted, and sees every operation of the OpenAPI document listed.

Without ``/usr/bin/chromium`` the tests skip, or fail when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from fastapi import FastAPI

from satvault.config import Settings
from satvault.web.app import create_app
from tests.liveserver import CHROMIUM, LAUNCH_ARGS, require_browser, serve

pytestmark = pytest.mark.slow  # run first: see tests/conftest.py

TIMEOUT_MS = 15_000


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def app(tmp_path: Path, sqlite_template: Path) -> FastAPI:
    """SQLite only: the pages are the subject; they read no data."""
    target = tmp_path / "satvault.db"
    shutil.copy(sqlite_template, target)
    return create_app(Settings(database_url=f"sqlite+aiosqlite:///{target}", home=tmp_path,
                               lightning_backend="none"), start_workers=False)


@asynccontextmanager
async def offline_page(base: str) -> AsyncIterator[tuple[Any, list[str], list[str]]]:
    """A page that can reach only ``base``; yields it with the aborted URLs and page errors."""
    from playwright.async_api import async_playwright

    local = urlsplit(base).netloc
    blocked: list[str] = []
    errors: list[str] = []

    async def only_local(route: Any) -> None:
        url = route.request.url
        if urlsplit(url).scheme in ("data", "blob") or urlsplit(url).netloc == local:
            await route.continue_()
        else:
            blocked.append(url)
            await route.abort()

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            context = await browser.new_context()
            context.set_default_timeout(TIMEOUT_MS)
            await context.route("**/*", only_local)
            page = await context.new_page()
            page.on("pageerror", lambda e: errors.append(str(e)))
            yield page, blocked, errors
        finally:
            await browser.close()


def _operations(app: FastAPI) -> list[tuple[str, str]]:
    return [(method.upper(), path) for path, ops in app.openapi()["paths"].items()
            for method in ops]


def _listings(app: FastAPI) -> int:
    """Swagger UI lists an operation once under each of its tags."""
    return sum(max(1, len(op.get("tags", []))) for ops in app.openapi()["paths"].values()
               for op in ops.values())


async def test_swagger_ui_lists_every_operation_offline(app: FastAPI):
    from playwright.async_api import expect

    operations = _operations(app)
    assert len(operations) > 20
    async with serve(app, lifespan=True) as base, offline_page(base) as (page, blocked, errors):
        await page.goto(f"{base}/docs")
        await expect(page.locator(".opblock")).to_have_count(_listings(app))
        for method, path in operations:
            block = page.locator(f".opblock-{method.lower()}").filter(
                has=page.locator(f".opblock-summary-path[data-path='{path}']"))
            await expect(block.first).to_be_visible()
        await expect(page.locator(".opblock-tag-section").first).to_be_visible()
        assert blocked == [], f"the page tried to reach other hosts: {blocked}"
        assert errors == []


async def test_redoc_lists_every_operation_offline(app: FastAPI):
    from playwright.async_api import expect

    ids = [op["operationId"] for ops in app.openapi()["paths"].values() for op in ops.values()]
    async with serve(app, lifespan=True) as base, offline_page(base) as (page, blocked, errors):
        await page.goto(f"{base}/redoc")
        # One section per operation and tag, with an id ending in its operationId.
        sections = page.locator("[id^='operation/']")
        # ReDoc renders 130 operations in script: seconds on a loaded CI machine (seen: none
        # within the default 5 s), so it is given half a minute.
        await expect(sections).to_have_count(_listings(app), timeout=30_000)
        for op_id in ids:
            await expect(page.locator(f"[data-section-id$='/operation/{op_id}']").first
                         ).to_be_attached()
        await expect(page.get_by_text("/api/v1/stores/{store_id}/invoices").first
                     ).to_be_attached()
        assert blocked == [], f"the page tried to reach other hosts: {blocked}"
        assert errors == []
