"""Keyed value fingerprints: `hmac-sha256:<hex>` of a value under the audit key, never the value.

As in Vault's audit hashing, the fingerprint lets an auditor ask "was this exact value ever served?"
through the broker (which holds the key) without the log itself revealing anything about values: it is
a keyed hash, so no one can test guesses offline. The audit key comes from the keyring document
(`audit_key`), outside the database; older documents without one derive it from `hmac_key`.
"""

from __future__ import annotations

import hashlib
import hmac

PREFIX = "hmac-sha256:"
_DERIVE_LABEL = b"strongroom/audit-fingerprint-key/v1"


def derive_key(hmac_key: bytes) -> bytes:
    """An audit key derived from the keyring's hmac_key (for documents that have no audit_key)."""
    return hmac.new(hmac_key, _DERIVE_LABEL, hashlib.sha256).digest()


def fingerprint(key: bytes, value: str) -> str:
    """The fingerprint of a value (UTF-8 text)."""
    return PREFIX + hmac.new(key, value.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()


def is_fingerprint(text: str) -> bool:
    """Whether text looks like a fingerprint this module makes."""
    digest = text[len(PREFIX) :]
    return text.startswith(PREFIX) and len(digest) == 64 and all(c in "0123456789abcdef" for c in digest)
