"""All configuration of the wrapper, from GATEWAY_* environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore")

    config: Path = Path("gateway.yaml")
    litellm_config: Path = Path("litellm_config.yaml")
    # Loopback by default so a laptop run is never exposed; the helm chart binds 0.0.0.0.
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    litellm_port: int = Field(4000, ge=1, le=65535)
    litellm_master_key: str | None = None
    # LiteLLM worker processes (its NUM_WORKERS). Each costs a LiteLLM's memory (~400 MB); on 2 cores, 2 workers
    # answered 1.5-1.7x the requests per second of one (bench/results/overhead.md).
    litellm_workers: int = Field(1, ge=1, le=64)
    # LiteLLM's newer HTTP handler for OpenAI-compatible deployments (EXPERIMENTAL_OPENAI_BASE_LLM_HTTP_HANDLER):
    # ~1.1-1.5 ms less CPU per request than the openai SDK path; usage, cost and streams identical in the tests.
    litellm_fast_openai_handler: bool = True
    internal_secret: str | None = None
    # LiteLLM's router owns per-model timeouts; this only stops a wedged LiteLLM holding a request forever.
    upstream_timeout_seconds: float = Field(900.0, gt=0)
    max_body_bytes: int = Field(20 * 1024 * 1024, gt=0)
    # The HTTP server's bounds (wrapper/server.py): a slow or idle client cannot hold a connection or a request
    header_timeout_seconds: float = Field(10.0, gt=0)  # a request's headers, from connecting (or its first byte)
    body_timeout_seconds: float = Field(60.0, gt=0)  # its whole body, from the end of its headers: else 408
    keep_alive_seconds: int = Field(30, ge=1)  # an idle kept-alive connection is closed after this
    max_connections: int = Field(1024, ge=1)  # beyond this many connections or requests in flight: 503 server_busy
    # SIGTERM: requests in flight (streams too) get this long to finish, then the process stops (k8s grace > it)
    shutdown_grace_seconds: int = Field(25, ge=0)
    # The process exits (70) when its event loop has not turned for this long, to be restarted (0: never)
    watchdog_seconds: float = Field(30.0, ge=0)
    # Of a replica's requests over the last minute, the share that may start a hedge (resilience.hedge_after_ms):
    # an outage must not double the load.
    hedge_budget_percent: float = Field(5.0, ge=0, le=100)
    # `gateway up` restarts a child (LiteLLM, the wrapper) that dies, at most this many times in any minute; once
    # more, it gives up and exits non-zero (so Kubernetes restarts the pod). 0: never restart.
    restarts_per_minute: int = Field(5, ge=0, le=100)
    var_dir: Path = Path("var")  # the embedded default's state: SQLite file, signing key, audit spool
    # The audit store: PostgreSQL (postgresql+asyncpg://...) in production; unset, a SQLite file in var_dir.
    database_url: str = ""
    # Redis for limits and budgets shared by every replica; unset, they are kept in process (one replica).
    redis_url: str | None = None
    audit_signing_key: str | None = None  # base64 Ed25519 seed; generated in var_dir when unset
    audit_checkpoint_seconds: float = Field(60.0, gt=0)  # how often each chain's head is signed
    # The longest a request waits for its audit record to be committed (a locked, slow or unreachable store);
    # then it is spooled and the tenant's `audit.on_store_failure` decides: closed 503, open answered.
    audit_commit_timeout_seconds: float = Field(2.0, gt=0, le=60)
    audit_spool: Path | None = None  # where records wait while the store is down; default var_dir
    # A line per request from LiteLLM (its access log, and what the gateway's callback admitted).
    # Off by default: the audit log is the per-request record, and each line costs a process wake-up.
    log_requests: bool = False
    # The wrapper's own line per request (JSON: tenant, path, status, model, tokens, cost, latency; never content).
    access_log: bool = False
    # A spaCy pipeline (installed package name or directory) for names and places in PII detection; unset: off.
    pii_ner_model: str | None = None
    # Addresses (IPs or CIDRs, comma-separated) of the reverse proxies in front of the wrapper whose X-Forwarded-For
    # is believed for the client address; unset, no one's is (any client could write the header).
    trusted_proxies: str = ""
    metrics_token: str | None = None  # bearer for GET /metrics; unset: loopback clients only
    metrics_users: int = Field(0, ge=0)  # label up to this many distinct users in per-user metrics (0: none)

    def model_post_init(self, context) -> None:
        if not self.database_url:
            self.database_url = f"sqlite+aiosqlite:///{self.var_dir / 'gateway.db'}"
        if self.audit_spool is None:
            self.audit_spool = self.var_dir / "audit-spool.ndjson"

    @property
    def litellm_url(self) -> str:
        return f"http://127.0.0.1:{self.litellm_port}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
