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
