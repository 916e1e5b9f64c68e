"""Strongroom envelope wire format, version 1, and the functions that read and write it.

A secret version is stored as three fields (:class:`broker.crypto.keyring.Sealed`):
``ciphertext``, ``wrapped_dek`` and ``kek_id``. Every value has its own random 32-byte data
encryption key (DEK); the DEK is wrapped by a key encryption key (KEK) named by ``kek_id``.
``||`` is concatenation; integers are unsigned big-endian.

Value ciphertext (``Sealed.ciphertext``), ``29 + len(plaintext)`` bytes::

    offset  size  field
    0       1     format version, 0x01
    1       12    nonce, 96 random bits
    13      n     AES-256-GCM ciphertext of the plaintext under the DEK
    13+n    16    GCM tag

    AAD = b"strongroom/v1/value\\x00" || caller_aad

Wrapped DEK (``Sealed.wrapped_dek``), at most ``1 + MAX_WRAPPED_SIZE`` bytes::

    offset  size  field
    0       1     format version, 0x01
    1       w     the KEK's wrapping of the 32-byte DEK (``Kek.wrap``). For LocalKek this is
                  nonce (12) || AES-256-GCM ciphertext of the DEK (32) || tag (16): w = 60.

    AAD = b"strongroom/v1/dek\\x00" || u8 len(kek_id) || kek_id (ASCII) || caller_aad

``kek_id`` matches ``[A-Za-z0-9][A-Za-z0-9._-]{0,63}``. Because the DEK's AAD carries the
KEK id and the caller's AAD, a wrapped DEK relabelled with another KEK id or copied to another
row fails to unwrap. The value AAD deliberately omits the KEK id so that a KEK rotation can
re-wrap the DEK without touching the value ciphertext.

For secret values, ``caller_aad`` is :func:`secret_aad`::

    b"secret\\x00" || u64 project_id || u64 environment_id || u64 version
                  || u32 len(name) || name (UTF-8)

Fixed-width integers and a length-prefixed name make the encoding injective: two different
(project, environment, name, version) tuples never give the same bytes. The label keeps it
apart from AADs that other kinds of sealed data may use later.

Parsing checks every length before slicing. Any failure (short or long blob, unknown version
byte, failed tag, DEK of the wrong size) raises the one opaque
:class:`broker.errors.IntegrityError`.
"""

from __future__ import annotations

import os
import re
import struct
from typing import TYPE_CHECKING, Final

from broker.crypto.aead import KEY_SIZE, open_once, seal_once
from broker.errors import IntegrityError

if TYPE_CHECKING:
    from broker.crypto.keyring import Kek

FORMAT_V1: Final = 0x01
DEK_SIZE: Final = KEY_SIZE
VALUE_AAD_PREFIX: Final = b"strongroom/v1/value\x00"
DEK_AAD_PREFIX: Final = b"strongroom/v1/dek\x00"
SECRET_AAD_LABEL: Final = b"secret\x00"
# A remote KEK (KMS, Vault transit) returns an opaque blob of its own size; the bound stops a
# corrupted row from feeding an arbitrarily large input to a remote service.
MAX_WRAPPED_SIZE: Final = 1024
KEK_ID_PATTERN: Final = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

_VERSION_PREFIX: Final = bytes((FORMAT_V1,))
_MAX_WRAPPED_BLOB_SIZE: Final = 1 + MAX_WRAPPED_SIZE
_U64_MAX: Final = 2**64 - 1
_SECRET_AAD_HEAD: Final = struct.Struct(">QQQI")

__all__ = [
    "DEK_AAD_PREFIX",
    "DEK_SIZE",
    "FORMAT_V1",
    "KEK_ID_PATTERN",
    "MAX_WRAPPED_SIZE",
    "VALUE_AAD_PREFIX",
    "DekWrapper",
    "check_kek_id",
    "dek_aad",
    "dek_aad_prefix",
    "new_dek",
    "open_value",
    "seal_value",
    "secret_aad",
]


def check_kek_id(kek_id: str) -> str:
    """Return kek_id if it is a valid KEK id, else raise ValueError."""
    if not isinstance(kek_id, str) or KEK_ID_PATTERN.fullmatch(kek_id) is None:
        raise ValueError("kek id must match [A-Za-z0-9][A-Za-z0-9._-]{0,63}")
    return kek_id


def dek_aad_prefix(kek_id: str) -> bytes:
    """Return the part of the DEK's AAD that binds it to one KEK id."""
    raw = check_kek_id(kek_id).encode("ascii")
    return DEK_AAD_PREFIX + bytes((len(raw),)) + raw


def dek_aad(kek_id: str, aad: bytes) -> bytes:
    """Return the full AAD under which the DEK of a row with this caller AAD is wrapped."""
    return dek_aad_prefix(kek_id) + aad


def secret_aad(*, project_id: int, environment_id: int, name: str, version: int) -> bytes:
    """Return the canonical AAD that binds a ciphertext to its project, environment, name and version."""
    for value in (project_id, environment_id, version):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= _U64_MAX:
            raise ValueError("project_id, environment_id and version must be integers in [0, 2**64)")
    raw_name = name.encode("utf-8")
    if len(raw_name) > 0xFFFFFFFF:
        raise ValueError("name is too long to encode")
    return (
        SECRET_AAD_LABEL
        + _SECRET_AAD_HEAD.pack(project_id, environment_id, version, len(raw_name))
        + raw_name
    )


def new_dek() -> bytes:
    """Return a fresh random 32-byte data encryption key."""
    return os.urandom(DEK_SIZE)


def seal_value(dek: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """Encrypt a value under its DEK; return the version-1 value ciphertext blob."""
    return _VERSION_PREFIX + seal_once(dek, plaintext, VALUE_AAD_PREFIX + aad)


def open_value(dek: bytes, blob: bytes, aad: bytes) -> bytes:
    """Decrypt a version-1 value ciphertext blob; raise IntegrityError if anything is wrong."""
    # open_once() checks the lengths; the version byte is this format's to check.
    if not blob or blob[0] != FORMAT_V1:
        raise IntegrityError
    try:
        return open_once(dek, blob, VALUE_AAD_PREFIX + aad, 1)
    except IntegrityError:
        # As in open_once(): keep the DEK out of frame locals that an error reporter may capture.
        del dek
        raise


class DekWrapper:
    """Wraps and unwraps DEKs in the version-1 format under one KEK, bound to that KEK's id."""

    __slots__ = ("_aad_prefix", "generates", "kek", "kek_id")

    def __init__(self, kek: Kek) -> None:
        self.kek = kek
        self.kek_id: str = check_kek_id(kek.key_id)
        # A remote KEK may make the DEK itself (KMS GenerateDataKey, transit datakey): one call, not two.
        self.generates: bool = callable(getattr(kek, "generate", None))
        # Built once: rebuilding it per call (regex check, encode, concatenations) costs about half
        # as much as the KEK decrypt itself on the read path.
        self._aad_prefix = dek_aad_prefix(self.kek_id)

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """Wrap a DEK for the row whose caller AAD is aad; return the wrapped DEK blob."""
        if len(dek) != DEK_SIZE:
            raise ValueError("dek must be 32 bytes")
        wrapped = self.kek.wrap(dek, self._aad_prefix + aad)
        if len(wrapped) > MAX_WRAPPED_SIZE:
            # Refusing at write time keeps every stored row readable within unwrap()'s bound.
            raise ValueError("the KEK returned a wrapped DEK larger than the format allows")
        return _VERSION_PREFIX + wrapped

    def generate(self, aad: bytes) -> tuple[bytes, bytes]:
        """A fresh DEK made by the KEK and its wrapped DEK blob (only when `generates`)."""
        dek, wrapped = self.kek.generate(self._aad_prefix + aad)  # type: ignore[attr-defined]
        if not isinstance(dek, bytes) or len(dek) != DEK_SIZE:
            raise ValueError("the KEK made a data key that is not 32 bytes")
        if not isinstance(wrapped, bytes) or len(wrapped) > MAX_WRAPPED_SIZE:
            raise ValueError("the KEK returned a wrapped DEK larger than the format allows")
        return dek, _VERSION_PREFIX + wrapped

    def refresh(self, wrapped: bytes, aad: bytes) -> bytes | None:
        """The blob re-wrapped by the KEK's own newest key version (Vault transit rewrap), or None if the
        KEK cannot do that; the DEK never leaves the KEK."""
        rewrap = getattr(self.kek, "rewrap", None)
        if rewrap is None:
            return None
        if not 1 < len(wrapped) <= _MAX_WRAPPED_BLOB_SIZE or wrapped[0] != FORMAT_V1:
            raise IntegrityError
        new = rewrap(wrapped[1:], self._aad_prefix + aad)
        if not isinstance(new, bytes) or len(new) > MAX_WRAPPED_SIZE:
            raise IntegrityError
        return _VERSION_PREFIX + new

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """Return the DEK of a wrapped DEK blob; raise IntegrityError if anything is wrong."""
        if not 1 < len(wrapped) <= _MAX_WRAPPED_BLOB_SIZE or wrapped[0] != FORMAT_V1:
            raise IntegrityError
        dek = self.kek.unwrap(wrapped[1:], self._aad_prefix + aad)
        if len(dek) != DEK_SIZE:
            del dek
            raise IntegrityError
        return dek

    def __repr__(self) -> str:
        return f"DekWrapper({self.kek!r})"
