"""VaultTransitKek: a key-encryption key held by Vault's (or OpenBao's) transit engine (a Kek).

- generate(): transit datakey (plaintext): transit makes the data key and returns it with its wrapping.
- wrap(): transit encrypt of a data key made elsewhere (rewrap from another kind of KEK).
- unwrap(): transit decrypt.
- rewrap(): transit rewrap, moving a wrapped key to the transit key's newest version without the data
  key ever leaving Vault (after `transit/keys/NAME/rotate`).
The transit key must be created with `derived=true`: every call passes our associated data as the
derivation `context`, so transit binds the wrapped key to its row (a wrong context fails to decrypt:
the opaque IntegrityError). The wrapped form is transit's `vault:vN:...` text as ASCII bytes.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, NoReturn

from broker.backends import guard
from broker.backends.vault_http import VaultHttp
from broker.crypto.envelope import check_kek_id
from broker.errors import IntegrityError, Invalid, Unavailable


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


class VaultTransitKek:
    """A Kek backed by one derived transit key."""

    def __init__(
        self,
        key_id: str,
        *,
        address: str,
        key: str,
        mount: str = "transit",
        token: str | None = None,
        approle: tuple[str, str, str] | None = None,
        namespace: str | None = None,
        allow_networks: tuple[guard.Network, ...] = (),
        timeout: float = 5.0,
        ca_file: Any = None,
    ) -> None:
        self.key_id: str = check_kek_id(key_id)
        guard.check_segments(mount, field="mount")
        guard.check_segments(key, field="key")
        self._mount = mount
        self._key = key
        self._http = VaultHttp(
            label=f"vault-transit key {key_id}",
            address=address,
            allowed=allow_networks,
            timeout=timeout,
            namespace=namespace,
            ca_file=ca_file,
            token=token,
            approle=approle,
        )

    def _data(self, op: str, body: dict[str, Any], *, decrypting: bool = False) -> dict[str, Any]:
        try:
            resp = self._http.call("POST", f"{self._mount}/{op}/{self._key}", body=body)
        except Invalid:
            if decrypting:
                raise IntegrityError from None
            raise
        data = (resp or {}).get("data")
        if not isinstance(data, dict):
            raise Unavailable(f"vault-transit key {self.key_id}: malformed answer")
        return data

    def _plain(self, data: dict[str, Any]) -> bytes:
        try:
            return base64.b64decode(str(data.get("plaintext", "")), validate=True)
        except (binascii.Error, ValueError):
            raise IntegrityError from None

    @staticmethod
    def _cipher(data: dict[str, Any]) -> bytes:
        text = data.get("ciphertext")
        if not isinstance(text, str) or not text.startswith("vault:v"):
            raise IntegrityError
        return text.encode("ascii")

    def generate(self, aad: bytes) -> tuple[bytes, bytes]:
        """transit datakey: a fresh 32-byte DEK and its wrapping."""
        data = self._data("datakey/plaintext", {"context": _b64(aad), "bits": 256})
        return self._plain(data), self._cipher(data)

    def wrap(self, dek: bytes, aad: bytes) -> bytes:
        """transit encrypt of a DEK made elsewhere."""
        return self._cipher(self._data("encrypt", {"plaintext": _b64(dek), "context": _b64(aad)}))

    def unwrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """transit decrypt; any failure to authenticate is the opaque IntegrityError."""
        try:
            text = wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError from None
        return self._plain(self._data("decrypt", {"ciphertext": text, "context": _b64(aad)}, decrypting=True))

    def rewrap(self, wrapped: bytes, aad: bytes) -> bytes:
        """transit rewrap to the key's newest version; the DEK never leaves Vault."""
        try:
            text = wrapped.decode("ascii")
        except UnicodeDecodeError:
            raise IntegrityError from None
        new = self._cipher(self._data("rewrap", {"ciphertext": text, "context": _b64(aad)}, decrypting=True))
        # Already at the newest key version: keep the stored bytes (a rerun changes nothing).
        return wrapped if new.split(b":", 2)[:2] == wrapped.split(b":", 2)[:2] else new

    def __repr__(self) -> str:
        return f"VaultTransitKek(key_id={self.key_id!r}, key={self._mount}/{self._key})"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("VaultTransitKek objects hold credentials and cannot be pickled")
