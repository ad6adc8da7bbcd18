"""Custody: how the platform holds customers' coins and shows that it does (tiers, sweeps,
cold storage, proofs of reserves and of liabilities). Import the modules themselves; this
package re-exports nothing."""
