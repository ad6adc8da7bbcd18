"""``satvault auth rotate-keys`` and ``satvault auth require-totp`` on both databases."""

from __future__ import annotations

from sqlalchemy import select

from satvault.accounts import service as acc
from satvault.auth.models import Credentials, SigningKey
from tests.test_cli import last_json, sv_here


async def test_rotate_keys_retires_the_old_key_and_require_totp(db_url, tmp_path, sessions):
    async with sessions() as s, s.begin():
        user = await acc.create_user(s, email="ops@example.com")
        merchant = await acc.create_merchant(s, name="Ops", owner_user_id=user.id)
    first = last_json(sv_here("auth", "rotate-keys", url=db_url, home=tmp_path))
    second = last_json(sv_here("auth", "rotate-keys", url=db_url, home=tmp_path))
    assert first["ok"] and second["ok"] and first["kid"] != second["kid"]
    async with sessions() as s:
        keys = {k.kid: k for k in (await s.execute(select(SigningKey))).scalars()}
    assert keys[first["kid"]].retired_at is not None
    assert keys[first["kid"]].verify_until > keys[first["kid"]].retired_at
    assert keys[second["kid"]].retired_at is None
    out = last_json(sv_here("auth", "require-totp", merchant.id, url=db_url, home=tmp_path))
    assert out == {"ok": True, "user_id": user.id, "totp_required": True}
    async with sessions() as s:
        assert (await s.get(Credentials, user.id)).totp_required
    bad = sv_here("auth", "require-totp", "usr_nobody", url=db_url, home=tmp_path, check=False)
    assert bad.returncode == 1 and "not found" in last_json(bad)["error"]
