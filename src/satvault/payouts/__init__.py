"""Withdrawals: request → ledger hold → batched payout transaction → signer → broadcast →
confirmation → holds posted. See ``job`` for the state machine and its failure rules."""
