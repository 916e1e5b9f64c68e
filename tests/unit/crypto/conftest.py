"""Shared fixtures for the crypto tests: fresh random keys per test, a keyring and a row's AAD."""

from __future__ import annotations

import os

import pytest

from broker.crypto.envelope import secret_aad
from broker.crypto.kek import LocalKek
from broker.crypto.keyring import Keyring


@pytest.fixture
def old_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def new_key() -> bytes:
    return os.urandom(32)


@pytest.fixture
def old_kek(old_key: bytes) -> LocalKek:
    return LocalKek("kek-2024", old_key)


@pytest.fixture
def new_kek(new_key: bytes) -> LocalKek:
    return LocalKek("kek-2025", new_key)


@pytest.fixture
def keyring(old_kek: LocalKek) -> Keyring:
    return Keyring([old_kek], current="kek-2024")


@pytest.fixture
def aad() -> bytes:
    return secret_aad(project_id=7, environment_id=3, name="DATABASE_URL", version=2)
