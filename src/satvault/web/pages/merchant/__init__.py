"""The merchant dashboard: pages under ``/dashboard/m/{merchant_id}/…``, each acting as the
merchant's :class:`~satvault.accounts.service.Principal` through the API's own services."""
