"""The operator's admin console (``/admin/…``): every page needs an admin whose second factor
passed in this session (:data:`~satvault.web.pages.deps.PageAdmin`), every action carries the
session's CSRF token, and each acts through the same services as the admin API and CLI,
audited as they audit."""
