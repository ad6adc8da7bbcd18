"""Merchant invoices: a store asks for an amount (BTC, sats or fiat at a locked rate), the
customer pays on-chain and/or over Lightning, the invoice follows the payments."""
