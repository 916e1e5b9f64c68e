"""Journey 6 in a real browser: the console's drift page sees a host turn from rotated to current.

The real `strongroom` CLI deploys the lab app (tests/e2e/deploy/conftest.py: real sshd, dockerd and registry)
through the session's real broker; Debian's chromium (tests/e2e/console/browser.py) signs in to that broker's
console as an operator with read access and reads the drift page's table rows as a person sees them. It sits
with the deploy tests so that it shares their lab and broker (one xdist group, one lab per run). Screenshots
go under the test's temporary directory (`screenshots/`).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.console.browser import Browser, chromium, need_chromium
from tests.e2e.deploy.conftest import PROJECT, DeployBroker, canary, project_dir, run
from tests.support import deploy_lab

pytestmark = pytest.mark.e2e

ENV = "console-drift"
SERVICE = "console-drift"
HOST = "web1"
PAGE = f"/console/projects/{PROJECT}/environments/{ENV}/deploys/status"
# The drift table's columns: host, role, state, detail, version, deployed at, by, last attempt.
HOST_COL, ROLE_COL, STATE_COL, DETAIL_COL, VERSION_COL = range(5)


@pytest.fixture
def browser(deploy_broker: DeployBroker, tmp_path: Path) -> Iterator[Browser]:
    """A browser on the deploy lab's broker, signed in as an identity that may read the project."""
    need_chromium()
    r = deploy_broker.http.post(
        "/v1/identities",
        json={
            "name": "drift-viewer",
            "client_id": "drift-viewer",
            "scopes": [{"project": PROJECT, "environments": ENV, "actions": ["read"]}],
        },
    )
    assert r.status_code == 201, r.text
    shots = tmp_path / "screenshots"
    shots.mkdir()
    with chromium(tmp_path) as driver:
        b = Browser(deploy_broker.process.url, driver, shots)
        b.sign_in("drift-viewer", r.json()["client_secret"])
        assert b.text("#name") == "drift-viewer", b.text("main")
        yield b


def _deploy(lab: deploy_lab.Lab, broker: DeployBroker, root: Path, version: str) -> None:
    project_dir(root, lab, version, service=SERVICE, hosts=[HOST])
    done = run(lab, broker, "deploy", "-e", ENV, "--version", version, cwd=root).out
    assert done.returncode == 0, (done.stdout, done.stderr)


def _host_row(b: Browser) -> list[str]:
    b.open(PAGE)
    assert b.text("h1") == f"Hosts of {PROJECT}/{ENV}: what runs where", b.text("main")
    (row,) = b.rows("#drift")
    assert row[HOST_COL:STATE_COL] == [HOST, "web"]
    return row


def test_the_drift_page_shows_a_host_turn_from_rotated_to_current_after_a_deploy(
    lab: deploy_lab.Lab, deploy_broker: DeployBroker, browser: Browser, tmp_path: Path
) -> None:
    first, rotated = canary("DRIFTAPP"), canary("DRIFTROTATED")
    deploy_broker.environment(
        ENV,
        {
            "APP_SECRET": first,
            "BUILD_TOKEN": canary("DRIFTBUILD"),
            "REGISTRY_PASSWORD": lab.registry.password,
        },
    )
    root = tmp_path / "app"

    # Before any deploy the page says so, in a sentence.
    browser.open(PAGE)
    assert browser.text("#error") == f"{PROJECT}/{ENV}: no deploy yet, so no manifest to compare hosts with"

    _deploy(lab, deploy_broker, root, "v1")
    row = _host_row(browser)
    assert (row[STATE_COL], row[VERSION_COL]) == ("current", "v1"), row
    browser.shot("01-drift-current-v1")

    # The secret rotates: the host still runs v1 of APP_SECRET, so its env is not what a deploy would give
    # now either (the states `strongroom deploy status` gives, in its order).
    deploy_broker.put(ENV, "APP_SECRET", rotated)
    row = _host_row(browser)
    assert (row[STATE_COL], row[VERSION_COL]) == ("drift, rotated", "v1"), row
    assert row[DETAIL_COL].split("; ") == [
        "drift: the deployed env differs from what a deploy would give now",
        "rotated: APP_SECRET v1→v2",
    ]
    browser.shot("02-drift-rotated")

    # A deploy gives the host the new value: current again.
    _deploy(lab, deploy_broker, root, "v2")
    row = _host_row(browser)
    assert (row[STATE_COL], row[DETAIL_COL], row[VERSION_COL]) == ("current", "", "v2"), row
    browser.shot("03-drift-current-v2")

    # The page names secrets and versions, never a value.
    for value in (first, rotated):
        assert value not in browser.html
    # Signing out revokes the session's token (nothing is left live in the session's broker).
    browser.submit("#logout")
    assert browser.text("h1") == "Sign in"
