"""Withdrawal policy (maker-checker, issue 12 §4).

Ordered rules over a withdrawal (amount per transaction and per time window, rail, asset,
the paying wallet's account group, whether the destination is on the wallet's allow-list
past its cool-down) decide: allow, block, or require N approvals from an approver group.
:func:`~satvault.withdrawals.service.withdraw` asks after the hold is placed; a block rolls
the unit of work back (nothing held), a required approval leaves the withdrawal in
``awaiting_approval`` with its hold until approvers release it, reject it, or its window
expires. The policy itself changes only by a proposal one admin makes and another approves.

Modules: :mod:`.core` (pure: rules and decisions), :mod:`.models` (tables),
:mod:`.service` (versions, groups, allow-list, the decision for one withdrawal),
:mod:`.approvals` (hold, approve, reject, expire), :mod:`.errors`.
"""
