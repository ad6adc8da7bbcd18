"""The rules engine (issue 12 §1): rules as data, scored against windowed features of the
account's own history, deciding approve / review / reject for every withdrawal before its
hold is placed, and for every deposit as it is credited (a held-back one lands in the
wallet's frozen sub-balance: :mod:`satvault.risk.frozen`); sanctions and operator label lists;
every decision stored and explainable; the cases review and reject decisions open, worked and
decided (:mod:`satvault.risk.cases`, whose decision alone moves held money) and their SAR
drafts (:mod:`satvault.risk.sar`).

Layer: between ``withdrawals`` (which calls it) and ``lightning`` (whose models and checks it
reads, with the payout and on-chain ones).
"""

from satvault.risk.errors import RiskError, RiskRejected, RuleSetRefused
from satvault.risk.features import Event
from satvault.risk.rules import Outcome
from satvault.risk.service import Screening, decision_insert, record, reject_error, screen

__all__ = ["Event", "Outcome", "RiskError", "RiskRejected", "RuleSetRefused", "Screening",
           "decision_insert", "record", "reject_error", "screen"]
