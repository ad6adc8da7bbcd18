"""Three-way reconciliation (issue 13 §1): the ledger against itself, against the record of
what happened, and against the outside world (the chain node and the Lightning node).

Differences are named row by row, kept as incidents, raised for a person once they persist,
and never "fixed" automatically. Layer: beside ``reports`` (it reads the custody, Lightning,
payout, on-chain, ledger and audit tables; nothing below imports it).
"""

from satvault.reconcile.service import Reconciler, RunReport, reconcile_once

__all__ = ["Reconciler", "RunReport", "reconcile_once"]
