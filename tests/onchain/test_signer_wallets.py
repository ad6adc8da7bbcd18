"""The watch-only wallets satvault registers are the signer's: a configured descriptor of
another key is refused at ``init`` (found from outside: it was taken as given, so deposits
went to addresses the signer cannot spend and every batch got ``stuck``)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import func, select

from satvault.db import create_engine, session_factory
from satvault.onchain.models import OnchainWallet
from satvault.signer.core import HotSigner
from tests.test_cli import last_json, sv_here


async def _wallets(url: str) -> int:
    engine = create_engine(url)
    try:
        async with session_factory(engine)() as s:
            return int((await s.execute(select(func.count()).select_from(OnchainWallet)))
                       .scalar_one())
    finally:
        await engine.dispose()


async def test_a_configured_descriptor_of_another_key_is_refused(db_url: str,
                                                                 tmp_path: Path) -> None:
    other = HotSigner(bytes([9]) * 64, "regtest").descriptors()
    env = {"SATVAULT_NETWORK": "regtest", "SATVAULT_DEPOSIT_DESCRIPTOR": other["deposit"]}
    refused = sv_here("init", url=db_url, home=tmp_path / "h", env=env, check=False)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    error = last_json(refused)["error"]
    assert "SATVAULT_DEPOSIT_DESCRIPTOR" in error and "not the signer's" in error
    assert await _wallets(db_url) == 0
    # No admin was created whose one-time credentials went unshown: init runs again, whole.
    done = sv_here("init", url=db_url, home=tmp_path / "h", env={"SATVAULT_NETWORK": "regtest"})
    assert last_json(done)["api_key"].startswith("sv.")
    assert await _wallets(db_url) == 2


async def test_the_signers_own_descriptor_in_another_form_is_accepted(db_url: str,
                                                                      tmp_path: Path) -> None:
    """The same keys written differently (no checksum, ' for h) are the same wallet."""
    from satvault.composition import ensure_dev_signer, open_signer
    from satvault.config import Settings

    home = tmp_path / "h"
    settings = Settings(home=home, database_url=db_url, network="regtest")
    ensure_dev_signer(settings)
    hot = (await open_signer(settings).descriptors())["hot"]
    head, origin = hot.split("#")[0].split("[", 1)  # only the origin's path: ' for h
    path, rest = origin.split("]", 1)
    written = f"{head}[{path.replace('h', chr(39))}]{rest}"

    env = {"SATVAULT_NETWORK": "regtest", "SATVAULT_HOT_DESCRIPTOR": written}
    done = sv_here("init", url=db_url, home=home, env=env)
    assert "api_key" in last_json(done)
    assert await _wallets(db_url) == 2
