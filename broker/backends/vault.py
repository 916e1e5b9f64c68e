"""VaultBackend: HashiCorp Vault (or OpenBao) KV version 2, through hvac.

Each Strongroom secret is one KV secret at `{mount}/{prefix}/{rel}` whose data holds the value under
`field` (default `value`). KV v2 maps onto Strongroom's model directly: Vault's version numbers are
ours, `cas` is passed to Vault's own check-and-set (so it is atomic), delete/undelete are KV soft
delete/undelete of the current version, destroy is KV destroy. Blocking: run in worker threads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import requests

from broker.backends import guard
from broker.backends.base import Origin, UpstreamMeta, UpstreamValue, UpstreamVersion
from broker.backends.config import VaultUpstream
from broker.backends.vault_http import VaultHttp, token_and_approle
from broker.domain.values import SecretValue
from broker.errors import BrokerError, Conflict, NotFound, Unavailable


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text or text.startswith("0001-"):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None


class VaultBackend:
    """A SecretBackend on one Vault KV v2 mount, confined to one prefix."""

    kind = "vault-kv2"

    def __init__(self, name: str, cfg: VaultUpstream) -> None:
        self._name = name
        self._cfg = cfg
        self._mount = cfg.mount
        self._prefix = cfg.prefix
        self._field = cfg.field
        label = f"backends.{name}"
        token, approle = token_and_approle(cfg.auth, where=label)
        self._http = VaultHttp(
            label=f"vault backend {name}",
            address=cfg.address,
            allowed=guard.networks(cfg.allow_networks, field=f"{label}.allow_networks"),
            timeout=cfg.timeout,
            namespace=cfg.namespace,
            ca_file=cfg.ca_file,
            token=token,
            approle=approle,
        )

    @property
    def name(self) -> str:
        """The backend's name in the backends file."""
        return self._name

    def _full(self, rel: str) -> str:
        return guard.inside(self._prefix, rel, where=f"vault backend {self._name}")

    def _origin(self, full: str, version: int | None) -> Origin:
        return Origin(
            self._name, self.kind, f"{self._mount}/{full}", None if version is None else str(version)
        )

    def _missing(self, full: str, version: int | None) -> Any:
        def make(resp: requests.Response) -> BrokerError:
            meta = (self._http.body_of(resp).get("data") or {}).get("metadata") or {}
            ver = meta.get("version", version)
            if meta.get("destroyed"):
                return NotFound(f"{self._mount}/{full}: version {ver} was destroyed")
            if _time(meta.get("deletion_time")) is not None:
                return NotFound(f"{self._mount}/{full}: version {ver} is deleted (undelete it to read)")
            if version is not None:
                return NotFound(f"{self._mount}/{full}: no version {version}")
            return NotFound(f"{self._mount}/{full}: no such secret")

        return make

    def _value_of(self, full: str, body: dict[str, Any], asked: int | None) -> UpstreamValue:
        data = body.get("data")
        inner = data.get("data") if isinstance(data, dict) else None
        meta = data.get("metadata") if isinstance(data, dict) else None
        if (
            not isinstance(inner, dict)
            or not isinstance(meta, dict)
            or not isinstance(meta.get("version"), int)
        ):
            raise Unavailable(f"vault backend {self._name}: {self._mount}/{full}: malformed KV v2 answer")
        value = inner.get(self._field)
        if not isinstance(value, str):
            raise NotFound(f"{self._mount}/{full}: the upstream secret has no text field {self._field!r}")
        ver = int(meta["version"])
        return UpstreamValue(
            SecretValue(value), ver, _time(meta.get("created_time")), self._origin(full, ver)
        )

    def read(self, rel: str, *, version: int | None = None, pin: str | None = None) -> UpstreamValue:
        """The current value, or version `version` (`pin`: a Vault version number as text)."""
        full = self._full(rel)
        if pin is not None:
            if not pin.isdigit() or not 0 < int(pin) < 2**31:
                raise NotFound(
                    f"{self._mount}/{full}: upstream version {pin[:40]!r} is not a Vault version number"
                )
            version = int(pin)
        params = {"version": version} if version is not None else None
        body = self._http.call(
            "GET", f"{self._mount}/data/{full}", params=params, not_found=self._missing(full, version)
        )
        if body is None:
            raise Unavailable(f"vault backend {self._name}: {self._mount}/{full}: empty answer")
        return self._value_of(full, body, version)

    def write(self, rel: str, value: str, *, cas: int | None) -> UpstreamMeta:
        """A new version through Vault's own check-and-set."""
        full = self._full(rel)
        payload: dict[str, Any] = {"data": {self._field: value}}
        if cas is not None:
            payload["options"] = {"cas": cas}
        body = self._http.call("POST", f"{self._mount}/data/{full}", body=payload)
        data = (body or {}).get("data")
        if not isinstance(data, dict) or not isinstance(data.get("version"), int):
            raise Unavailable(f"vault backend {self._name}: {self._mount}/{full}: malformed KV v2 answer")
        ver = int(data["version"])
        created = _time(data.get("created_time"))
        return UpstreamMeta(rel.rsplit("/", 1)[-1], ver, False, created, created, self._origin(full, ver))

    def _metadata(self, full: str) -> dict[str, Any]:
        body = self._http.call(
            "GET",
            f"{self._mount}/metadata/{full}",
            not_found=lambda _r: NotFound(f"{self._mount}/{full}: no such secret"),
        )
        data = (body or {}).get("data")
        if not isinstance(data, dict) or not isinstance(data.get("versions"), dict):
            raise Unavailable(f"vault backend {self._name}: {self._mount}/{full}: malformed KV v2 metadata")
        return data

    @staticmethod
    def _state(meta: dict[str, Any], version: int) -> tuple[bool, bool, dict[str, Any]]:
        entry = meta["versions"].get(str(version))
        if not isinstance(entry, dict):
            return False, False, {}
        return _time(entry.get("deletion_time")) is not None, bool(entry.get("destroyed")), entry

    def _meta(self, rel: str, full: str, meta: dict[str, Any]) -> UpstreamMeta:
        current = int(meta.get("current_version") or 0)
        deleted, destroyed, _ = self._state(meta, current)
        return UpstreamMeta(
            rel.rsplit("/", 1)[-1],
            current,
            deleted or destroyed,
            _time(meta.get("created_time")),
            _time(meta.get("updated_time")),
            self._origin(full, current),
        )

    def list_dir(self, rel_dir: str) -> list[UpstreamMeta]:
        """Every secret directly under the directory (sub-directories are not secrets)."""
        out: list[UpstreamMeta] = []
        try:
            keys = self._keys(rel_dir)
        except _Empty:
            return out
        for key in keys:
            rel = guard.join(rel_dir, key)
            full = self._full(rel)
            try:
                out.append(self._meta(rel, full, self._metadata(full)))
            except NotFound:
                continue
        return out

    def _keys(self, rel_dir: str) -> list[str]:
        full_dir = self._full(rel_dir) if rel_dir else self._prefix
        body = self._http.call("LIST", f"{self._mount}/metadata/{full_dir}", not_found=lambda _r: _Empty())
        keys = ((body or {}).get("data") or {}).get("keys")
        if not isinstance(keys, list):
            raise Unavailable(f"vault backend {self._name}: {self._mount}/{full_dir}: malformed KV v2 list")
        return sorted(
            k for k in keys if isinstance(k, str) and not k.endswith("/") and guard.SEGMENT.fullmatch(k)
        )

    def read_many(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """Every readable current value under the directory (deleted or field-less secrets left out)."""
        try:
            keys = self._keys(rel_dir)
        except _Empty:
            return {}
        out: dict[str, UpstreamValue] = {}
        for key in keys:
            try:
                out[key] = self.read(guard.join(rel_dir, key))
            except NotFound:
                continue
        return out

    def delete(self, rel: str) -> int:
        """Soft-delete the current version."""
        full = self._full(rel)
        meta = self._metadata(full)
        current = int(meta.get("current_version") or 0)
        deleted, destroyed, _ = self._state(meta, current)
        if deleted or destroyed:
            raise NotFound(f"{self._mount}/{full}: already deleted")
        self._http.call("POST", f"{self._mount}/delete/{full}", body={"versions": [current]})
        return current

    def undelete(self, rel: str) -> UpstreamMeta:
        """Undelete the current version."""
        full = self._full(rel)
        meta = self._metadata(full)
        current = int(meta.get("current_version") or 0)
        deleted, destroyed, _ = self._state(meta, current)
        if destroyed:
            raise Conflict(
                f"{self._mount}/{full}: version {current} was destroyed; roll back to an older version"
            )
        if not deleted:
            raise Conflict(f"{self._mount}/{full}: not deleted")
        self._http.call("POST", f"{self._mount}/undelete/{full}", body={"versions": [current]})
        return self._meta(rel, full, self._metadata(full))

    def destroy(self, rel: str, version: int) -> None:
        """KV destroy of one version."""
        full = self._full(rel)
        meta = self._metadata(full)
        if str(version) not in meta["versions"]:
            raise NotFound(f"{self._mount}/{full}: no version {version}")
        self._http.call("POST", f"{self._mount}/destroy/{full}", body={"versions": [version]})

    def history(self, rel: str) -> tuple[int, list[UpstreamVersion]]:
        """Every version Vault keeps, newest first."""
        full = self._full(rel)
        meta = self._metadata(full)
        out = []
        for key in meta["versions"]:
            if not str(key).isdigit():
                continue
            ver = int(key)
            deleted, destroyed, entry = self._state(meta, ver)
            out.append(UpstreamVersion(ver, _time(entry.get("created_time")), deleted, destroyed, str(ver)))
        out.sort(key=lambda v: v.version, reverse=True)
        return int(meta.get("current_version") or 0), out

    def list_source(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """For import: every KV secret under a directory; a secret with only `field` gives one value named
        after its path's last segment, any other secret gives one value per data key."""
        out: dict[str, UpstreamValue] = {}
        try:
            keys = self._keys(rel_dir)
        except _Empty:
            return {}
        for key in keys:
            full = self._full(guard.join(rel_dir, key))
            try:
                body = self._http.call(
                    "GET", f"{self._mount}/data/{full}", not_found=self._missing(full, None)
                )
            except NotFound:
                continue
            data = ((body or {}).get("data") or {}).get("data")
            meta = ((body or {}).get("data") or {}).get("metadata") or {}
            if not isinstance(data, dict):
                continue
            ver = int(meta.get("version") or 0)
            created = _time(meta.get("created_time"))
            items = {key: data[self._field]} if set(data) == {self._field} else dict(data)
            for k, v in items.items():
                if isinstance(v, str):
                    out[k] = UpstreamValue(SecretValue(v), ver, created, self._origin(full, ver))
        return out

    def close(self) -> None:
        """Close the HTTP session."""
        self._http.close()


class _Empty(NotFound):
    """A LIST of a directory that holds nothing (Vault answers 404)."""

    def __init__(self) -> None:
        super().__init__("empty")
