"""The proof-of-liabilities verifier page in a real browser (Debian's Chromium driven by
Playwright): opened from disk, as published next to root.json, the customer loads both files
and sees the verified balance, or why a changed proof is refused; served by the app at
``/liabilities/verify``, the same with the files pasted in.

Without ``/usr/bin/chromium`` the tests skip, or fail when ``SATVAULT_REQUIRE_BROWSER=1``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from satvault.config import Settings
from satvault.custody.liabilities import build
from satvault.custody.liabilities_service import VERIFIER_FILES, verifier_file
from satvault.web.app import create_app
from tests.liveserver import CHROMIUM, LAUNCH_ARGS, require_browser
from tests.liveserver import serve as live

pytestmark = pytest.mark.slow
TIMEOUT_MS = 15_000
BALANCES = {"wal_alice": 2**62 + 7, "wal_bob": 150_000, "wal_carol": 9}


@pytest.fixture(autouse=True)
def _need_browser() -> None:
    require_browser()


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A publication on disk as ``satvault liabilities publish`` lays it out."""
    pub = build(BALANCES, height=870_123, round_id="pol_page", secret=b"page secret")
    (tmp_path / "proofs").mkdir()
    (tmp_path / "root.json").write_text(json.dumps(pub.root))
    for account, proof in pub.proofs.items():
        (tmp_path / "proofs" / f"{account}.json").write_text(json.dumps(proof))
    for name in VERIFIER_FILES:
        (tmp_path / name).write_bytes(verifier_file(name))
    return tmp_path, pub.root


@asynccontextmanager
async def chromium() -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield await browser.new_page()
        finally:
            await browser.close()


async def _result(page: Any, cls: str) -> str:
    await page.wait_for_selector(f"#result.{cls}", timeout=TIMEOUT_MS)
    text: str = await page.text_content("#result")
    return text


async def test_the_page_from_disk_verifies_a_proof_and_refuses_a_changed_one(published):
    out, root = published
    alice = out / "proofs" / "wal_alice.json"
    async with chromium() as page:
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto((out / "verify.html").as_uri())
        await page.set_input_files("#root-file", str(out / "root.json"))
        await page.set_input_files("#proof-file", str(alice))
        await page.wait_for_function(
            "document.getElementById('proof-text').value.includes('wal_alice')",
            timeout=TIMEOUT_MS)
        await page.fill("#expected", str(BALANCES["wal_alice"]))
        await page.click("#verify")
        text = await _result(page, "ok")
        # exact past 2**53: the page reads integers as BigInt
        assert f"{BALANCES['wal_alice']} msat" in text
        assert f"published total of {sum(BALANCES.values())} msat" in text
        assert "block height 870123" in text and root["root"] in text

        changed = json.loads(alice.read_text())
        changed["leaves"][0]["path"][0]["sum"] += 1
        await page.fill("#proof-text", json.dumps(changed))
        await page.fill("#expected", "")
        await page.click("#verify")
        text = await _result(page, "bad")
        assert text.startswith("Not valid: ") and "sums along its path add up to" in text
        assert errors == []


async def test_the_page_served_by_the_app_checks_pasted_files(published, tmp_path):
    out, _root = published
    db = tmp_path / "unused.db"
    app = create_app(Settings(database_url=f"sqlite+aiosqlite:///{db}",
                              lightning_backend="none"), start_workers=False, api_only=True)
    async with live(app) as base, chromium() as page:
        await page.goto(f"{base}/liabilities/verify")
        await page.fill("#root-text", (out / "root.json").read_text())
        await page.fill("#proof-text", (out / "proofs" / "wal_carol.json").read_text())
        await page.fill("#expected", "10")
        await page.click("#verify")
        text = await _result(page, "bad")
        assert "the proof covers 9 msat, but your balance at block height 870123 was 10" in text
        await page.fill("#expected", "9")
        await page.click("#verify")
        assert "Wallet wal_carol: 9 msat" in await _result(page, "ok")
