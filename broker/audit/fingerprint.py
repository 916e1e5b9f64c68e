"""Keyed value fingerprints: `hmac-sha256:<hex>` of a value under the audit key, never the value.

As in Vault's audit hashing, the fingerprint lets an auditor ask "was this exact value ever served?"
through the broker (which holds the key) without the log itself revealing anything about values: it is
a keyed hash, so no one can test guesses offline. The audit key comes from the keyring document
(`audit_key`), outside the database; older documents without one derive it from `hmac_key`.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

PREFIX = "hmac-sha256:"
_DERIVE_LABEL = b"strongroom/audit-fingerprint-key/v1"
_BLOCK = 64  # SHA-256's block size, to which HMAC pads the key


def derive_key(hmac_key: bytes) -> bytes:
    """An audit key derived from the keyring's hmac_key (for documents that have no audit_key)."""
    return hmac.new(hmac_key, _DERIVE_LABEL, hashlib.sha256).digest()


def fingerprint(key: bytes, value: str) -> str:
    """The fingerprint of a value (UTF-8 text)."""
    return PREFIX + hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def fingerprints(key: bytes, values: Iterable[str]) -> list[str]:
    """The fingerprints of many values under one key: fingerprint(key, v) for each, in bulk."""
    # HMAC (RFC 2104) over hashlib with both padded-key states computed once and copied per value:
    # hmac.new sets an OpenSSL HMAC key up again for every value, which costs more than the hashing
    # itself for short values (a compile fingerprints every value it reads). Pinned to hmac.new by tests.
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    padded = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in padded))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in padded))
    del padded, key
    out = []
    for value in values:
        h = inner.copy()
        h.update(value.encode("utf-8", "surrogatepass"))
        o = outer.copy()
        o.update(h.digest())
        out.append(PREFIX + o.hexdigest())
    return out


def is_fingerprint(text: str) -> bool:
    """Whether text looks like a fingerprint this module makes."""
    digest = text[len(PREFIX) :]
    return text.startswith(PREFIX) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
