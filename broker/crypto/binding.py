"""What a stored value is served as, bound under a key the database does not hold.

The envelope's AAD (:func:`broker.crypto.envelope.secret_aad`) binds a ciphertext to row ids, its
name and its version, but not to the slugs a request names nor to which version is current: a writer
with database access and no key could swap two environments' slugs, or set ``secrets.current_version``
back, and the broker would serve a value under a path or version it was never written as. So each
``secrets`` row also carries ``binding``, an HMAC-SHA256 under a key derived from the keyring's
``hmac_key`` over::

    b"strongroom/v1/binding\\x00" || u64 project_id || u64 environment_id || u64 secret_id
        || u64 current_version || u32 len(project) || project || u32 len(environment) || environment
        || u32 len(name) || name            (slugs and name in UTF-8)

It is recomputed on every write that moves ``current_version`` and checked on every read that serves
the secret (one value, a version by number, or a whole environment); a mismatch is the same opaque
:class:`broker.errors.IntegrityError` as a failed tag. Nothing renames a project, an environment or
a secret today; an operation that did would have to recompute the bindings it changes.
"""

from __future__ import annotations

import hashlib
import hmac
import struct
from typing import Final

from broker.errors import IntegrityError

LABEL: Final = b"strongroom/v1/binding\x00"
_KEY_LABEL: Final = b"strongroom/v1/binding-key"
_HEAD: Final = struct.Struct(">QQQQ")
_LEN: Final = struct.Struct(">I")


def derive_key(hmac_key: bytes) -> bytes:
    """The binding key, derived from the keyring's hmac_key (so it never lives in the database)."""
    return hmac.new(hmac_key, _KEY_LABEL, hashlib.sha256).digest()


def _field(text: str) -> bytes:
    raw = text.encode("utf-8")
    return _LEN.pack(len(raw)) + raw


def compute(
    key: bytes,
    *,
    project_id: int,
    project: str,
    environment_id: int,
    environment: str,
    secret_id: int,
    name: str,
    version: int,
) -> bytes:
    """The binding of a secret served as project/environment/name at current version `version`."""
    message = (
        LABEL
        + _HEAD.pack(project_id, environment_id, secret_id, version)
        + _field(project)
        + _field(environment)
        + _field(name)
    )
    return hmac.new(key, message, hashlib.sha256).digest()


def check(
    key: bytes,
    stored: bytes | None,
    *,
    project_id: int,
    project: str,
    environment_id: int,
    environment: str,
    secret_id: int,
    name: str,
    version: int,
) -> None:
    """Raise IntegrityError unless `stored` binds exactly this path and current version."""
    expected = compute(
        key,
        project_id=project_id,
        project=project,
        environment_id=environment_id,
        environment=environment,
        secret_id=secret_id,
        name=name,
        version=version,
    )
    if stored is None or not hmac.compare_digest(bytes(stored), expected):
        raise IntegrityError
