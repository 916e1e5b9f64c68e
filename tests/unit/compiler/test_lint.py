"""The lint for clear values that look like secrets: names, URLs with passwords, entropy; warn or fail."""

from __future__ import annotations

import random
import string
import textwrap

import pytest

from broker.compiler.lint import lint, name_looks_secret, value_looks_secret
from broker.compiler.parse import parse_manifest


@pytest.mark.parametrize(
    "name",
    [
        "DB_PASSWORD",
        "GITHUB_TOKEN",
        "STRIPE_SECRET",
        "API_KEY",
        "AWS_SECRET_ACCESS_KEY",
        "SECRET_KEY_BASE",
        "password",
    ],
)
def test_secret_names(name: str) -> None:
    assert name_looks_secret(name)


@pytest.mark.parametrize("name", ["RAILS_ENV", "FRONTEND_URL", "KEYBOARD_LAYOUT", "TOKENIZER", "PORT"])
def test_plain_names(name: str) -> None:
    assert not name_looks_secret(name)


@pytest.mark.parametrize(
    "value",
    [
        "postgres://app:hunter2@db/app",
        "redis://:s3cret@cache:6379/0",
        "0123456789abcdef0123456789abcdef",
        "dNW--GyQvIeGNUSB_UDmUOYvqXyKmSaW",
        "sk_live_51H8abcdefGHIJKLmnopQRSTuvwx",
    ],
)
def test_secret_looking_values(value: str) -> None:
    assert value_looks_secret(value)


def test_random_tokens_are_flagged() -> None:
    rng = random.Random(7)
    alphabet = string.ascii_letters + string.digits + "-_"
    for _ in range(2000):
        token = "".join(rng.choice(alphabet) for _ in range(32))
        assert value_looks_secret(token), token


@pytest.mark.parametrize(
    "value",
    [
        "production",
        "https://microblog.example.com/some/long/path/here",
        "postgres://app@db/app",
        "ghcr.io/acme/microblog:1.2.3",
        "3f2504e0-4f89-11d3-9a0c-0305e82c3301",
        "en_US.UTF-8",
        "RAILS_SERVE_STATIC_FILES_ENABLED",
        "TheQuickBrownFoxJumpsOverTheLazyDog",
        "ApplicationControllerHelperModule",
    ],
)
def test_plain_values(value: str) -> None:
    assert value_looks_secret(value) is None


def manifest(mode: str = "fail", allow: str = "[]") -> str:
    return textwrap.dedent(
        f"""
        service: microblog
        lint: {{secret_like: {mode}, allow: {allow}}}
        builder:
          args: {{NPM_TOKEN: abc}}
        env:
          clear:
            DATABASE_URL: postgres://app:hunter2@db/app
            SAFE_URL: postgres://app:${{DB_PASSWORD}}@db/app
            SESSION_SECRET: x
            RAILS_ENV: production
        """
    )


def test_fail_mode_reports_errors_with_paths_and_no_value() -> None:
    found = lint(parse_manifest(manifest()).base)
    assert {(p.where, p.level) for p in found} == {
        ("env/clear/DATABASE_URL", "error"),
        ("env/clear/SESSION_SECRET", "error"),
        ("builder/args/NPM_TOKEN", "error"),
    }
    assert all("hunter2" not in p.text() for p in found)


def test_warn_mode_and_allow_list() -> None:
    found = lint(parse_manifest(manifest("warn", "[SESSION_SECRET]")).base)
    assert {(p.where, p.level) for p in found} == {
        ("env/clear/DATABASE_URL", "warning"),
        ("builder/args/NPM_TOKEN", "warning"),
    }


HOST_NAMES = [
    "microblog-postgres-primary-2024.internal",
    "microblog-postgres-primary-2024",
    "db-microblog-prod-eu1.cz8k2m1xq9wl.eu-central-1.rds.amazonaws.com",
    "microblog-db-7f9c2e4b1a.postgres.database.azure.com",
    "prod-pg-0a1b2c3d4e5f6a7b8.cluster-ro-c9akciq32xyz.eu-west-1.rds.amazonaws.com",
    "ip-10-0-12-34.eu-west-1.compute.internal",
    "10.0.12.34",
    "db.internal:5432",
]


@pytest.mark.parametrize("host", HOST_NAMES)
def test_database_host_holding_a_host_name_is_not_a_secret(host: str) -> None:
    body = parse_manifest(f"service: microblog\nenv:\n  clear:\n    DATABASE_HOST: {host}\n").base
    assert lint(body) == []
    assert value_looks_secret(f"postgres://microblog@{host}/microblog") is None


@pytest.mark.parametrize("host", HOST_NAMES)
def test_a_password_in_a_url_is_still_flagged_whatever_the_host(host: str) -> None:
    body = parse_manifest(
        f"service: microblog\nenv:\n  clear:\n    DATABASE_URL: postgres://app:hunter2@{host}/app\n"
    ).base
    (finding,) = lint(body)
    assert finding.where == "env/clear/DATABASE_URL" and "URL with a password" in finding.message
    assert "hunter2" not in finding.text()


@pytest.mark.parametrize(
    "value",
    [
        # A JWT and an API key with dots: not lower-case DNS labels, so still judged as tokens.
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0T",
        "aB3dE5fG7hJ9kL1mN3pQ5rS7.example.com",
        "sk_live_51H8abcdefGHIJKLmnopQRSTuvwx",
        "token-a8Fk29dLq0Zm3Xv7Bn1C-end",
    ],
)
def test_tokens_that_are_not_host_names_are_still_flagged(value: str) -> None:
    assert value_looks_secret(value)
