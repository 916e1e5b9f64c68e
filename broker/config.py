"""Settings: the only reader of os.environ; refuses insecure production settings."""

from __future__ import annotations

import ipaddress
import os
from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8750
DATABASE_SCHEMES = (
    "postgresql://",
    "postgres://",
    "postgresql+asyncpg://",
    "sqlite://",
    "sqlite+aiosqlite://",
)


def _default_data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "strongroom"


class Settings(BaseSettings):
    """Broker configuration from STRONGROOM_* environment variables."""

    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore", frozen=True)

    production: bool = False
    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    # Key sources, in order of preference: an inline keyring (env) or a keyring file.
    keyring: str | None = Field(default=None, repr=False)
    key_file: Path | None = None
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    # TLS served by the broker itself (a single host without a proxy): PEM certificate chain and key.
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    # Plain HTTP on an address other than loopback, for a TLS-terminating proxy in front (never by default).
    allow_plain_http: bool = False
    token_ttl: int = Field(default=900, ge=10, le=86400)
    token_max_ttl: int = Field(default=8 * 3600, ge=10, le=31 * 86400)
    trusted_proxies: list[str] = Field(default_factory=list)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    # Request heads (broker/api/protocol.py): one header, and the request line with every header.
    max_header_bytes: int = Field(default=16 * 1024, ge=1024)
    max_request_head_bytes: int = Field(default=64 * 1024, ge=4096)
    auth_failure_limit: int = Field(default=10, ge=1)
    auth_failure_window: int = Field(default=60, ge=1)
    db_pool_size: int = Field(default=10, ge=1)
    # Vault / AWS Secrets Manager upstreams and what maps to them (docs/backends.md).
    backends_file: Path | None = None
    # Trusted OIDC issuers and the roles their tokens log in as (docs/oidc.md); JSON or YAML, 0600.
    oidc_file: Path | None = None
    # Audit evidence (docs/audit.md): checkpoint signing key and directory, extra sinks, retention.
    audit_signing_key_file: Path | None = None
    audit_checkpoint_dir: Path | None = None
    audit_checkpoint_every: int = Field(default=1000, ge=1)
    audit_checkpoint_interval: int = Field(default=60, ge=1)
    audit_on_rollback: Literal["refuse", "read-only"] = "refuse"
    audit_file: Path | None = None
    audit_syslog: str | None = None
    audit_sink_timeout: float = Field(default=5.0, gt=0, le=60)
    audit_fingerprint_limit: int = Field(default=30, ge=1)
    audit_fingerprint_window: int = Field(default=60, ge=1)
    audit_retention_days: int | None = Field(default=None, ge=1)
    # Observability (README "Metrics and health"): Prometheus metrics on their own listener, off by
    # default; logs as text (a terminal) or one JSON object per line (a collector), request lines.
    metrics_host: str = "127.0.0.1"
    metrics_port: int | None = Field(default=None, ge=1, le=65535)
    log_format: Literal["text", "json"] = "text"
    # One line per request; by default on with JSON logs and off with text ones.
    access_log: bool | None = None
    # prometheus_client's own variable (set by `serve` to a per-run directory): the workers' shared
    # metric files. Read here because this module is the only reader of the environment.
    prometheus_multiproc_dir: Path | None = Field(default=None, validation_alias="PROMETHEUS_MULTIPROC_DIR")

    @field_validator("trusted_proxies")
    @classmethod
    def _cidrs(cls, value: list[str]) -> list[str]:
        for n, item in enumerate(value, 1):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"entry {n} is not an IP address or CIDR") from None
        return value

    @field_validator("database_url")
    @classmethod
    def _database_scheme(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(DATABASE_SCHEMES):
            raise ValueError("must be a postgresql:// or sqlite:// URL (PostgreSQL or SQLite)")
        return value

    @model_validator(mode="after")
    def _metrics_port(self) -> Settings:
        if self.metrics_port is not None and self.metrics_port == self.port:
            raise ValueError(
                "STRONGROOM_METRICS_PORT: must differ from STRONGROOM_PORT (metrics have their own listener)"
            )
        return self

    @model_validator(mode="after")
    def _production_rules(self) -> Settings:
        if self.production:
            if self.keyring is None and self.key_file is None:
                raise ValueError(
                    "production: set STRONGROOM_KEYRING or STRONGROOM_KEY_FILE; "
                    "the generated development key is refused in production"
                )
            if self.resolved_database_url.startswith("sqlite"):
                raise ValueError("production: set STRONGROOM_DATABASE_URL to a PostgreSQL database")
        return self

    @property
    def is_embedded(self) -> bool:
        """True when running on the embedded default (SQLite in the data directory)."""
        return self.database_url is None

    @property
    def resolved_database_url(self) -> str:
        """The SQLAlchemy async URL, with the driver filled in."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'strongroom.db'}"
        for plain, driver in (
            ("postgresql://", "postgresql+asyncpg://"),
            ("postgres://", "postgresql+asyncpg://"),
            ("sqlite://", "sqlite+aiosqlite://"),
        ):
            if url.startswith(plain):
                return driver + url[len(plain) :]
        return url

    @property
    def logs_requests(self) -> bool:
        """Whether each request gets a log line (STRONGROOM_ACCESS_LOG, by default only with JSON logs)."""
        return self.log_format == "json" if self.access_log is None else self.access_log

    @property
    def resolved_key_file(self) -> Path:
        """Where the keyring file lives (the generated development one by default)."""
        return self.key_file or (self.data_dir / "dev-keyring.json")


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Read settings once per process."""
    return Settings()


def describe(error: ValidationError) -> str:
    """A settings error as one sentence naming each setting, never its value (pydantic's own text quotes
    the input, which may be a database password)."""
    parts = []
    for item in error.errors(include_input=False, include_url=False, include_context=False):
        msg = str(item["msg"]).removeprefix("Value error, ")
        loc = [str(p) for p in item["loc"] if not isinstance(p, int)]
        if loc:
            parts.append(f"STRONGROOM_{loc[0].upper()}: {msg[:1].lower()}{msg[1:]}")
        else:
            parts.append(msg)  # a rule across settings; its message names them
    return "; ".join(parts)
