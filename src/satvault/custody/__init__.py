"""Custody: the platform's coins in tiers, and proofs that it holds what it owes.

* ``sweeps``: confirmed deposit coins consolidated into the semi-cold wallet (pays
  withdrawals, key in the hot signer) and the cold wallet (a multisig whose keys never touch
  a networked machine), by ratio, floor and ceiling;
* ``refill``: a semi-cold wallet under its floor asks the cold cosigners for coins (an unsigned
  PSBT that moves nothing until enough signatures come back);
* ``status``: each tier's coins against its ledger account and the liabilities;
* the cold ceremony, proof of reserves (BIP127) and proof of liabilities (a Merkle-sum tree).

The moves themselves go through the payout job's state machine (``payouts.job``): signed,
broadcast, tracked, bumped and booked like payouts, crash-safe in every state. Import the
modules themselves; this package re-exports nothing.
"""
