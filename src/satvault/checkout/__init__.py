"""The hosted checkout page: ``/i/{invoice_id}``, where a shop's customer pays an invoice.

Include :data:`router` in the app; it serves the page, its status JSON, its QR codes and its
own CSS and script (nothing is loaded from anywhere else).
"""

from satvault.checkout.routes import router

__all__ = ["router"]
