"""E32: value fingerprints are keyed HMACs in the `hmac-sha256:` form, never the value."""

from __future__ import annotations

import hashlib
import hmac

from broker.audit.fingerprint import PREFIX, derive_key, fingerprint, fingerprints, is_fingerprint


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


def test_bulk_fingerprints_are_the_same_hmacs() -> None:
    values = ["", "s3cr$t", "é\n\x00", "\ud800 lone surrogate", "x" * 1000]
    # Keys shorter than, equal to and longer than SHA-256's 64-byte block (a long key is hashed first).
    for key in (b"", b"k" * 32, bytes(range(64)), bytes(range(200))):
        assert fingerprints(key, values) == [fingerprint(key, v) for v in values]
        assert fingerprints(key, values)[1] == PREFIX + hmac.new(key, b"s3cr$t", hashlib.sha256).hexdigest()
    assert fingerprints(b"k" * 32, []) == []


def test_bulk_fingerprints_match_rfc_4231() -> None:
    # RFC 4231 test case 2 (HMAC-SHA-256, key "Jefe").
    (got,) = fingerprints(b"Jefe", ["what do ya want for nothing?"])
    assert got == PREFIX + "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
