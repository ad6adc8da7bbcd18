"""Lightning: invoices and their listener (receiving), payments with fee reserves and a
reconciler (sending), internal settlement between satvault wallets, LNURL."""
