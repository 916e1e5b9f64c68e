"""The binding of a secret to the path and current version it is served as (SECURITY.md 58)."""

from __future__ import annotations

import os
from typing import Any

import pytest

from broker.audit.fingerprint import derive_key as derive_audit_key
from broker.crypto import binding
from broker.errors import IntegrityError

KEY = binding.derive_key(os.urandom(32))
WRITTEN: dict[str, Any] = dict(
    project_id=1,
    project="microblog",
    environment_id=2,
    environment="production",
    secret_id=3,
    name="A",
    version=4,
)


def test_the_written_path_checks() -> None:
    tag = binding.compute(KEY, **WRITTEN)
    assert len(tag) == 32
    binding.check(KEY, tag, **WRITTEN)
    binding.check(KEY, memoryview(tag), **WRITTEN)  # type: ignore[arg-type]  # as some drivers return it


@pytest.mark.parametrize(
    "served_as",
    [
        dict(project="other-app"),
        dict(environment="staging"),
        dict(name="B"),
        dict(version=3),
        dict(version=5),
        dict(secret_id=4),
        dict(environment_id=5),
        dict(project_id=9),
        # Boundaries move between fields: the lengths keep these apart.
        dict(project="microblogp", environment="roduction"),
        dict(environment="productionA", name=""),
    ],
)
def test_any_other_path_or_version_is_an_integrity_failure(served_as: dict[str, Any]) -> None:
    tag = binding.compute(KEY, **WRITTEN)
    with pytest.raises(IntegrityError):
        binding.check(KEY, tag, **{**WRITTEN, **served_as})


def test_a_missing_or_foreign_binding_is_an_integrity_failure() -> None:
    with pytest.raises(IntegrityError):
        binding.check(KEY, None, **WRITTEN)
    other_key = binding.derive_key(os.urandom(32))
    with pytest.raises(IntegrityError):
        binding.check(KEY, binding.compute(other_key, **WRITTEN), **WRITTEN)


def test_the_binding_key_is_its_own() -> None:
    hmac_key = os.urandom(32)
    assert binding.derive_key(hmac_key) not in (hmac_key, derive_audit_key(hmac_key))
    assert binding.derive_key(hmac_key) == binding.derive_key(hmac_key)
