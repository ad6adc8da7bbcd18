"""The HTTP edge: the FastAPI app factory (``web.app.create_app``), dependencies and error
mapping. Nothing is re-exported here, so importing a router never drags in the whole app."""
