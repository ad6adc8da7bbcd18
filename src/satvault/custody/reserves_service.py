"""Proofs of reserves from the platform's books: which coins, and who signs what.

:func:`reserve_coins` reads the coins to prove (confirmed, unspent outputs paid to the hot
and the cold wallets, as the chain watcher recorded them); :func:`prove_reserves` builds
the BIP127 proof over them (:mod:`satvault.custody.reserves`), has the hot signer sign the
hot coins, and returns the proof finalized when there are no cold coins, or the partially
signed PSBT the cosigners sign next (``satvault cold sign``, then
``satvault reserves finalize``).

The database is read in one short transaction, before the signer is asked (network calls
never run inside a unit of work).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from satvault.custody.cold import ColdInput, ColdWallet
from satvault.custody.errors import ProofError
from satvault.custody.reserves import build_proof, finalize_proof
from satvault.onchain.models import (
    OnchainAddress,
    OnchainPayment,
    OnchainPaymentStatus,
    OnchainWallet,
)
from satvault.signing.base import Signer
from satvault.signing.psbt import PsbtInput, accounts_from_descriptors

__all__ = ["ProofDraft", "ReserveCoins", "prove_reserves", "reserve_coins"]

ROLES = ("hot", "cold")


@dataclass(frozen=True, slots=True)
class ReserveCoins:
    hot: tuple[PsbtInput, ...]
    cold: tuple[ColdInput, ...]
    cold_descriptor: str | None

    @property
    def total_sat(self) -> int:
        return sum(c.value_sat for c in self.hot) + sum(c.value_sat for c in self.cold)


async def reserve_coins(session: AsyncSession) -> ReserveCoins:
    rows = (await session.execute(
        select(OnchainPayment, OnchainAddress, OnchainWallet.role)
        .join(OnchainAddress, OnchainAddress.id == OnchainPayment.address_id)
        .join(OnchainWallet, OnchainWallet.id == OnchainAddress.wallet_id)
        .where(OnchainWallet.role.in_(ROLES),
               OnchainPayment.status == OnchainPaymentStatus.CONFIRMED,
               OnchainPayment.spent_by.is_(None))
        .order_by(OnchainWallet.role.desc(), OnchainPayment.id))).all()
    hot, cold = [], []
    for pay, addr, role in rows:
        if role == "hot":
            hot.append(PsbtInput(pay.txid, pay.vout, pay.value_sat,
                                 bytes.fromhex(pay.script_pubkey), "hot", addr.chain, addr.idx))
        else:
            cold.append(ColdInput(pay.txid, pay.vout, pay.value_sat, addr.chain, addr.idx,
                                  bytes.fromhex(pay.script_pubkey)))
    descriptor = (await session.execute(select(OnchainWallet.descriptor).where(
        OnchainWallet.role == "cold"))).scalar_one_or_none()
    return ReserveCoins(tuple(hot), tuple(cold), descriptor)


@dataclass(frozen=True, slots=True)
class ProofDraft:
    psbt_b64: str  # finalized (complete) or waiting for the cosigners
    complete: bool
    total_sat: int
    hot_coins: int
    cold_coins: int
    raw_hex: str | None = None


async def prove_reserves(sessions: async_sessionmaker[AsyncSession], signer: Signer, *,
                         message: str, network: str) -> ProofDraft:
    async with sessions() as session:
        coins = await reserve_coins(session)
    if not coins.hot and not coins.cold:
        raise ProofError("no confirmed, unspent hot or cold coins to prove")
    wallet = ColdWallet.from_descriptor(coins.cold_descriptor, network) \
        if coins.cold_descriptor else None
    accounts = accounts_from_descriptors(await signer.descriptors(), network) \
        if coins.hot else None
    psbt = build_proof(message, hot=coins.hot, cold=coins.cold, hot_accounts=accounts,
                       cold_wallet=wallet, network=network)
    if coins.hot:
        psbt = await signer.sign_reserves(psbt, message)
    if coins.cold:
        return ProofDraft(psbt, False, coins.total_sat, len(coins.hot), len(coins.cold))
    final = finalize_proof([psbt], cold_wallet=None)
    return ProofDraft(final.psbt_b64, True, coins.total_sat, len(coins.hot), 0, final.raw_hex)
