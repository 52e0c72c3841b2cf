"""The HTTP lookup service (FastAPI).

``GET /v1/members/{member_id}/recommendations?limit=N`` returns the served list (job IDs, scores, ranks,
version, ds); unknown members get the fallback list; an invalid ID is a 400 with a message. ``GET /healthz``
pings Redis and names the served version. Redis trouble is a 503 with a message, never a 500.

The Redis client is built in the lifespan handler and injected with ``Depends``. Run it with
``jobrec serve`` (binds 127.0.0.1 by default), which builds the app from the pipeline's settings: this package
imports nothing from ``pipeline`` (tests/test_import_layering.py).
"""

from __future__ import annotations

import contextlib
import logging
from typing import Annotated

import redis
from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import JSONResponse

from serving_store.codec import CodecError
from serving_store.connection import ServingStoreUnavailable, connect_async, redact_url, resolve_url
from serving_store.keys import Keys
from serving_store.lookup import AsyncLookup, InvalidMemberId, NothingPublished

log = logging.getLogger(__name__)

MAX_LIMIT = 1000


def get_lookup(request: Request) -> AsyncLookup:
    """Dependency: the app's :class:`AsyncLookup`, built in the lifespan handler."""
    return request.app.state.lookup


LookupDep = Annotated[AsyncLookup, Depends(get_lookup)]


def create_app(
    settings_or_url, *, keys: Keys | None = None, default_limit: int = 100, retries: int = 3
) -> FastAPI:
    """The FastAPI app serving lists from the Redis of ``settings_or_url`` (``Settings`` or a URL)."""

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        url = resolve_url(settings_or_url)
        client = await connect_async(
            url, retries=retries, socket_timeout=2.0, connect_timeout=1.0, client_name="jobrec-api"
        )
        app.state.lookup = AsyncLookup(client, keys)
        log.info("serving recommendations from %s", redact_url(url))
        try:
            yield
        finally:
            await client.aclose()

    app = FastAPI(title="jobrec recommendations", lifespan=lifespan)

    @app.exception_handler(redis.RedisError)
    async def redis_down(request: Request, exc: redis.RedisError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"serving store unavailable: {exc}"})

    @app.exception_handler(CodecError)
    async def unreadable(request: Request, exc: CodecError) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": f"stored list is unreadable: {exc}"})

    @app.exception_handler(ServingStoreUnavailable)
    async def store_down(request: Request, exc: ServingStoreUnavailable) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/v1/members/{member_id}/recommendations")
    async def recommendations(
        member_id: str,
        lookup: LookupDep,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="at most this many jobs")
        ] = default_limit,
    ):
        try:
            return (await lookup.get(member_id, limit)).as_dict()
        except InvalidMemberId as exc:
            return JSONResponse(status_code=400, content={"detail": str(exc)})
        except NothingPublished as exc:
            return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get("/healthz")
    async def healthz(lookup: LookupDep):
        await lookup.client.ping()
        served = await lookup.served()
        return {"status": "ok", "served": served}

    return app
