"""The operator's admin console (issue 14 §3): pages under ``/admin``, each for an admin whose
second factor passed in this session (:data:`~satvault.web.pages.deps.PageAdmin`), each
action CSRF-protected and done through the same services as the admin API, as the admin."""
