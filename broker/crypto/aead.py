"""AES-256-GCM with the nonce made here, never by the caller.

A sealed blob is ``nonce (12 bytes) || ciphertext || tag (16 bytes)``. The nonce is 96 random
bits from ``os.urandom``; with random nonces one key must not seal more than 2**32 messages
(NIST SP 800-38D, section 8.3), which bounds how long a KEK may stay current.

There is no nonce-length field and no API that takes a nonce: the nonce is always the first
12 bytes, so a blob made with a nonce of any other length fails to open. Every failure to open
(short blob, wrong key, wrong AAD, any flipped bit, a foreign nonce length) raises the same
:class:`broker.errors.IntegrityError`, so callers and attackers learn nothing about which check
failed.

:class:`Aead` is for long-lived keys (KEKs): the cipher is keyed once. :func:`seal_once` and
:func:`open_once` are for keys that seal a single message (DEKs), where an object would be waste.
"""

from __future__ import annotations

import os
from typing import Final, NoReturn

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from broker.errors import IntegrityError

KEY_SIZE: Final = 32
NONCE_SIZE: Final = 12
TAG_SIZE: Final = 16
OVERHEAD: Final = NONCE_SIZE + TAG_SIZE


class Aead:
    """AES-256-GCM keyed once; seal() makes a fresh random nonce, open() raises IntegrityError."""

    __slots__ = ("_aesgcm",)

    def __init__(self, key: bytes) -> None:
        # Only the AESGCM object is kept, so the raw key is not reachable from this object.
        if len(key) != KEY_SIZE:
            raise ValueError("key must be 32 bytes")
        self._aesgcm = AESGCM(key)

    def seal(self, plaintext: bytes, aad: bytes) -> bytes:
        """Encrypt and authenticate plaintext; return nonce || ciphertext || tag."""
        nonce = os.urandom(NONCE_SIZE)
        return nonce + self._aesgcm.encrypt(nonce, plaintext, aad)

    def open(self, blob: bytes, aad: bytes) -> bytes:
        """Authenticate and decrypt a blob made by seal(); raise IntegrityError on any mismatch."""
        if len(blob) < OVERHEAD:
            raise IntegrityError
        try:
            return self._aesgcm.decrypt(blob[:NONCE_SIZE], blob[NONCE_SIZE:], aad)
        except InvalidTag:
            raise IntegrityError from None

    def __repr__(self) -> str:
        return "Aead(key=***)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        # Pickling would have to serialise the key; refuse rather than leak it into a cache or a log.
        raise TypeError("Aead objects hold key material and cannot be pickled")


def seal_once(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Seal with a key used for one message (a DEK); same blob as Aead(key).seal()."""
    # A DEK seals exactly one value, so keeping an Aead object around would only cost time.
    if len(key) != KEY_SIZE:
        raise ValueError("key must be 32 bytes")
    nonce = os.urandom(NONCE_SIZE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def open_once(key: bytes, blob: bytes, aad: bytes, start: int = 0) -> bytes:
    """Open the seal_once() blob that begins at blob[start]; raise IntegrityError on any mismatch."""
    # Reading at an offset spares the caller a copy of a blob that carries a header before the nonce.
    if len(key) != KEY_SIZE or start < 0 or len(blob) - start < OVERHEAD:
        raise IntegrityError
    body = start + NONCE_SIZE
    try:
        return AESGCM(key).decrypt(blob[start:body], blob[body:], aad)
    except InvalidTag:
        # Error reporters that capture frame locals (Sentry and the like) would otherwise get the
        # DEK of exactly the row that failed; dropping it costs nothing on the success path.
        del key
        raise IntegrityError from None
