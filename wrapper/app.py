"""The wrapper: an OpenAI-compatible front door in front of LiteLLM.

Each route reads as the request flow of ../DESIGN.md; each step is one call
into the module that owns that concern.
"""

from __future__ import annotations

import asyncio
import gc
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from starlette.responses import Response

from wrapper.audit.api import audit_router
from wrapper.audit.checkpoints import checkpoint_all, checkpoint_periodically
from wrapper.audit.middleware import AuditMiddleware, request_context
from wrapper.audit.signing import gateway_signer
from wrapper.audit.spool import Spool
from wrapper.audit.store import AuditStore, make_engine
from wrapper.audit.writer import AuditWriter
from wrapper.auth import authenticate
from wrapper.auth.oidc import JwksCache
from wrapper.context import RequestContext
from wrapper.costs import costs_router
from wrapper.errors import GatewayError, install_error_handlers
from wrapper.gateway_config import ConfigStore, Role
from wrapper.log_context import tenant_var
from wrapper.logs import configure_logging
from wrapper.metrics import GatewayMetrics
from wrapper.pii import PiiScanner, protect
from wrapper.proxy import forward
from wrapper.request_body import parse_chat_request, parse_embeddings_request, parse_request
from wrapper.request_id import RequestIdMiddleware
from wrapper.routing import ModelCatalog
from wrapper.settings import Settings, get_settings
from wrapper.stream_usage import StreamUsageCounter
from wrapper.streaming import wait_for_disconnect
from wrapper.tracing import TracingMiddleware, configure_tracing, step
from wrapper.upstream import LiteLLMClient


# The wrapper's tracing is its own (wrapper.tracing: a span per request and per step) and its metrics are
# Prometheus'. FastAPI's built-in telemetry would add a second request span and a span per dependency and
# serialization (a fifth fewer requests per second when traced), and would export exceptions with their
# stack traces to any OpenTelemetry log exporter.
NO_FASTAPI_TELEMETRY = {"tracing": False, "metrics": False, "logs": False, "operation_spans": False}


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    configure_logging()
    configure_tracing()
    if not settings.internal_secret:
        raise RuntimeError(
            "GATEWAY_INTERNAL_SECRET is not set: LiteLLM would refuse every request. "
            "Start the pair with `gateway up`, which generates it."
        )
    secret = settings.internal_secret.encode()
    litellm = LiteLLMClient(settings.litellm_url, settings.litellm_master_key, settings.upstream_timeout_seconds)
    gateway_config = ConfigStore(settings.config)
    catalog = ModelCatalog.from_litellm_config(settings.litellm_config)  # what LiteLLM serves, as it reads it
    jwks = JwksCache()
    audit_store = AuditStore(make_engine(settings.database_url))
    audit_writer = AuditWriter(audit_store, Spool(settings.audit_spool))
    signer = gateway_signer(settings)
    pii_scanner = PiiScanner(settings.pii_ner_model)  # recognizers built once, at start
    metrics = GatewayMetrics(settings.metrics_users)
    usage_counter = StreamUsageCounter(litellm)  # for streams cut short, which never report their usage

    async def admit_caller(request: Request, role: Role) -> RequestContext:
        """Authenticate (API key or SSO token) and check the role, before the body is even read."""
        ctx = request_context(request.scope)
        config = gateway_config.current()
        ctx.principal = await authenticate(request.headers, config, jwks)
        ctx.tenant = config.tenants[ctx.principal.tenant]
        tenant_var.set(ctx.principal.tenant)
        ctx.principal.require(role)
        return ctx

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await litellm.start()
        await audit_writer.start()
        # Everything loaded so far (Presidio, spaCy, SQLAlchemy, the config) lives as long as the process: take
        # it out of the garbage collector's reach. A full collection walked ~200,000 objects (106 ms, stalling
        # every request in flight); after the freeze it walks only what requests leave behind.
        gc.freeze()
        checkpoints = asyncio.create_task(
            checkpoint_periodically(audit_store, signer, settings.audit_checkpoint_seconds))
        yield
        checkpoints.cancel()
        await audit_writer.close()  # every queued record is written before the process ends
        await checkpoint_all(audit_store, signer)
        await audit_store.close()
        await litellm.aclose()

    app = FastAPI(title="LLM gateway", lifespan=lifespan, docs_url=None, redoc_url=None, telemetry=NO_FASTAPI_TELEMETRY)
    install_error_handlers(app)
    # 8. every request's record, whatever its fate, and the metrics counted from it
    app.add_middleware(AuditMiddleware, writer=audit_writer, observers=(metrics.observe,))
    app.add_middleware(TracingMiddleware)  # a span per request, continuing the client's traceparent
    app.add_middleware(RequestIdMiddleware)

    async def model_call(request: Request, path: str, parse_body) -> Response:
        """The request flow of every model call, in order."""
        with step("authenticate"):
            ctx = await admit_caller(request, Role.app)  # 1. authenticate
        # Every field checked against the route's allow-list (and the tenant's own extra fields), nesting bounded.
        raw = await read_body(request, settings.max_body_bytes)
        ctx.body = body = await parse_request(parse_body, raw, ctx.tenant.fields.for_endpoint(ctx.principal.endpoint))
        # 2. limits and budget, 3. input guardrails: later issues slot in here.
        with step("pii"):
            restorer = await protect(ctx, body, pii_scanner)  # 4. PII: redact or pseudonymize in place, or block
        ctx.model_group = catalog.route(ctx.tenant, body["model"])  # 5. route: aliases, the tenant's allow-list
        # 6. cache layers slot in here.
        # 7-8. LiteLLM, and the response path (the audit middleware commits the record before the answer ends)
        return await forward(litellm, path, body, ctx, secret, restorer=restorer, usage_counter=usage_counter,
                             client_gone=lambda: wait_for_disconnect(request.receive))

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        return await model_call(request, "/v1/chat/completions", parse_chat_request)

    @app.post("/v1/embeddings")
    async def embeddings(request: Request) -> Response:
        return await model_call(request, "/v1/embeddings", parse_embeddings_request)

    @app.get("/v1/models")
    async def models(request: Request) -> Response:
        ctx = await admit_caller(request, Role.app)
        status, content = await litellm.get("/v1/models")
        if status != 200:
            raise GatewayError(502, "The model router could not list models.", code="upstream_error")
        return Response(catalog.listing_for(content, ctx.tenant), media_type="application/json")

    app.include_router(audit_router(audit_store, signer, admit_caller))  # compliance reads the log
    app.include_router(costs_router(audit_store.engine, admit_caller))  # finance reads the spend

    @app.get("/metrics")
    async def prometheus(request: Request) -> Response:
        return metrics.scrape(request, settings.metrics_token)

    @app.get("/healthz")
    async def healthz() -> dict:
        if not audit_writer.alive:  # nothing can be answered without it: let the orchestrator restart the process
            raise GatewayError(503, "The audit writer has stopped.", code="audit_writer_stopped")
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict:
        if not audit_writer.alive:
            raise GatewayError(503, "The audit writer has stopped.", code="audit_writer_stopped")
        try:
            status, _ = await litellm.get("/health/liveliness")
        except GatewayError:
            raise GatewayError(503, "LiteLLM is not reachable yet.", code="not_ready") from None
        if status != 200:
            raise GatewayError(503, "LiteLLM is not ready yet.", code="not_ready")
        return {"status": "ready"}

    return app


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise GatewayError(413, f"The request body is larger than {limit} bytes.", code="body_too_large")
        chunks.append(chunk)
    return b"".join(chunks)
