"""Checking an on-chain audit anchor: the transaction against the audit chain as it is now.

``satvault audit verify-anchor <txid>`` (and ``GET /api/v1/admin/audit/anchors/{txid}``)
read the transaction from the chain backend (before any database work), take the seq and
hash from its ``SVA1`` ``OP_RETURN`` (:mod:`satvault.signing.anchor`), seal what is pending,
then re-hash the chain from its first row up to that seq
(:func:`satvault.audit.service.verify_anchor`). The anchor holds when the transaction is
confirmed and the recomputed hash at that row is the one in the block: nothing at or before
that row was changed, removed or re-hashed since. The ``audit_anchors`` row, if there is
one, is shown beside it but is not part of the proof.
"""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.audit.anchors import anchor_dict, by_txid
from satvault.audit.service import seal_all, verify_anchor
from satvault.backends.base import ChainBackend
from satvault.kernel.errors import InvalidInput, NotFound
from satvault.signing.anchor import find_anchor

__all__ = ["check_anchor_tx"]


async def check_anchor_tx(sessions: async_sessionmaker[AsyncSession], backend: ChainBackend,
                          txid: str, *, fence_timeout: float = 5.0) -> dict[str, Any]:
    """``ok`` and what was compared; raises :class:`NotFound` / :class:`InvalidInput` when
    there is no such transaction or it carries no anchor."""
    txid = txid.strip().lower()
    if not re.fullmatch(r"[0-9a-f]{64}", txid):
        raise InvalidInput("a txid is 64 hex digits")
    status = await backend.transaction(txid)
    if status is None:
        raise NotFound(f"the chain backend does not know transaction {txid}")
    found = find_anchor((o.script_pubkey, o.value_sat) for o in status.tx.outputs)
    if found is None:
        raise InvalidInput(f"transaction {txid} carries no audit anchor (a zero-value "
                           "SVA1 OP_RETURN)")
    seq, anchored = found
    await seal_all(sessions, fence_timeout=fence_timeout)
    async with sessions() as s, s.begin():
        check = await verify_anchor(s, seq=seq, hash=anchored)
        row = await by_txid(s, txid)
        record = anchor_dict(row) if row is not None else None
    confirmed = status.confirmations > 0
    out = {**check.as_dict(), "ok": check.ok and confirmed, "txid": txid,
           "confirmations": status.confirmations, "block_height": status.block_height,
           "record": record}
    if check.ok and not confirmed:
        out["error"] = f"transaction {txid} is not confirmed yet: it proves nothing until it is"
    return out
