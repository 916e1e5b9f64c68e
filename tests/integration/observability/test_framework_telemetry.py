"""FastAPI's own OpenTelemetry instrumentation stays off: its spans would carry each request's path and
query string (secret names), and the broker observes requests itself, by route template
(broker/api/observe.py). A process-wide tracer provider (what `opentelemetry-instrument` or an
application embedding the broker would set) must not make the framework trace the broker's requests.

The provider is a subclass of the API's no-op provider that records every tracer asked of it: the SDK is
not a dependency, and the question is only whether the framework asks at all."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from opentelemetry import trace


class _Recording(trace.NoOpTracerProvider):
    """A configured (not deferred) provider: FastAPI treats any class but its known placeholders as one."""

    def __init__(self) -> None:
        self.asked: list[str] = []

    def get_tracer(self, instrumenting_module_name: str, *args: Any, **kwargs: Any) -> trace.Tracer:
        self.asked.append(instrumenting_module_name)
        return super().get_tracer(instrumenting_module_name, *args, **kwargs)


def test_a_global_tracer_provider_does_not_trace_the_brokers_requests(
    client: TestClient, admin: dict[str, str], canary: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    provider = _Recording()
    monkeypatch.setattr(trace, "get_tracer_provider", lambda: provider)
    base = "/v1/projects/p1/environments/prod"
    assert client.post("/v1/projects", json={"slug": "p1"}, headers=admin).status_code == 201
    assert (
        client.post("/v1/projects/p1/environments", json={"slug": "prod"}, headers=admin).status_code == 201
    )
    name = canary.upper()
    assert client.put(f"{base}/secrets/{name}", json={"value": "v"}, headers=admin).status_code == 200
    assert client.get(f"{base}/secrets/{name}", headers=admin).status_code == 200
    assert client.get(f"{base}/secrets/MISSING?version=3", headers=admin).status_code == 404
    assert client.get("/up").status_code == 200
    assert provider.asked == []
    fastapi_app: Any = client.app.app  # type: ignore[attr-defined]  # ObservedEdge(FastAPI)
    assert fastapi_app._native_telemetry.enabled() is False
