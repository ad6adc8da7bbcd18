"""HTTP request and response shapes of the edge (built on :mod:`satvault.web.fields`)."""
