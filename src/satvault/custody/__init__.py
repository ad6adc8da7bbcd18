"""Custody: the deposit, hot and cold tiers, the cold PSBT ceremony, proofs of reserves."""
