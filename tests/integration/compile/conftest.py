"""Fixtures for the compile routes: the secrets tests' seeded project plus a Rails app's values."""

from __future__ import annotations

import pytest

from tests.integration.secrets.conftest import Api, api  # noqa: F401 (fixture re-exported)
from tests.support.rails_app import NOT_SENSITIVE, VALUES, manifest_text


def rails_manifest() -> str:
    """The Rails app's strongroom.yml."""
    return manifest_text()


@pytest.fixture
def rails(api: Api) -> Api:  # noqa: F811 (the imported fixture)
    """`microblog` with common, production and staging (both inheriting common) holding the Rails values."""
    api.make_env("staging", parent="common")
    for env, values in VALUES.items():
        for name, value in values.items():
            r = api.put(env, name, value, sensitive=name not in NOT_SENSITIVE)
            assert r.status_code == 200, r.text
    return api
