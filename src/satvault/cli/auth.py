"""``satvault auth …``: sign-in administration from the command line.

``rotate-keys`` makes a new JWT signing key; the old ones sign nothing more and keep
verifying until the access tokens they signed have expired, then are deleted. Run it on a
schedule (e.g. daily) or at once if a key may have leaked (then also revoke the families).
``require-totp`` requires TOTP of a user or a merchant's owner.
"""

from __future__ import annotations

from typing import Annotated

import typer
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.auth import tokens, totp
from satvault.auth.credentials import AuthPolicy
from satvault.cli._common import emit, in_transaction
from satvault.config import get_settings

__all__ = ["app"]

app = typer.Typer(help="Sign-in: JWT signing keys, TOTP requirements.", no_args_is_help=True)


@app.command("rotate-keys")
def rotate_keys() -> None:
    """A new JWT signing key; older keys verify until their tokens expire."""
    settings = get_settings()
    policy = AuthPolicy.from_settings(settings)

    async def work(session: AsyncSession) -> str:
        key = await tokens.rotate_keys(session, actor="cli", policy=policy)
        return key.kid

    kid = in_transaction(work, settings)
    emit({"ok": True, "kid": kid})


@app.command("require-totp")
def require_totp(
    owner: Annotated[str, typer.Argument(help="A user (usr_…) or merchant (mer_…) id.")],
    off: Annotated[bool, typer.Option("--off", help="Stop requiring it.")] = False,
) -> None:
    """Require TOTP of a user, or of a merchant's owner (admins always need it)."""
    async def work(session: AsyncSession) -> str:
        user = await totp.set_required(session, owner_id=owner, required=not off, actor="cli")
        return user.id

    user_id = in_transaction(work)
    emit({"ok": True, "user_id": user_id, "totp_required": not off})
