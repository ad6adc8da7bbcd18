"""The HTTP edge: the FastAPI app factory, dependencies and error mapping."""

from satvault.web.app import create_app

__all__ = ["create_app"]
