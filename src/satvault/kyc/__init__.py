"""KYC tiers and limits, KYC records, sanctions/PEP name screening, wallet freezes.

Placed below the payout layer (which enforces the limits on every withdrawal) and above the
chain layer (whose ``review_items`` a screening hit opens)."""
