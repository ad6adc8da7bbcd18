"""The hosted checkout page: ``/i/{invoice_id}``, where a shop's customer pays an invoice.

:mod:`satvault.checkout.page` renders it, its own CSS and script included (nothing is loaded
from anywhere else); :mod:`satvault.web.routes.checkout` serves it.
"""
