"""The HTTP lookup service (FastAPI).

``GET /v1/members/{member_id}/recommendations?limit=N`` returns the served list (job IDs, scores, ranks,
version, ds); unknown members get the fallback list. ``&explain=true`` adds each job's score parts when the
version was published with explanations, and an ``explanations`` note either way (FastAPI's route: the fast
path below takes only ``limit``). ``GET /healthz`` pings Redis and names the served
version. The OpenAPI document (``/openapi.json``) types ``member_id`` as an integer and documents every answer:

- 400 ``{"detail": ...}``: ``member_id`` is not a non-negative 64-bit integer (whatever the input: text, a
  fraction, 5,000 digits);
- 401 ``{"detail": ...}``: a bearer token is required (``api_token`` set) and the request lacks it;
- 422: ``limit`` out of range or not an integer (FastAPI's validation body);
- 503 ``{"detail": ...}``: Redis is down, hung (no answer within ``redis_timeout`` seconds), refuses our
  credentials, holds an unreadable list, or nothing is published yet. Never a 500.

The Redis client is built in the lifespan handler and injected with ``Depends``. Run it with
``jobrec serve`` (binds 127.0.0.1 by default), which builds the app from the pipeline's settings: this package
imports nothing from ``pipeline`` (tests/test_import_layering.py).

Lookups take a fast path (:class:`FastLookups`, a pure ASGI layer the app calls before Starlette's
middleware stack and FastAPI's routing): a well-formed ``GET /v1/members/{id}/recommendations`` (an ID that
parses, no query or just ``limit`` in range, the exact bearer header when a token is set) is answered
without the stack's wrappers, FastAPI's per-request dependency solving and response-model validation, its
JSON rendered once with orjson. Every other request (anything malformed, unauthorised, other endpoints)
goes through FastAPI as before, and a failed lookup maps to the same 503 bodies through
:func:`store_error_detail`, so the answers are the same either way. Concurrent lookups share Redis round
trips (:class:`~serving_store.lookup.AsyncLookup` batches them).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import re
import secrets
from collections.abc import Callable
from typing import Annotated, Any, Literal

import orjson
import redis
from fastapi import Depends, FastAPI, Path, Query, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, BeforeValidator

from serving_store.codec import CodecError
from serving_store.connection import (
    ServingStoreUnavailable,
    connect_async,
    is_auth_error,
    redact_url,
    resolve_url,
)
from serving_store.keys import Keys
from serving_store.lookup import (
    INT64_MAX,
    AsyncLookup,
    InvalidMemberId,
    NothingPublished,
    Recommendations,
    StoreTimeout,
    parse_member_id,
    within,
)
from serving_store.report_files import add_report_routes, reports_folder

log = logging.getLogger(__name__)

MAX_LIMIT = 1000
DEFAULT_REDIS_TIMEOUT = 0.5  # seconds a request waits for Redis before answering 503


class ErrorBody(BaseModel):
    """The body of every 400, 401 and 503 answer."""

    detail: str


class Recommendation(BaseModel):
    rank: int
    job_id: int
    score: float
    parts: dict[str, float] | None = None


class ExplanationsNote(BaseModel):
    """With ``explain=true``: whether the list carries each score's parts, and why not."""

    published: bool
    note: str


class RecommendationsBody(BaseModel):
    """A member's served list; ``source`` is ``fallback`` for a member without a list of their own. With
    ``explain=true``, each entry's ``parts`` (score = part_global + part_member + part_job, the global part
    split into part_main, part_cross and the cos_<field> terms) when they were published, and ``explanations``."""

    member_id: int
    version: str
    ds: str
    model_version: str
    source: Literal["member", "fallback"]
    recommendations: list[Recommendation]
    explanations: ExplanationsNote | None = None


class HealthBody(BaseModel):
    """``served`` is the served version's metadata (version, ds, model_version, ...) or null."""

    status: Literal["ok"]
    served: dict[str, str] | None


# The path parameter is parsed by the one rule of ``parse_member_id`` (ASCII digits, fits int64), not by
# pydantic's lax int (which takes "5.0", "+5", "1_000"); the schema still says integer, 0..2^63-1.
MemberId = Annotated[
    int,
    Path(ge=0, le=INT64_MAX, description="the member's ID, a non-negative 64-bit integer"),
    BeforeValidator(parse_member_id),  # after Path: the schema keeps minimum/maximum
]
ERRORS = {
    400: {"model": ErrorBody, "description": "member_id is not a non-negative 64-bit integer"},
    503: {
        "model": ErrorBody,
        "description": "the serving store is unavailable (down, hung, refusing credentials, unreadable list) "
        "or nothing is published yet",
    },
}
UNAUTHORIZED = {401: {"model": ErrorBody, "description": "missing or wrong bearer token"}}


async def get_lookup(request: Request) -> AsyncLookup:
    """Dependency: the app's :class:`AsyncLookup`, built in the lifespan handler (``async``: a plain ``def``
    dependency would be run in a worker thread on every request)."""
    return request.app.state.lookup


LookupDep = Annotated[AsyncLookup, Depends(get_lookup)]


_BEARER = HTTPBearer(auto_error=False, description="the service's token (JOBREC_API_TOKEN)")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]


def _bearer_check(token: str):
    """A dependency answering 401 unless the request carries ``Authorization: Bearer <token>``."""

    async def require_token(credentials: Credentials) -> None:
        given = credentials.credentials if credentials and credentials.scheme.lower() == "bearer" else ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            raise _Unauthorized()

    return require_token


class _Unauthorized(Exception):
    pass


def store_error_detail(exc: BaseException) -> str | None:
    """The 503 ``detail`` for a failed lookup or health check, or ``None`` when ``exc`` is not a serving-store
    failure (then it is a bug: a 500). The one mapping behind the exception handlers and the fast path."""
    if isinstance(exc, NothingPublished | StoreTimeout | ServingStoreUnavailable):
        return str(exc)
    if isinstance(exc, CodecError):
        return f"stored list is unreadable: {exc}"
    if isinstance(exc, redis.RedisError):
        if is_auth_error(exc):
            return f"serving store unavailable: Redis refused the credentials ({exc}); check REDIS_URL"
        return f"serving store unavailable: {exc}"
    return None


def recommendations_json(recs: Recommendations) -> bytes:
    """The 200 body of a lookup (:class:`RecommendationsBody`), rendered by orjson: the same JSON document
    FastAPI renders from ``recs.as_dict()`` through the response model, without the per-request validation."""
    return orjson.dumps(recs.as_dict())


_MEMBER_PATH = re.compile(r"/v1/members/([^/]+)/recommendations")
_LIMIT_QUERY = re.compile(rb"limit=([0-9]{1,4})")
_JSON_HEADERS = [(b"content-type", b"application/json")]


class FastLookups:
    """Pure ASGI layer answering well-formed lookups itself; everything else goes to ``app`` (FastAPI).

    Taken here: ``GET /v1/members/{member_id}/recommendations`` without a ``root_path``, whose ``member_id``
    :func:`parse_member_id` accepts, whose query string is empty or exactly ``limit=N`` with
    1 <= N <= ``MAX_LIMIT``, and, when ``api_token`` is set, whose first ``Authorization`` header is exactly
    ``Bearer <api_token>``. Such a request gets what the FastAPI route would answer: 200 with the list, or
    503 with :func:`store_error_detail` (other exceptions propagate: a 500, as in FastAPI). Anything else (a
    bad ID or limit, a missing or differently spelled token, HEAD, other paths) is passed on unchanged, so
    FastAPI's answers (400, 401, 422, ...) stay the only ones.

    ``lookup`` returns the app's :class:`AsyncLookup` (built at start-up), whose ``timeout`` bounds the wait.
    """

    def __init__(
        self, app: Any, *, lookup: Callable[[], AsyncLookup], default_limit: int, api_token: str | None = None
    ) -> None:
        self.app = app
        self.lookup = lookup
        self.default_limit = default_limit
        self.bearer = f"Bearer {api_token}".encode() if api_token else None

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        request = self._parse(scope) if scope["type"] == "http" else None
        if request is None:
            await self.app(scope, receive, send)
            return
        member, limit = request
        try:
            recs = await self.lookup().get(member, limit)
        except Exception as exc:
            detail = store_error_detail(exc)
            if detail is None:
                raise
            status, body = 503, orjson.dumps({"detail": detail})
        else:
            status, body = 200, recommendations_json(recs)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-length", str(len(body)).encode()), *_JSON_HEADERS],
            }
        )
        await send({"type": "http.response.body", "body": body})

    def _parse(self, scope: dict) -> tuple[int, int] | None:
        """(member ID, limit) of a request this layer answers, else ``None``."""
        if scope["method"] != "GET" or scope.get("root_path"):
            return None
        match = _MEMBER_PATH.fullmatch(scope["path"])
        if match is None:
            return None
        query = scope.get("query_string", b"")
        if query:
            limit_match = _LIMIT_QUERY.fullmatch(query)
            if limit_match is None:
                return None
            limit = int(limit_match.group(1))
            if not 1 <= limit <= MAX_LIMIT:
                return None
        else:
            limit = self.default_limit
        if self.bearer is not None:
            given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
            if not secrets.compare_digest(given, self.bearer):
                return None
        try:
            return parse_member_id(match.group(1)), limit
        except InvalidMemberId:
            return None


class LookupService(FastAPI):
    """The service's FastAPI app with :class:`FastLookups` in front of Starlette's middleware stack: a
    lookup it takes skips the stack's per-request wrappers (the error middleware's ``send`` wrapper, the
    exception middleware, the router); the rest, and the lifespan, go through ``FastAPI.__call__``."""

    def __init__(self, *, default_limit: int, api_token: str | None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._front = FastLookups(
            functools.partial(FastAPI.__call__, self),
            lookup=lambda: self.state.lookup,
            default_limit=default_limit,
            api_token=api_token,
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        await self._front(scope, receive, send)


def create_app(
    settings_or_url,
    *,
    keys: Keys | None = None,
    default_limit: int = 100,
    retries: int = 3,
    redis_timeout: float = DEFAULT_REDIS_TIMEOUT,
    api_token: str | None = None,
    reports_dir=None,
) -> FastAPI:
    """The FastAPI app serving lists from the Redis of ``settings_or_url`` (``Settings`` or a URL).

    Args:
        redis_timeout: seconds a request waits for Redis (retries of dropped connections included) before
            it answers 503. The client itself has no socket timeout (see the lifespan handler); the start-up
            check gives up after ``(retries + 1) * redis_timeout + 2`` seconds with
            :class:`~serving_store.connection.ServingStoreUnavailable`.
        api_token: when set, every endpoint but the OpenAPI document and docs answers 401 unless the
            request carries ``Authorization: Bearer <api_token>``; ``None`` means no authentication.
        reports_dir: the run report pages served read-only at ``/reports/`` (default ``<settings.home>/reports``
            for a ``Settings``; none for a URL), see :mod:`serving_store.report_files`.
    """
    if redis_timeout <= 0:
        raise ValueError(f"redis_timeout must be > 0 seconds; got {redis_timeout}")

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        url = resolve_url(settings_or_url)
        # No socket timeout on the client: every use is bounded by ``within`` (the request's budget), whose
        # cancellation makes redis-py drop the connection. A socket timeout would add an ``asyncio.wait_for``
        # to every command, a Task of its own on Python 3.11: a tenth of a lookup's CPU time (measured in
        # process: 259 against 299 µs per request, means of 4 alternating runs).
        startup_budget = (retries + 1) * redis_timeout + 2.0
        try:
            client = await asyncio.wait_for(
                connect_async(
                    url,
                    retries=retries,
                    socket_timeout=None,
                    connect_timeout=min(1.0, redis_timeout),
                    client_name="jobrec-api",
                ),
                startup_budget,
            )
        except TimeoutError as exc:
            raise ServingStoreUnavailable(
                f"serving store unavailable: Redis at {redact_url(url)} did not answer within "
                f"{startup_budget:g} s at start-up; check that it is up and not paused"
            ) from exc
        app.state.lookup = AsyncLookup(client, keys, timeout=redis_timeout)
        log.info("serving recommendations from %s", redact_url(url))
        try:
            yield
        finally:
            await client.aclose()

    guard = [Depends(_bearer_check(api_token))] if api_token else []
    app = LookupService(
        title="jobrec recommendations", lifespan=lifespan, default_limit=default_limit, api_token=api_token
    )
    _add_error_handlers(app)
    responses = {**ERRORS, **(UNAUTHORIZED if api_token else {})}

    @app.get(
        "/v1/members/{member_id}/recommendations",
        response_model=RecommendationsBody,
        response_model_exclude_none=True,
        responses=responses,
        dependencies=guard,
    )
    async def recommendations(
        member_id: MemberId,
        lookup: LookupDep,
        limit: Annotated[
            int, Query(ge=1, le=MAX_LIMIT, description="at most this many jobs")
        ] = default_limit,
        explain: Annotated[
            bool, Query(description="each job's score parts (when published) and an explanations note")
        ] = False,
    ):
        try:
            # bounded by the lookup's own timeout (redis_timeout, set at start-up), as on the fast path
            return (await lookup.get(member_id, limit, explain=explain)).as_dict()
        except InvalidMemberId as exc:
            return JSONResponse(status_code=400, content={"detail": str(exc)})
        except NothingPublished as exc:
            return JSONResponse(status_code=503, content={"detail": str(exc)})

    @app.get(
        "/healthz",
        response_model=HealthBody,
        responses={503: ERRORS[503], **(UNAUTHORIZED if api_token else {})},
        dependencies=guard,
    )
    async def healthz(lookup: LookupDep):
        async def check() -> dict | None:
            await lookup.client.ping()
            return await lookup.served()

        return {"status": "ok", "served": await within(redis_timeout, check())}

    add_report_routes(app, reports_folder(settings_or_url, reports_dir), guard)
    return app


def _add_error_handlers(app: FastAPI) -> None:
    """Map every failure to its documented status: 400 bad member_id, 401, 503 for Redis trouble."""

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if any(tuple(e.get("loc", ()))[:2] == ("path", "member_id") for e in exc.errors()):
            raw = request.path_params.get("member_id", "")
            try:
                parse_member_id(raw)
                detail = f"member_id must be a non-negative 64-bit integer; got {raw[:40]!r}"
            except InvalidMemberId as bad:
                detail = str(bad)
            return JSONResponse(status_code=400, content={"detail": detail})
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(_Unauthorized)
    async def unauthorized(request: Request, exc: _Unauthorized) -> JSONResponse:
        return JSONResponse(
            status_code=401,
            content={"detail": "missing or wrong bearer token (Authorization: Bearer <JOBREC_API_TOKEN>)"},
            headers={"WWW-Authenticate": "Bearer"},
        )

    async def store_failed(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse(status_code=503, content={"detail": store_error_detail(exc) or str(exc)})

    for failure in (redis.RedisError, StoreTimeout, CodecError, ServingStoreUnavailable):
        app.add_exception_handler(failure, store_failed)
