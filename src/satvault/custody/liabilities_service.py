"""Proof of liabilities against the books: which balances are published, and the rounds kept
for the API (the tree itself is :mod:`satvault.custody.liabilities`).

What is a liability. Every customer and merchant wallet (ledger accounts of kind
``customer_wallet`` / ``merchant_wallet``: money the platform owes its owner); platform
accounts (hot and cold wallets, fees, equity …) are not. Each is published under the wallet
id its owner sees in the API (``GET /api/v1/me``), never the internal ledger id.

Which balance. The *posted* balance, ``credits_posted - debits_posted`` (what the API calls
``posted_msat``):

* money held for a withdrawal still in flight (a pending debit) is included: until the hold
  posts, the coins have not left and the customer is still owed them; leaving holds out would
  let a platform hide liabilities by holding balances over the publication;
* money not yet final (a pending credit, e.g. a deposit waiting for confirmations) is not:
  the platform does not owe it yet, and it may never arrive.

Balances are read in one statement (one snapshot on either database), so a publication never
mixes two moments; the block height is the chain tip when the balances were read.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from importlib import resources
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from satvault.accounts.models import Wallet
from satvault.custody.errors import CannotPublish
from satvault.custody.liabilities import Publication
from satvault.custody.liabilities_models import LiabilityProof, LiabilityRound
from satvault.db import utcnow
from satvault.kernel.errors import NotFound
from satvault.ledger.models import LedgerAccount
from satvault.ledger.store import WALLET_KINDS

__all__ = ["VERIFIER_FILES", "latest_proof", "liability_balances", "root_object", "store_round",
           "verifier_file"]

# The stand-alone verifier page (HTML and its script): served at /liabilities/verify and
# copied next to every publication so it works from disk, with no server.
VERIFIER_FILES = ("verify.html", "verify.js")


def verifier_file(name: str) -> bytes:
    if name not in VERIFIER_FILES:
        raise NotFound(f"no verifier file {name!r}")
    return (resources.files("satvault.custody") / "static" / name).read_bytes()


async def liability_balances(session: AsyncSession, *, asset: str = "BTC") -> dict[str, int]:
    """Wallet id → posted balance (msat) of every customer and merchant wallet of ``asset``
    whose posted balance is not zero. Refuses (:class:`CannotPublish`) a customer ledger
    account holding money with no wallet to publish it under: leaving it out would understate
    what the platform owes."""
    # A wallet's frozen sub-balance (deposits the risk rules held back) is owed too: it
    # counts under its wallet with the spendable balance.
    rows = (await session.execute(
        select(LedgerAccount.id, Wallet.id, LedgerAccount.credits_posted,
               LedgerAccount.debits_posted)
        .select_from(LedgerAccount)
        .outerjoin(Wallet, (Wallet.ledger_account_id == LedgerAccount.id)
                   | (Wallet.frozen_ledger_account_id == LedgerAccount.id))
        .where(LedgerAccount.kind.in_([k.value for k in WALLET_KINDS]),
               LedgerAccount.asset == asset,
               LedgerAccount.credits_posted != LedgerAccount.debits_posted)
    )).all()
    balances: dict[str, int] = {}
    for account_id, wallet_id, credits, debits in rows:
        if wallet_id is None:
            raise CannotPublish(f"ledger account #{account_id} holds {credits - debits} msat of "
                                "customer money but belongs to no wallet")
        balances[wallet_id] = balances.get(wallet_id, 0) + int(credits) - int(debits)
    return balances


async def store_round(session: AsyncSession, *, round_id: str, asset: str,
                      publication: Publication) -> LiabilityRound:
    """Keep a published round and every proof in it (the API serves the latest)."""
    root = publication.root
    row = LiabilityRound(id=round_id, asset=asset, height=root["height"], root=root["root"],
                         total_msat=root["total_msat"], leaves=root["leaves"],
                         accounts=len(publication.proofs), created_at=utcnow())
    session.add(row)
    await session.flush()
    session.add_all([
        LiabilityProof(round_id=round_id, wallet_id=wallet_id,
                       balance_msat=proof["balance_msat"],
                       proof=json.dumps(proof, separators=(",", ":")))
        for wallet_id, proof in publication.proofs.items()])
    await session.flush()
    return row


def root_object(row: LiabilityRound) -> dict[str, Any]:
    """A stored round as its ``root.json``."""
    return {"root": row.root, "total_msat": row.total_msat, "height": row.height,
            "leaves": row.leaves}


async def latest_proof(session: AsyncSession, *, wallet_id: str, asset: str = "BTC"
                       ) -> tuple[LiabilityRound, Mapping[str, Any]]:
    """The latest round of ``asset`` and ``wallet_id``'s proof in it. :class:`NotFound` if
    nothing was published yet, or the wallet had no balance in that round (it is then not
    in the tree, and there is nothing to prove)."""
    latest = (await session.execute(
        select(LiabilityRound).where(LiabilityRound.asset == asset)
        .order_by(LiabilityRound.created_at.desc(), LiabilityRound.id.desc()).limit(1)
    )).scalar_one_or_none()
    if latest is None:
        raise NotFound("no proof of liabilities has been published yet")
    proof = await session.get(LiabilityProof, (latest.id, wallet_id))
    if proof is None:
        raise NotFound(f"wallet {wallet_id!r} had no balance in the latest proof of "
                       f"liabilities (block height {latest.height}), so it is not in the tree")
    loaded: Mapping[str, Any] = json.loads(proof.proof)
    return latest, loaded
