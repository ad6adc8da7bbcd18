"""The FastAPI app factory: the HTTP edge (routers, problem mapping, guards, rate limits, docs)
mounted on one composition root (:class:`satvault.composition.Platform`)."""

from __future__ import annotations

import gc
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from satvault import __version__
from satvault.composition import Platform, Runtime
from satvault.config import Settings, get_settings
from satvault.kernel.grouped import GroupedUnits
from satvault.logs import configure_logging, get_logger
from satvault.web.deps import PrincipalCache
from satvault.web.docs import install_docs
from satvault.web.guard import InputGuard
from satvault.web.httpmetrics import HttpMetrics
from satvault.web.openapi import install_openapi
from satvault.web.pages import PAGE_ROUTERS
from satvault.web.pages.signin import error_page, install_page_redirects
from satvault.web.problems import install_problem_handlers
from satvault.web.ratelimit import PublicLimit, install_rate_limits
from satvault.web.routes import ROUTERS
from satvault.web.streamslots import install_stream_slots

log = get_logger(__name__)

__all__ = ["api_app", "create_app"]


def create_app(settings: Settings | None = None, *, engine: AsyncEngine | None = None,
               start_workers: bool = True, runtime: Runtime | None = None,
               api_only: bool = False, serving: bool = False) -> FastAPI:
    """The app, around one :class:`~satvault.composition.Platform` whose start and stop are
    the app's lifespan. With ``start_workers`` it also runs the background workers (the chain
    watcher and payout job need a :class:`Runtime`, built from the settings if not given).
    ``api_only``: no workers, but a runtime (node connections, rates) for the endpoints that
    need one: one of several API processes beside a process running the workers.
    ``serving``: this app is the process's one (``satvault serve``): once started, it tunes
    the process's garbage collector (:func:`tune_gc`)."""
    settings = settings or get_settings()
    platform = Platform.wire(settings, engine=engine, runtime=runtime)
    engine, sessions = platform.engine, platform.sessions

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await platform.start(workers=start_workers, runtime=api_only)
        app.state.runtime = platform.runtime
        app.state.workers = platform.workers
        app.state.live = platform.live
        if serving:
            tune_gc(settings)
        try:
            yield
        finally:
            await stream_slots.close()  # open streams end with the server: slots given back
            await platform.stop()
            if limiter is not None:
                await limiter.close()

    app = FastAPI(title="satvault", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None,  # web.docs serves them without a CDN
                  description="Custodial Bitcoin and Lightning payments. Amounts are integers "
                              "in the asset's smallest unit (msat for BTC).")
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.principals = PrincipalCache(settings.api_key_cache_seconds)
    app.state.workers = []
    app.state.runtime = runtime
    app.state.live = None
    app.state.outbox_feed = platform.outbox_feed
    app.state.grouped_units = GroupedUnits(sessions) if settings.payment_group_commit else None
    install_problem_handlers(app)
    limiter = install_rate_limits(app, settings)
    stream_slots = install_stream_slots(app, settings)
    app.add_middleware(InputGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(HttpMetrics)
    install_openapi(app)
    install_docs(app)
    for router in ROUTERS:
        app.include_router(router)
    app.state.page_errors = error_page
    for router in PAGE_ROUTERS:
        app.include_router(router)
    install_page_redirects(app)

    @app.get("/healthz", tags=["ops"], dependencies=[PublicLimit],
             responses={503: {
        "description": "Degraded: the same report, with what failed.",
        "content": {"application/json": {"schema": {"type": "object"}}}}})
    async def healthz(request: Request) -> JSONResponse:
        checks: dict[str, Any] = {"version": __version__}
        ok = True
        try:
            async with engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
            checks["database"] = "ok"
        except Exception as exc:  # a health endpoint reports, it does not raise
            ok = False
            checks["database"] = f"error: {type(exc).__name__}"
        checks["workers"] = {w.name: {"runs": w.runs, "last_error": w.last_error}
                             for w in request.app.state.workers}
        rt = request.app.state.runtime
        if rt is not None:
            # backend: what runs (the settings' choice, "simnet" for the simulators);
            # adapter: the protocol satvault speaks to it.
            chain = {"backend": rt.settings.chain_backend, "adapter": rt.backend.name}
            try:
                tip = await rt.backend.tip()
                checks["chain"] = {**chain, "height": tip.height}
            except Exception as exc:  # reported, not raised: the node may be down
                ok = False
                checks["chain"] = {**chain, "error": f"{type(exc).__name__}: {exc}"}
            if rt.lightning is not None:
                node = {"backend": rt.settings.lightning_backend, "adapter": rt.lightning.name}
                try:
                    info = await rt.lightning.get_info()
                    checks["lightning"] = {**node, "synced": info.synced,
                                           "network": info.network}
                except Exception as exc:  # reported, not raised
                    ok = False
                    checks["lightning"] = {**node, "error": f"{type(exc).__name__}: {exc}"}
        if any(w.last_error for w in request.app.state.workers):
            ok = False
        return JSONResponse({"status": "ok" if ok else "degraded", **checks},
                            status_code=200 if ok else 503)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    async def index() -> str:
        return (
            "<!doctype html><html lang=en><meta charset=utf-8><title>satvault</title>"
            "<body style='font-family:system-ui;max-width:40em;margin:3em auto'>"
            f"<h1>satvault {__version__}</h1><p>Custodial Bitcoin and Lightning payments.</p>"
            "<ul><li><a href='/login'>Sign in: dashboard and admin console</a></li>"
            "<li><a href='/docs'>API reference (OpenAPI)</a></li>"
            "<li><a href='/healthz'>Health</a></li></ul></body></html>"
        )

    return app


def api_app() -> FastAPI:
    """The factory each of ``satvault serve --workers N``'s API processes imports: the app
    without background workers, configured from the environment like any satvault process
    (its logs included: a process uvicorn spawns starts with nothing configured)."""
    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_app(settings, start_workers=False, api_only=True, serving=True)


def tune_gc(settings: Settings) -> None:
    """A serving process's garbage collector. Everything alive once the app has started
    (modules, the app and its routes, pools, caches: long-lived) is moved out of the cyclic
    collector's generations (``gc.freeze``), so the full collections a request's short-lived
    objects trigger no longer walk the whole heap each time; objects are still freed by their
    reference counts as always. ``server_gc_gen0`` spaces the young collections."""
    if settings.server_gc_freeze:
        gc.collect()
        gc.freeze()
    gen0, gen1, gen2 = gc.get_threshold()
    if settings.server_gc_gen0 != gen0:
        gc.set_threshold(settings.server_gc_gen0, gen1, gen2)
    log.info("gc_tuned", frozen=gc.get_freeze_count(), threshold=gc.get_threshold())
