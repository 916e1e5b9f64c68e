"""Key sources: load the keyring from a file or STRONGROOM_KEYRING, create the development one, rotate.

Keyring document (JSON; the file is 0600):
    {"format": "strongroom-keyring/1", "dev": false, "current": "k-20261126-1a2b",
     "keys": {"k-20261126-1a2b": "<base64 of 32 bytes>", ...}, "hmac_key": "<base64 of 32 bytes>"}
`keys` are key-encryption keys by id (the current one wraps new data keys; all unwrap).
`hmac_key` keys the hashes of tokens and client secrets at rest.
`audit_key` (optional) keys the value fingerprints of the audit trail (`hmac-sha256:...`); it lives
here, outside the database, with the KEKs. A document without one derives it from `hmac_key`.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from broker.audit.fingerprint import derive_key as derive_audit_key
from broker.config import Settings
from broker.crypto.binding import derive_key as derive_binding_key
from broker.crypto.kek.local import LocalKek
from broker.crypto.keyring import Kek, Keyring
from broker.errors import Invalid
from broker.files import loose_mode, write_private

FORMAT = "strongroom-keyring/1"


@dataclass(frozen=True)
class KeyMaterial:
    """The loaded keyring plus the HMAC key; repr never shows key bytes."""

    keyring: Keyring
    hmac_key: bytes
    dev: bool
    source: str
    # Ids of KEKs whose wrap/unwrap is a network call (AWS KMS, Vault transit): run off the event loop.
    remote: frozenset[str] = frozenset()
    # Keys the audit trail's value fingerprints (broker/audit/fingerprint.py); empty: derived from hmac_key.
    audit_key: bytes = b""
    # The keyring file this came from and its (inode, size, mtime) when read: a running broker reloads
    # the file when the stamp changes (`reload_if_changed`). None for STRONGROOM_KEYRING.
    path: Path | None = None
    stamp: tuple[int, int, int] | None = None
    # Keys the path-and-version binding of each secret (broker/crypto/binding.py); derived from hmac_key.
    binding_key: bytes = b""

    def __post_init__(self) -> None:
        if not self.audit_key:
            object.__setattr__(self, "audit_key", derive_audit_key(self.hmac_key))
        object.__setattr__(self, "binding_key", derive_binding_key(self.hmac_key))

    def __repr__(self) -> str:
        return f"KeyMaterial(source={self.source!r}, current={self.keyring.current_id!r}, keys=***)"


def new_key_id(now: datetime) -> str:
    """A sortable, unique key id."""
    return f"k-{now:%Y%m%d}-{secrets.token_hex(3)}"


def _b64key(value: Any, field: str) -> bytes:
    try:
        raw = base64.b64decode(value, validate=True) if isinstance(value, str) else b""
    except (binascii.Error, ValueError):
        raw = b""
    if len(raw) != 32:
        raise Invalid(f"keyring {field}: must be the base64 of exactly 32 bytes", field=field)
    return raw


def parse_document(text: str, *, source: str) -> KeyMaterial:
    """Parse a keyring document, naming the bad field without echoing key material."""
    try:
        doc = json.loads(text)
    except ValueError:
        raise Invalid(f"{source}: not valid JSON", field="keyring") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise Invalid(f"{source}: format must be {FORMAT!r}", field="format")
    keys = doc.get("keys")
    if not isinstance(keys, dict) or not keys:
        raise Invalid(f"{source}: keys must be a non-empty object of key id to base64 key", field="keys")
    current = doc.get("current")
    if current not in keys:
        raise Invalid(f"{source}: current must name one of the keys", field="current")
    keks: list[Kek] = []
    remote: set[str] = set()
    for kid, val in keys.items():
        if isinstance(val, dict) and val.get("type") != "local":
            # A typed entry (issue 7): AWS KMS or Vault transit, built where the SDKs live.
            from broker.backends.keks import remote_kek

            keks.append(remote_kek(str(kid), val, source=source))
            remote.add(str(kid))
            continue
        if isinstance(val, dict) and set(val) != {"type", "key"}:
            raise Invalid(
                f"{source}: keys.{kid}: a local entry is {{'type': 'local', 'key': '<base64>'}}", field="keys"
            )
        keks.append(
            LocalKek(str(kid), _b64key(val.get("key") if isinstance(val, dict) else val, f"keys.{kid}"))
        )
    return KeyMaterial(
        keyring=Keyring(keks, current=str(current)),
        hmac_key=_b64key(doc.get("hmac_key"), "hmac_key"),
        dev=bool(doc.get("dev", False)),
        source=source,
        remote=frozenset(remote),
        audit_key=_b64key(doc["audit_key"], "audit_key") if "audit_key" in doc else b"",
    )


def new_document(now: datetime, *, dev: bool) -> dict[str, Any]:
    """A fresh keyring document with one key."""
    kid = new_key_id(now)
    return {
        "format": FORMAT,
        "dev": dev,
        "current": kid,
        "keys": {kid: base64.b64encode(os.urandom(32)).decode()},
        "hmac_key": base64.b64encode(os.urandom(32)).decode(),
        "audit_key": base64.b64encode(os.urandom(32)).decode(),
    }


def load(settings: Settings, *, now: datetime, create_dev: bool) -> tuple[KeyMaterial, bool]:
    """Load key material from settings; on the embedded default, create the dev keyring if missing.

    Returns the material and whether a new development keyring was created.
    """
    if settings.keyring is not None:
        return parse_document(settings.keyring, source="STRONGROOM_KEYRING"), False
    path = settings.resolved_key_file
    created = False
    if not path.exists():
        if settings.key_file is not None or not create_dev:
            raise Invalid(f"key file {path} does not exist", field="key_file")
        write_private(path, json.dumps(new_document(now, dev=True), indent=2).encode())
        created = True
    return _read_file(path, settings), created


def _stamp(st: os.stat_result) -> tuple[int, int, int]:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _read_file(path: Path, settings: Settings) -> KeyMaterial:
    st = path.stat()
    if (loose := loose_mode(path, "key file")) is not None:
        raise Invalid(loose, field="key_file")
    material = parse_document(path.read_text(), source=str(path))
    if material.dev and settings.production:
        raise Invalid(
            "production: the development keyring is refused; configure a real key source", field="key_file"
        )
    # Stamped as stat()ed before the read: a change during the read shows as a new stamp next time.
    return dataclasses.replace(material, path=path, stamp=_stamp(st))


def reload_if_changed(material: KeyMaterial, settings: Settings) -> KeyMaterial | None:
    """The keyring file read again if it changed since `material` was read (one stat() otherwise), else
    None. Rotation and retirement change only the KEKs: a file whose hmac_key or audit_key differs is
    refused (tokens, client secrets and fingerprints depend on them), as is one that fails to parse."""
    if material.path is None:
        return None
    try:
        now = _stamp(material.path.stat())
    except FileNotFoundError:
        raise Invalid(
            f"key file {material.path} disappeared; keeping the keyring in memory", field="key_file"
        ) from None
    if now == material.stamp:
        return None
    fresh = _read_file(material.path, settings)
    same = hmac.compare_digest(fresh.hmac_key, material.hmac_key)
    if not (same and hmac.compare_digest(fresh.audit_key, material.audit_key)):
        raise Invalid(
            f"key file {material.path}: hmac_key or audit_key changed; only keys may change while brokers "
            "run (restart them to change the others)",
            field="key_file",
        )
    return fresh


def rotate_file(path: Path, *, now: datetime, entry: dict[str, Any] | None = None) -> str:
    """Add a new key to a keyring file and make it current; returns the new key id.

    `entry` is a typed remote entry ({"type": "aws-kms", ...} or {"type": "vault-transit", ...});
    without it a new local key is generated. Keyrings may mix kinds.
    """
    doc = json.loads(path.read_text())
    parse_document(json.dumps(doc), source=str(path))
    kid = new_key_id(now)
    doc["keys"][kid] = entry if entry is not None else base64.b64encode(os.urandom(32)).decode()
    doc["current"] = kid
    parse_document(json.dumps(doc), source=str(path))
    write_private(path, json.dumps(doc, indent=2).encode())
    return kid


def retire_from_file(path: Path, key_id: str) -> None:
    """Remove a non-current key from a keyring file."""
    doc = json.loads(path.read_text())
    if key_id == doc.get("current"):
        raise Invalid(f"key {key_id} is current; rotate first", field="key_id")
    if key_id not in doc.get("keys", {}):
        raise Invalid(f"key {key_id} is not in {path}", field="key_id")
    del doc["keys"][key_id]
    write_private(path, json.dumps(doc, indent=2).encode())
