"""`strongroom diff` says what its fingerprints are, and they behave so: the audit trail's, stable across answers.

Against a real broker process: two `diff` runs print the same fingerprints, the full one from `--json` is
the value's `strongroom audit fingerprint`, and `strongroom audit list --fingerprint` finds the write of
that value. No value appears in any output.
"""

from __future__ import annotations

import json

import pytest

from tests.e2e.conftest import BrokerProcess

pytestmark = pytest.mark.e2e

PRODUCTION = "postgres://app:pa$1wor$D#x@db:5432/app"
STAGING = "postgres://app:staging-only@db:5432/app"


def test_diff_fingerprints_are_stable_and_are_the_audit_trails(broker: BrokerProcess) -> None:
    secret_file = broker.data_dir / "bootstrap-admin.secret"
    out = broker.cli("login", "--url", broker.url, "--client-id", "admin", "--secret-file", str(secret_file))
    assert out.returncode == 0, out.stderr
    assert broker.cli("projects", "create", "fp").returncode == 0
    for env, value in (("production", PRODUCTION), ("staging", STAGING)):
        assert broker.cli("envs", "create", "-p", "fp", env).returncode == 0
        out = broker.cli("secrets", "set", "-p", "fp", "-e", env, "DATABASE_URL", input=value.encode())
        assert out.returncode == 0, out.stderr

    first = broker.cli("diff", "-p", "fp", "staging", "production")
    second = broker.cli("diff", "-p", "fp", "staging", "production")
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    assert "comparable within this answer only" not in first.stdout
    assert "the same value has the same one in every answer" in first.stdout

    answers = [
        json.loads(broker.cli("diff", "-p", "fp", "staging", "production", "--json").stdout) for _ in "ab"
    ]
    assert answers[0] == answers[1]
    (row,) = answers[0]["different"]
    production_fp = row["b"]
    assert (
        production_fp.startswith("hmac-sha256:")
        and production_fp.removeprefix("hmac-sha256:")[:12] in first.stdout
    )

    looked_up = broker.cli("audit", "fingerprint", input=PRODUCTION.encode())
    assert looked_up.returncode == 0, looked_up.stderr
    assert f"fingerprint: {production_fp}" in looked_up.stdout
    listed = broker.cli("audit", "list", "--fingerprint", production_fp, "--json")
    assert listed.returncode == 0, listed.stderr
    assert any(event["action"] == "secret.write" for event in json.loads(listed.stdout)["events"])
    for text in broker.outputs:
        assert PRODUCTION not in text and STAGING not in text
