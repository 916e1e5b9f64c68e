"""J53: schemathesis against the broker's own OpenAPI document, in-process, with an admin token.

Runs on SQLite only: the point here is that every response conforms to the published document
(status codes, content types, bodies) and that nothing answers 5xx; PostgreSQL's API behaviour is
covered by the rest of the suite, which runs on both databases. Bounded and reproducible: a small
number of derandomized examples per operation and generation mode, no shrinking.

Each operation is driven with Hypothesis over `operation.as_strategy()` rather than through
`schemathesis.pytest.from_fixture`, whose test wrapper fails under pytest 9 (it reads
`request.node._nodeid`); the checks are schemathesis' own.
"""

from __future__ import annotations

import json
import os
import secrets
import tempfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.generation.modes import GenerationMode
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from broker.main import build_runtime, create_app
from broker.services.auth import bootstrap_admin
from tests.conftest import make_settings, sqlite_db

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]

MAX_EXAMPLES = 15
# How often one exact request is sent per operation and mode: once, and once more to see the state it left.
SAME_REQUEST_LIMIT = 2
# Path parameters naming things that exist, so that some calls get past 404.
PINNED = {"project": "microblog", "environment": "production", "name": "API_KEY"}

# The only operations whose bodies may carry a secret value.
VALUE_BEARING = {
    ("GET", "/v1/projects/{project}/environments/{environment}/secrets/{name}"),
    ("GET", "/v1/projects/{project}/environments/{environment}/resolved"),
}


class Fixture:
    """What the run needs: the schema, a way to get a valid admin token, and the canary."""

    def __init__(self, schema: Any, client: TestClient, admin_secret: str, canary: str) -> None:
        self.schema = schema
        self.client = client
        self.admin_secret = admin_secret
        self.canary = canary
        self.headers = self.fresh_token()
        self.seen: Counter[tuple[str, str, int]] = Counter()
        self.canary_reads = 0

    def fresh_token(self) -> dict[str, str]:
        """Log in as the admin again (the run may revoke its own token)."""
        r = self.client.post(
            "/v1/auth/token", json={"client_id": "admin", "client_secret": self.admin_secret}
        )
        assert r.status_code == 200, r.text
        return {"Authorization": f"Bearer {r.json()['token']}"}


@pytest.fixture
def fast_dir(tmp_path: Path) -> Iterator[Path]:
    """The broker's files on tmpfs where there is one: the run makes ~1,700 requests, most of them fsynced
    commits (SQLite synchronous=FULL), and durability is not what it tests."""
    shm = Path("/dev/shm")
    if not (shm.is_dir() and os.access(shm, os.W_OK)):
        yield tmp_path
        return
    with tempfile.TemporaryDirectory(prefix="strongroom-schema-", dir=shm) as directory:
        yield Path(directory)


@pytest.fixture
def api(fast_dir: Path, sqlite_template: Path) -> Iterator[Fixture]:
    tmp_path = fast_dir
    url = sqlite_db(tmp_path / "broker.db", sqlite_template)
    # A failure limit no run can reach, so generated bad credentials do not lock out the admin token
    # (429 would still conform; it would just stop the run from exercising anything).
    runtime = build_runtime(make_settings(url, tmp_path, auth_failure_limit=1_000_000))
    app = create_app(runtime)
    canary = "CANARY" + secrets.token_hex(16)
    with TestClient(app, client=("127.0.0.1", 50000)) as client:
        created = client.portal.call(bootstrap_admin, runtime)  # type: ignore[union-attr]
        assert created is not None
        fx = Fixture(None, client, created.client_secret, canary)
        h = fx.headers
        base = "/v1/projects/microblog/environments"
        assert client.post("/v1/projects", json={"slug": "microblog"}, headers=h).status_code == 201
        assert client.post(base, json={"slug": "common"}, headers=h).status_code == 201
        r = client.post(base, json={"slug": "production", "parent": "common"}, headers=h)
        assert r.status_code == 201, r.text
        for env, name in (("common", "DB_PASSWORD"), ("production", "API_KEY")):
            r = client.put(f"{base}/{env}/secrets/{name}", json={"value": canary}, headers=h)
            assert r.status_code == 200, r.text
        # A deploy to pin `deploy_id` to (its bundle, hosts and finish routes answer only its own token).
        manifest = "service: web\nimage: acme/web\nroles:\n  web:\n    hosts: [web1]\n"
        r = client.post(f"{base}/production/deploys", json={"manifest": manifest, "version": "v1"}, headers=h)
        assert r.status_code == 201, r.text
        PINNED["deploy_id"] = r.json()["deploy"]["id"]
        # An identity to pin `client_id` to (show, disable, enable, rotate-secret, delete).
        body = {"name": "schema-target", "type": "machine", "scopes": [], "client_id": "schema-target"}
        assert client.post("/v1/identities", json=body, headers=h).status_code == 201
        PINNED["client_id"] = "schema-target"

        r = client.get("/openapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        document = r.json()
        assert document["openapi"].startswith("3.")

        fx.schema = schemathesis.openapi.from_asgi("/openapi.json", app)
        yield fx
    try:
        from schemathesis.python import asgi

        asgi.shutdown_lifespans()  # schemathesis keeps its own lifespan of the app open
    except (ImportError, AttributeError):
        pass


def _request_key(case: Any) -> str:
    """Everything a generated case sends (the admin token is added later, the same for every case)."""
    return repr((case.method, case.formatted_path, case.query, case.headers, case.cookies, case.body))


def _run_operation(api: Fixture, operation: Any, mode: GenerationMode, pinned: bool) -> list[str]:
    """Up to MAX_EXAMPLES derandomized cases of one operation; returns failure reports (empty: pass)."""
    failures: list[str] = []
    path_parameters = None
    if pinned:
        names = {p.name for p in operation.path_parameters}
        path_parameters = {k: v for k, v in PINNED.items() if k in names}
    strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
    sent: Counter[str] = Counter()

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        deadline=None,
        database=None,
        phases=[Phase.explicit, Phase.generate],  # no shrinking: keep the run bounded
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Any) -> None:
        # Hypothesis often draws the same request again (an operation without parameters: 15 times). The
        # second send still sees what the first changed; a third sees nothing new, so it is not sent.
        sent[_request_key(case)] += 1
        if sent[_request_key(case)] > SAME_REQUEST_LIMIT:
            return
        headers = dict(api.headers)
        if operation.path == "/v1/auth/token/revoke-self":
            # Revoke a throwaway admin token, not the one the rest of the run uses.
            headers = api.fresh_token()
        try:
            response = case.call(headers=headers)
        except Exception as exc:  # the app raised through the transport: a 500 in production
            failures.append(f"{mode.value}: {type(exc).__name__} from {case.method} {case.formatted_path}")
            return
        api.seen[(operation.method.upper(), operation.path, response.status_code)] += 1
        try:
            case.validate_response(response, checks=CHECKS, headers=headers)
        except Exception as exc:  # FailureGroup: keep the report, go on with other examples
            failures.append(f"{mode.value}{' pinned' if pinned else ''}: {exc}")
            return
        if (operation.method.upper(), operation.path) in VALUE_BEARING:
            api.canary_reads += api.canary in response.text
        elif api.canary in response.text:
            failures.append(f"{mode.value}: canary in the body of {case.method} {case.formatted_path}")

    try:
        run()
    except Unsatisfiable:
        # Nothing to negate (no parameters and no body), so no negative case exists.
        assert mode is GenerationMode.NEGATIVE, operation.path
    return failures


def test_api_conforms_to_its_openapi_document(api: Fixture) -> None:
    failures: dict[str, list[str]] = {}
    operations = [r.ok() for r in api.schema.get_all_operations()]
    assert len(operations) >= 25
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        for mode, pinned in (
            (GenerationMode.POSITIVE, True),
            (GenerationMode.POSITIVE, False),
            (GenerationMode.NEGATIVE, False),
        ):
            if pinned and not operation.path_parameters:
                continue
            found = _run_operation(api, operation, mode, pinned)
            if found:
                failures.setdefault(label, []).extend(found[:2])
    # Some calls must get through, or the run proves little: at least one 2xx on most operations.
    succeeded = {(m, p) for (m, p, status) in api.seen if status < 300}
    assert len(succeeded) >= len(operations) * 2 // 3, sorted(succeeded)
    assert api.canary_reads > 0, "no value-bearing read returned the canary: the leak check saw nothing"
    assert not failures, "\n\n".join(f"== {k}\n" + "\n".join(v) for k, v in failures.items())


def test_openapi_document_is_served(api: Fixture) -> None:
    r = api.client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    paths = doc["paths"]
    assert "/v1/projects/{project}/environments/{environment}/secrets/{name}" in paths
    problem = paths["/v1/projects"]["post"]["responses"]["400"]["content"]
    assert "application/problem+json" in problem
    # Validation errors are our 400, so FastAPI's default 422 must not be published.
    assert '"422"' not in json.dumps(paths)
    assert "HTTPValidationError" not in json.dumps(doc)


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("POST", "/secrets/API_KEY/versions/14124287966051859169280/destroy", None),
        ("POST", "/secrets/API_KEY/versions/2147483648/destroy", None),
        ("POST", "/secrets/API_KEY/rollback", {"version": 2**63}),
    ],
)
def test_out_of_range_versions_are_400_not_500(
    api: Fixture, method: str, path: str, body: dict[str, Any] | None
) -> None:
    """Found by the run above: versions beyond a 32-bit column overflowed in the driver (500, then a failed
    audit write and 503)."""
    base = "/v1/projects/microblog/environments/production"
    r = api.client.request(method, base + path, json=body, headers=api.headers)
    assert r.status_code == 400, r.text
    assert r.headers["content-type"] == "application/problem+json"
    assert "version" in r.json()["detail"]
