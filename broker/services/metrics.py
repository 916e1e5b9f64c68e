"""Prometheus metrics: what the services count, and the exposition served on its own listener.

With several workers (`serve --workers N`) each process writes its values to files in a per-run
directory (prometheus_client's multiprocess mode, PROMETHEUS_MULTIPROC_DIR set by `serve` before any
worker starts); the metrics listener, in the serving process, adds them up at each scrape. With one
process the same files are used, so one code path serves both. Label values are bounded: a route is
its template (`/v1/projects/{project}/...`), never the path, since names are data.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter as TallyCounter
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, multiprocess
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from sqlalchemy import event

from broker.audit.canonical import parse_time
from broker.audit.signing import checkpoint_dir
from broker.audit.sinks import CheckpointDirectory
from broker.config import Settings
from broker.services.runtime import Runtime

log = logging.getLogger("strongroom.metrics")

# Seconds. The read path answers in about a millisecond when idle; the tail matters up to seconds.
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# Token exchanges (a client credential or an OIDC ID token, the console's sign-in form included) as opposed to
# a bearer token (the console's session cookie included) on any other route.
CREDENTIAL_ROUTES = frozenset({"/v1/auth/token", "/v1/auth/oidc", "/console/login", "/console/sso/callback"})


def sink_kind(name: str) -> str:
    """A sink's label: its kind (`file`, `syslog`, `database`, `checkpoints`), never its path or address."""
    return name.split(":", 1)[0]


class Metrics:
    """One process's metric objects (their values go to the run's files in multiprocess mode)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "strongroom_http_requests",
            "HTTP requests answered, by method, route template and outcome class (2xx, 4xx, 5xx).",
            ["method", "route", "outcome"],
            registry=r,
        )
        self.latency = Histogram(
            "strongroom_http_request_duration_seconds",
            "Time from a request's arrival to the end of its answer, by method and route template.",
            ["method", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.auth_failures = Counter(
            "strongroom_auth_failures",
            "Requests refused with 401: kind=credential for token exchanges (client secret or OIDC), "
            "kind=token for a missing, unknown, expired or revoked bearer token.",
            ["kind"],
            registry=r,
        )
        self.audit_append_failures = Counter(
            "strongroom_audit_append_failures",
            "Requests whose audit event no sink could record (answered 503, nothing served).",
            registry=r,
        )
        self.audit_sink_failures = Counter(
            "strongroom_audit_sink_failures",
            "Failed writes to one audit sink (database, file, syslog, checkpoints), by kind.",
            ["sink"],
            registry=r,
        )
        self.audit_events = Counter(
            "strongroom_audit_events", "Audit events recorded by this broker.", registry=r
        )
        self.audit_checkpoints = Counter(
            "strongroom_audit_checkpoints", "Audit checkpoints signed by this broker.", registry=r
        )
        self.pool_in_use = Gauge(
            "strongroom_db_pool_in_use",
            "Database connections checked out of the SQLAlchemy pools (all live workers).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self.pool_size = Gauge(
            "strongroom_db_pool_size",
            "Connections the SQLAlchemy pools may hold (pool size plus overflow; all live workers).",
            multiprocess_mode="livesum",
            registry=r,
        )
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    def request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request (the middleware's only call, on every request)."""
        # Every part of the key is bounded (a method outside METHODS is "other"), so the cache is too.
        label = method if method in METHODS else "other"
        key = (label, route, status)
        children = self._children.get(key)
        if children is None:
            children = (
                self.requests.labels(label, route, f"{status // 100}xx"),
                self.latency.labels(label, route),
            )
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)
        if status == 401:
            self.auth_failures.labels("credential" if route in CREDENTIAL_ROUTES else "token").inc()

    def instrument(self, rt: Runtime) -> None:
        """Follow the audit trail's counters and the database pool of this runtime (from now on, into
        these metrics; a runtime instrumented before is switched over, not counted twice)."""
        tally = rt.audit.counters
        if isinstance(tally, AuditTally):
            tally.metrics = self
            return
        tally = rt.audit.counters = AuditTally(self, tally)
        pool: Any = rt.engine.sync_engine.pool
        size = getattr(pool, "size", None)
        if callable(size):
            self.pool_size.inc(int(size()) + max(int(getattr(pool, "_max_overflow", 0)), 0))

        def checkout(*_: Any) -> None:
            tally.metrics.pool_in_use.inc()

        def checkin(*_: Any) -> None:
            tally.metrics.pool_in_use.dec()

        event.listen(rt.engine.sync_engine, "checkout", checkout)
        event.listen(rt.engine.sync_engine, "checkin", checkin)

    def close(self, settings: Settings) -> None:
        """At a worker's exit: its live gauges (pool) stop counting."""
        if settings.prometheus_multiproc_dir is not None:
            multiprocess.mark_process_dead(os.getpid(), str(settings.prometheus_multiproc_dir))  # type: ignore[no-untyped-call]


class AuditTally(TallyCounter[str]):
    """The audit trail's counters (`trail.counters[...] += n`), mirrored into Prometheus as they grow."""

    def __init__(self, metrics: Metrics, start: TallyCounter[str]) -> None:
        super().__init__()
        dict.update(self, start)  # what was counted before is not counted again
        self.metrics = metrics

    def __setitem__(self, key: str, value: int) -> None:
        grown = value - self.get(key, 0)
        super().__setitem__(key, value)
        if grown <= 0:
            return
        m = self.metrics
        if key == "events":
            m.audit_events.inc(grown)
        elif key == "checkpoints":
            m.audit_checkpoints.inc(grown)
        elif key.startswith("sink_failures:"):
            m.audit_sink_failures.labels(sink_kind(key.removeprefix("sink_failures:"))).inc(grown)
        elif key == "checkpoint_publish_failures":
            m.audit_sink_failures.labels("checkpoints").inc(grown)


class CheckpointAge(Collector):
    """At each scrape: seconds since the newest checkpoint in the external directory was signed."""

    def __init__(self, settings: Settings) -> None:
        self.directory = CheckpointDirectory(checkpoint_dir(settings))

    def collect(self) -> Iterable[Metric]:
        """The age gauge; absent when there is no checkpoint yet or the directory cannot be read."""
        family = GaugeMetricFamily(
            "strongroom_audit_checkpoint_age_seconds",
            "Seconds since the newest signed checkpoint in the checkpoint directory was made.",
        )
        try:
            latest = self.directory.latest()
        except Exception as exc:  # a scrape must not fail for it; readiness reports the directory
            log.warning("checkpoint age unknown: %s", type(exc).__name__)
            latest = None
        if latest is not None:
            signed = parse_time(latest.checkpoint.time)
            family.add_metric([], max((datetime.now(UTC) - signed).total_seconds(), 0.0))
        yield family


def exposition(settings: Settings, metrics: Metrics | None = None) -> CollectorRegistry:
    """The registry a scrape reads: every worker's files in multiprocess mode, else `metrics` itself."""
    registry = CollectorRegistry()
    if settings.prometheus_multiproc_dir is not None:
        multiprocess.MultiProcessCollector(registry, path=str(settings.prometheus_multiproc_dir))  # type: ignore[no-untyped-call]
    elif metrics is not None:
        registry.register(_Forward(metrics.registry))
    registry.register(CheckpointAge(settings))
    return registry


class _Forward(Collector):
    def __init__(self, inner: CollectorRegistry) -> None:
        self.inner = inner

    def collect(self) -> Iterable[Metric]:
        return self.inner.collect()


def serve(settings: Settings, metrics: Metrics | None = None) -> tuple[Any, threading.Thread]:
    """Start the metrics listener (a daemon thread) on STRONGROOM_METRICS_HOST:STRONGROOM_METRICS_PORT."""
    from prometheus_client import start_http_server

    assert settings.metrics_port is not None
    return start_http_server(settings.metrics_port, settings.metrics_host, exposition(settings, metrics))
