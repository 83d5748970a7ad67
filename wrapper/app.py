"""The wrapper: an OpenAI-compatible front door in front of LiteLLM. The composition root.

A model call reads as the request flow of DESIGN.md: authenticate, read the
body against the route's allow-list, the pipeline's steps in order, then
LiteLLM, whose answer comes back through the steps' response halves. The audit
record is the outermost layer: every request leaves one, whatever its fate.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from contextlib import asynccontextmanager

import orjson
from fastapi import FastAPI, Request
from starlette.responses import Response

from wrapper.audit.api import audit_router
from wrapper.audit.checkpoints import checkpoint_all, checkpoint_periodically
from wrapper.audit.costs import costs_router
from wrapper.audit.journal import StreamJournal, spool_stranded
from wrapper.audit.middleware import AuditMiddleware
from wrapper.audit.signing import gateway_signer
from wrapper.audit.spool import Spool
from wrapper.audit.store import AuditStore, make_engine
from wrapper.audit.writer import AuditWriter, audit_state
from wrapper.auth import authenticate
from wrapper.auth.oidc import JwksCache
from wrapper.config import ConfigStore, Role
from wrapper.context import RequestContext, request_context
from wrapper.errors import GatewayError, install_error_handlers
from wrapper.observability.log_context import tenant_var
from wrapper.observability.logs import configure_logging, log_access
from wrapper.observability.metrics import GatewayMetrics
from wrapper.observability.request_id import RequestIdMiddleware
from wrapper.observability.watchdog import Watchdog
from wrapper.observability.tracing import TracingMiddleware, configure_tracing, step
from wrapper.guardrails.step import GuardrailStep
from wrapper.pii import PiiScanner, PiiStep
from wrapper.limits.budgets_api import budgets_router
from wrapper.limits.local_store import LocalLimits
from wrapper.limits.redis_store import RedisLimits
from wrapper.redis_link import RedisLink
from wrapper.limits.step import STORE_TIMEOUT_SECONDS, AdmitStep
from wrapper.limits.step import finish as finish_admission
from wrapper.model_routes import ModelRoutes
from wrapper.ownership import ObjectIds, OwnershipStep
from wrapper.ownership.lookups import response_lookups
from wrapper.cache.step import CacheStep
from wrapper.cache.semantic import LocalIndex, RedisIndex
from wrapper.cache.store import LocalCache, RedisCache
from wrapper.pipeline import Pipeline, decided
from wrapper.request import api_headers, read_request
from wrapper.routes import Route
from wrapper.routes.chat import ChatRoute
from wrapper.routes.completions import CompletionsRoute
from wrapper.routes.embeddings import EmbeddingsRoute
from wrapper.routes.messages import CountTokensRoute, MessagesRoute
from wrapper.routes.responses import ResponsesRoute
from wrapper.routes.single_shot import ImagesRoute, ModerationsRoute, RerankRoute, SpeechRoute
from wrapper.routes.transcriptions import TranscriptionsRoute
from wrapper.routing.catalog import ModelCatalog
from wrapper.routing.health import WINDOW_SECONDS as HEALTH_WINDOW
from wrapper.routing.health import ModelHealth
from wrapper.routing.step import ModelRoute
from wrapper.routing.tiers import AUTO, TierRoute, auto_available
from wrapper.settings import Settings, get_settings
from wrapper.upstream.client import LiteLLMClient
from wrapper.upstream.forward import Upstream
from wrapper.upstream.hedge import HedgeBudget
from wrapper.upstream.sse import wait_for_disconnect
from wrapper.upstream.stream_usage import StreamUsageCounter

# The wrapper's tracing is its own (wrapper.observability.tracing: a span per request and per step) and its metrics are
# Prometheus'. FastAPI's built-in telemetry would add a second request span and a span per dependency and
# serialization (a fifth fewer requests per second when traced), and would export exceptions with their
# stack traces to any OpenTelemetry log exporter.
NO_FASTAPI_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None, litellm: LiteLLMClient | None = None) -> GatewayApp:
    """The app; `litellm` replaces the connection to LiteLLM (the in-process tests put the fake provider there)."""
    settings = settings or get_settings()
    configure_logging()
    traced = configure_tracing()
    if not settings.internal_secret:
        raise RuntimeError(
            "GATEWAY_INTERNAL_SECRET is not set: LiteLLM would refuse every request. "
            "Start the pair with `gateway up`, which generates it."
        )
    litellm = litellm or LiteLLMClient(settings.litellm_url, settings.litellm_master_key, settings.upstream_timeout_seconds)
    gateway_config = ConfigStore(settings.config)
    jwks = JwksCache()
    audit_store = AuditStore(make_engine(settings.database_url), settings.audit_commit_timeout_seconds)
    spool = Spool(settings.audit_spool)
    audit_writer = AuditWriter(audit_store, spool, settings.audit_commit_timeout_seconds)
    journal = StreamJournal(settings.var_dir / "streams-in-flight.ndjson")
    signer = gateway_signer(settings)
    metrics = GatewayMetrics(settings.metrics_users)
    catalog = ModelCatalog.from_litellm_config(settings.litellm_config)  # what LiteLLM serves, as it reads it

    ownership = OwnershipStep(ObjectIds(signer.derived_key("gateway object ids v1")))
    redis = RedisLink(settings.redis_url, connect_timeout=0.5) if settings.redis_url else None
    limits = RedisLimits(redis, timeout=STORE_TIMEOUT_SECONDS) if redis else LocalLimits()
    usage_counter = StreamUsageCounter(litellm)
    model_health = ModelHealth()
    pipeline = Pipeline([
        ownership,  # 1b. ids of stored objects (responses): only the tenant's own, on every route that names them
        TierRoute(catalog),  # 1c. `model: auto`: the tier its task needs (before admission, which prices the model)
        AdmitStep(limits, usage_counter.group_prices, catalog.resolve),  # 2. admit: rates, concurrency, budgets
        GuardrailStep(),  # 3. input guardrails (and the output checks the answer passes on its way back)
        PiiStep(PiiScanner(settings.pii_ner_model)),  # 4. PII: redact, pseudonymize or block
        ModelRoute(catalog),  # 5. route: aliases, the tenant's allow-list
        CacheStep(RedisCache(redis) if redis else LocalCache(), signer.derived_key("gateway cache keys v1"),
                  RedisIndex(redis) if redis else LocalIndex()),  # 6. cache layers: exact, template, semantic
    ])
    upstream = Upstream(litellm, settings.internal_secret.encode(), usage_counter,
                        HedgeBudget(settings.hedge_budget_percent))

    async def admit_caller(request: Request, role: Role) -> RequestContext:
        """Authenticate (API key or SSO token) and check the role, before the body is even read."""
        ctx = request_context(request.scope)
        config = gateway_config.current()
        ctx.principal = await authenticate(request.headers, config, jwks)
        ctx.tenant = config.tenants[ctx.principal.tenant]
        ctx.policy = ctx.tenant.policy(ctx.principal.endpoint)
        tenant_var.set(ctx.principal.tenant)
        ctx.principal.require(role)
        return ctx

    async def model_call(request: Request, route: Route) -> Response:
        """The request flow of every model call, in order."""
        with step("authenticate"):
            ctx = await admit_caller(request, Role.app)  # 1. authenticate
        ctx.route = route
        ctx.body, ctx.upload = await read_request(request, route, ctx.policy.fields.allow, settings.max_body_bytes,
                                                  settings.body_timeout_seconds)
        ctx.upstream_headers = api_headers(request.headers, route.passed_headers)
        ctx.cache_control = request.headers.get("cache-control", "").lower()
        answered = await pipeline.run(ctx)  # 2-6. the steps' request halves, in order; one may answer or refuse
        if answered is not None:
            return answered
        # 7-8. LiteLLM, and the answer back through the steps' response halves (the audit record is committed
        # by the middleware before the answer ends)
        try:
            return await upstream.forward(ctx, client_gone=lambda: wait_for_disconnect(request.receive))
        finally:  # forward waits for admission before LiteLLM hears of the request; had it failed sooner, what
            await decided(ctx, failing=True)  # admission holds is still recorded and given back

    watchdog = Watchdog(settings.watchdog_seconds) if settings.watchdog_seconds else None

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await litellm.start()
        if stranded := spool_stranded(journal, spool):  # streams the last process died in: their records first
            logging.getLogger("wrapper.audit").warning("%d streams were cut by the last stop; recording them", stranded)
        await audit_writer.start()
        if watchdog:
            watchdog.start()
        # Everything loaded so far (Presidio, spaCy, SQLAlchemy, the config) lives as long as the process: take
        # it out of the garbage collector's reach. A full collection walked ~200,000 objects (106 ms, stalling
        # every request in flight); after the freeze it walks only what requests leave behind.
        gc.freeze()
        checkpoints = asyncio.create_task(
            checkpoint_periodically(audit_store, signer, settings.audit_checkpoint_seconds))
        yield
        checkpoints.cancel()
        await audit_writer.close()  # every queued record is written before the process ends
        journal.close()
        await checkpoint_all(audit_store, signer)
        if watchdog:
            watchdog.stop()
        await audit_store.close()
        await litellm.aclose()
        if redis:
            await limits.close()  # settlements still waiting go out before the connection closes
            await redis.close()

    # The API routes: compliance, finance, the model list, probes and metrics.
    # No schema, docs or redoc routes: every path served is in the README's contract (a unit test holds it).
    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                  telemetry=NO_FASTAPI_TELEMETRY)
    install_error_handlers(app)
    app.state.audit_writer = audit_writer  # for operators' debugging sessions and the probes' tests

    async def tenants_models(request: Request) -> dict:
        ctx = await admit_caller(request, Role.app)
        status, content = await litellm.get("/v1/models")
        if status != 200:
            raise GatewayError(502, "The model router could not list models.", code="upstream_error")
        listing = orjson.loads(catalog.listing_for(content, ctx.tenant))
        if auto_available(catalog, ctx):  # `model: auto` is a name it may call
            listing["data"].append({"id": AUTO, "object": "model", "created": 0, "owned_by": "gateway"})
        return listing

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        return Response(orjson.dumps(await tenants_models(request)), media_type="application/json")

    @app.get("/v1/models/{model:path}")
    async def model(request: Request, model: str) -> Response:
        """One model, as in the listing; a model the tenant may not use does not exist for it (404, not 403)."""
        for entry in (await tenants_models(request))["data"]:
            if entry["id"] == model:
                return Response(orjson.dumps(entry), media_type="application/json")
        raise GatewayError(404, f"The model '{model}' does not exist.", code="model_not_found", param="model")

    app.include_router(response_lookups(litellm, ownership, settings.internal_secret.encode(), admit_caller))
    app.include_router(audit_router(audit_store, signer, admit_caller))  # compliance reads the log
    app.include_router(costs_router(audit_store.engine, admit_caller))  # finance reads the spend
    app.include_router(budgets_router(limits, gateway_config, admit_caller, shared=redis is not None))  # and budgets

    @app.get("/v1/status/models")
    async def model_status(request: Request) -> dict:
        """Each model group's recent answers as this replica saw them (wrapper/routing/health.py): the platform's."""
        await admit_caller(request, Role.admin)
        return {"object": "list", "window_seconds": HEALTH_WINDOW, "data": model_health.snapshot()}

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        return metrics.scrape(request, settings.metrics_token)

    def check_writer() -> None:
        """Nothing can be answered without the audit writer: a stopped or stuck one fails both probes (the liveness
        probe's failure restarts the process; a wedged event loop is the watchdog's)."""
        if not audit_writer.alive:
            raise GatewayError(503, "The audit writer has stopped.", code="audit_writer_stopped")
        if audit_writer.wedged:
            raise GatewayError(503, "The audit writer is stuck.", code="audit_writer_wedged")

    @app.get("/healthz")
    async def healthz() -> dict:
        check_writer()
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        check_writer()
        audit = await audit_state(audit_writer, audit_store, gateway_config.current())
        if audit == "unavailable":  # and every tenant fails closed: this replica can answer no one
            raise GatewayError(503, "The audit store is unavailable and every tenant fails closed.",
                               code="audit_unavailable")
        try:
            status, _ = await litellm.get("/health/liveliness")
        except GatewayError:
            raise GatewayError(503, "LiteLLM is not reachable yet.", code="not_ready") from None
        if status != 200:
            raise GatewayError(503, "LiteLLM is not ready yet.", code="not_ready")
        await upstream.warm_up(catalog.some_model())  # once: the first client's call should not pay for it
        return {"status": "ready", "audit_store": audit}

    # The layers every request passes, outermost first: its id and context, its span, its audit record (8);
    # then the model calls go straight to the flow above, everything else to FastAPI.
    model_routes = {"/v1/chat/completions": ChatRoute(), "/v1/completions": CompletionsRoute(),
                    "/v1/embeddings": EmbeddingsRoute(), "/v1/moderations": ModerationsRoute(),
                    "/v1/images/generations": ImagesRoute(), "/v1/audio/speech": SpeechRoute(),
                    "/v1/responses": ResponsesRoute(), "/v1/messages": MessagesRoute(),
                    "/v1/messages/count_tokens": CountTokensRoute(), "/v1/rerank": RerankRoute(),
                    "/v1/audio/transcriptions": TranscriptionsRoute()}
    app.state.routes_served = lambda: [f"POST {path}" for path in model_routes] + [  # for the 404 of a wrong path
        f"{method.upper()} {path}" for path, methods in app.openapi()["paths"].items() for method in methods]
    served = ModelRoutes(model_routes, model_call, app)
    observers = (metrics.observe, model_health.observe, *((log_access,) if settings.access_log else ()))
    served = AuditMiddleware(served, audit_writer, observers=observers, finishers=(finish_admission,), journal=journal)
    if traced:
        served = TracingMiddleware(served)  # a span per request, continuing the client's traceparent
    return GatewayApp(RequestIdMiddleware(served), app)


class GatewayApp:
    """What uvicorn serves; `api` is the FastAPI app inside (its routes, its lifespan)."""

    def __init__(self, asgi, api: FastAPI) -> None:
        self.asgi = asgi
        self.api = api

    async def __call__(self, scope, receive, send) -> None:
        await self.asgi(scope, receive, send)
