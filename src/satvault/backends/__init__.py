"""Adapters to the outside world, one per file, one Protocol per capability (``base``)."""
