"""E32: value fingerprints are keyed HMACs in the `hmac-sha256:` form, never the value."""

from __future__ import annotations

import hashlib
import hmac

from broker.audit.fingerprint import PREFIX, derive_key, fingerprint, is_fingerprint


def test_fingerprint_is_a_keyed_hmac() -> None:
    key = b"k" * 32
    got = fingerprint(key, "s3cr$t")
    assert got == PREFIX + hmac.new(key, b"s3cr$t", hashlib.sha256).hexdigest()
    assert is_fingerprint(got)
    assert "s3cr$t" not in got
    assert fingerprint(b"j" * 32, "s3cr$t") != got  # another key, another fingerprint
    assert fingerprint(key, "s3cr$t\n") != got  # exact bytes


def test_derived_key_is_stable_and_not_the_hmac_key() -> None:
    base = b"h" * 32
    assert derive_key(base) == derive_key(base) != base
    assert len(derive_key(base)) == 32


def test_is_fingerprint() -> None:
    assert not is_fingerprint("hmac-sha256:xyz")
    assert not is_fingerprint("sha256:" + "a" * 64)
    assert not is_fingerprint(PREFIX + "A" * 64)
