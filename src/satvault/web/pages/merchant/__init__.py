"""The merchant dashboard, ``/dashboard/m/{merchant_id}/…``: one module per area."""
