"""Withdrawals: the one path every withdrawal takes, whatever it pays.

It sits above the two ways money leaves: ``payouts`` (the withdrawal record, the daily
limit, on-chain payout batches) and ``lightning`` (sending over Lightning, settling our own
invoices internally, LNURL). Routes and refunds call :func:`~satvault.withdrawals.service.withdraw`
after :func:`~satvault.withdrawals.service.prepare_destination` has done the remote part.
"""
