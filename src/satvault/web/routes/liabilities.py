"""Proof of liabilities over HTTP: a wallet's proof in the latest round (authenticated), and
the stand-alone verifier page (public: it holds no data and checks everything in the browser).
Rounds are published by ``satvault liabilities publish``."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from sqlalchemy import or_, select

from satvault.accounts.models import Wallet
from satvault.accounts.service import Principal
from satvault.custody.liabilities_service import latest_proof, root_object, verifier_file
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.web.deps import SessionDep, require_scope
from satvault.web.openapi import problem_responses
from satvault.web.ratelimit import PublicLimit
from satvault.web.schemas.liabilities import LiabilitiesProofOut

__all__ = ["router"]

router = APIRouter(tags=["liabilities"])
ASSET = "BTC"
# The page may load and talk to its own origin only; it reads files the customer picks.
PAGE_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "public, max-age=3600",
}
# The balance is in the proof: the same scope as reading the wallet.
WalletReader = Annotated[Principal, Depends(require_scope("wallet:read"))]


@router.get("/api/v1/me/liabilities-proof", response_model=LiabilitiesProofOut,
            responses=problem_responses(404))
async def my_liabilities_proof(
    session: SessionDep, principal: WalletReader,
    wallet_id: Annotated[str | None, Query(
        max_length=40, description="Which of the caller's wallets (default: its only one).")
    ] = None,
) -> LiabilitiesProofOut:
    """The caller's wallet's proof in the latest proof of liabilities, with that round's root:
    check it with ``satvault liabilities verify`` or the page at ``/liabilities/verify``.
    Only the caller's own wallets (those ``GET /api/v1/me`` lists), even for an admin key."""
    owners = [(principal.owner_type, principal.owner_id)]
    if principal.merchant_id:
        owners.append(("merchant", principal.merchant_id))
    mine = list((await session.execute(select(Wallet.id).where(
        Wallet.asset == ASSET,
        or_(*((Wallet.owner_type == t) & (Wallet.owner_id == i) for t, i in owners)),
    ))).scalars())
    if wallet_id is None:
        if not mine:
            raise NotFound("this API key's owner has no wallet")
        if len(mine) > 1:
            raise InvalidInput(f"this API key sees {len(mine)} wallets; name one with "
                               "?wallet_id=")
        wallet_id = mine[0]
    elif wallet_id not in mine:
        raise NotFound(f"wallet {wallet_id!r} not found")
    row, proof = await latest_proof(session, wallet_id=wallet_id, asset=ASSET)
    return LiabilitiesProofOut.model_validate({
        "round_id": row.id, "published_at": row.created_at, "root": root_object(row),
        "proof": proof})


@router.get("/liabilities/verify", include_in_schema=False, dependencies=[PublicLimit])
async def verifier_page() -> Response:
    return Response(verifier_file("verify.html"), media_type="text/html; charset=utf-8",
                    headers=PAGE_HEADERS)


@router.get("/liabilities/verify.js", include_in_schema=False, dependencies=[PublicLimit])
async def verifier_script() -> Response:
    return Response(verifier_file("verify.js"), media_type="text/javascript; charset=utf-8",
                    headers=PAGE_HEADERS)
