"""AwsBackend: AWS Secrets Manager through boto3.

Layouts (`layout` in the backends file):
- `per-key`: each Strongroom secret is one Secrets Manager secret named `{prefix}/{rel}` whose
  SecretString is the value.
- `json`: one Secrets Manager secret `{prefix}/{dir}` holds a JSON object of many keys; `rel` is
  `{dir}/{KEY}`. A key's version is its JSON secret's version; delete removes the key (a new version);
  undelete and destroy are refused.

Versions. Secrets Manager has version ids and staging labels (AWSCURRENT, AWSPREVIOUS), not numbers.
The broker writes version N with the version id `strongroom-v` + N in 20 digits (the ClientRequestToken),
so a read learns the number in the same call, and two writers racing for the same N collide in AWS
(ResourceExistsException) instead of both winning: check-and-set holds. A version written by another
tool is numbered by its position among the versions AWS still lists (oldest first), which takes one more
call to find and can shift when AWS drops deprecated versions. A read may pin a staging label or a
version id. Delete is Secrets Manager's scheduled deletion (recoverable for `recovery_window_days`),
undelete is RestoreSecret; destroying a single version is refused (AWS cannot do it).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

from broker.backends import aws_session, guard
from broker.backends.base import Origin, UpstreamMeta, UpstreamValue, UpstreamVersion
from broker.backends.config import AwsUpstream, read_secret_file
from broker.domain.values import SecretValue
from broker.errors import Conflict, Invalid, NotFound, Unavailable

T = TypeVar("T")
VID = "strongroom-v{:020d}"
VID_RE = re.compile(r"strongroom-v(\d{20})")
STAGE_RE = re.compile(r"[A-Za-z0-9_.-]{1,256}")


def number_of(version_id: str) -> int | None:
    """The version number encoded in a version id the broker wrote, else None."""
    m = VID_RE.fullmatch(version_id)
    return int(m[1]) if m else None


class AwsBackend:
    """A SecretBackend on one AWS account and region, confined to one name prefix."""

    def __init__(self, name: str, cfg: AwsUpstream) -> None:
        self._name = name
        self._cfg = cfg
        self._prefix = cfg.prefix
        self._json = cfg.layout == "json"
        self.kind = "aws-sm-json" if self._json else "aws-sm"
        self._label = f"aws backend {name}"
        label = f"backends.{name}"
        static = None
        if cfg.credentials is not None:
            c = cfg.credentials
            secret = (
                c.secret_access_key
                if c.secret_access_key is not None
                else read_secret_file(
                    c.secret_access_key_file, what=f"{label}.credentials.secret_access_key_file"
                )
            )
            static = (c.access_key_id, secret, c.session_token)
        self._client = aws_session.make_client(
            "secretsmanager",
            label=f"{label}.endpoint_url",
            region=cfg.region,
            endpoint_url=cfg.endpoint_url,
            allowed=guard.networks(cfg.allow_networks, field=f"{label}.allow_networks"),
            timeout=cfg.timeout,
            max_attempts=cfg.max_attempts,
            max_pool=cfg.max_workers,
            profile=cfg.profile,
            static=static,
            role_arn=cfg.role_arn,
        )

    @property
    def name(self) -> str:
        """The backend's name in the backends file."""
        return self._name

    # --- plumbing

    def _sdk(self, where: str, fn: Callable[..., T], **kwargs: Any) -> T:
        try:
            return fn(**kwargs)
        except aws_session.SDK_ERRORS as exc:
            raise aws_session.translate(exc, label=self._label, where=where) from None

    def _full(self, rel: str) -> str:
        return guard.inside(self._prefix, rel, where=self._label)

    def full_from_source(self, source: str) -> str:
        """An import source (a name or an ARN of this account and region) as a name under the prefix."""
        if source.startswith("arn:"):
            source = guard.secret_name_from_arn(
                source,
                partition=self._cfg.partition,
                region=self._cfg.region,
                account=self._cfg.account_id,
                where=self._label,
            )
        source = source.strip("/")
        guard.strip_prefix(self._prefix, source, where=self._label)
        return source

    def _origin(self, path: str, version_id: str | None) -> Origin:
        return Origin(self._name, self.kind, path, version_id)

    @staticmethod
    def _text(resp: Any, key: str, where: str, label: str) -> str:
        value = resp.get(key) if isinstance(resp, dict) else None
        if not isinstance(value, str):
            raise Unavailable(f"{label}: {where}: malformed answer (no {key})")
        return value

    def _versions(self, sid: str) -> list[dict[str, Any]]:
        """Every version AWS lists, oldest first, each with a `number`."""
        items: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {"SecretId": sid, "IncludeDeprecated": True, "MaxResults": 100}
        for _ in range(100):
            resp = self._sdk(sid, self._client.list_secret_version_ids, **kwargs)
            versions = resp.get("Versions")
            if not isinstance(versions, list):
                raise Unavailable(f"{self._label}: {sid}: malformed answer (no Versions)")
            items.extend(v for v in versions if isinstance(v, dict) and isinstance(v.get("VersionId"), str))
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        items.sort(key=lambda v: (v.get("CreatedDate") or datetime.min, v["VersionId"]))
        for position, item in enumerate(items, start=1):
            item["number"] = number_of(item["VersionId"]) or position
        return items

    def _number(self, sid: str, version_id: str) -> int:
        n = number_of(version_id)
        if n is not None:
            return n
        for item in self._versions(sid):
            if item["VersionId"] == version_id:
                return int(item["number"])
        return 0

    def _get(
        self, sid: str, *, version: int | None, pin: str | None
    ) -> tuple[str, str, int, datetime | None]:
        """(SecretString, VersionId, number, CreatedDate) of one version."""
        kwargs: dict[str, Any] = {"SecretId": sid}
        if pin is not None:
            if pin.startswith("AWS") or not re.fullmatch(r"[A-Za-z0-9-]{32,64}", pin):
                if STAGE_RE.fullmatch(pin) is None:
                    raise NotFound(
                        f"{sid}: upstream version {pin[:40]!r} is neither a staging label nor a version id"
                    )
                kwargs["VersionStage"] = pin
            else:
                kwargs["VersionId"] = pin
        elif version is not None:
            for item in self._versions(sid):
                if item["number"] == version:
                    kwargs["VersionId"] = item["VersionId"]
                    break
            else:
                raise NotFound(f"{sid}: no version {version}")
        resp = self._sdk(sid, self._client.get_secret_value, **kwargs)
        if resp.get("SecretString") is None and resp.get("SecretBinary") is not None:
            raise NotFound(f"{sid}: the upstream secret is binary; only text secrets are brokered")
        text = self._text(resp, "SecretString", sid, self._label)
        vid = self._text(resp, "VersionId", sid, self._label)
        created = resp.get("CreatedDate") if isinstance(resp.get("CreatedDate"), datetime) else None
        return text, vid, self._number(sid, vid), created

    def _describe(self, sid: str) -> dict[str, Any] | None:
        try:
            resp = self._sdk(sid, self._client.describe_secret, SecretId=sid)
        except NotFound:
            return None
        if not isinstance(resp, dict):
            raise Unavailable(f"{self._label}: {sid}: malformed answer")
        return resp

    @staticmethod
    def _current_vid(desc: dict[str, Any]) -> str | None:
        stages = desc.get("VersionIdsToStages") or {}
        for vid, labels in stages.items():
            if isinstance(labels, list) and "AWSCURRENT" in labels:
                return str(vid)
        return None

    def _blob(self, text: str, sid: str) -> dict[str, str]:
        try:
            doc = json.loads(text)
        except ValueError:
            raise Unavailable(f"{self._label}: {sid}: the JSON secret does not hold JSON") from None
        if not isinstance(doc, dict) or not all(isinstance(v, str) for v in doc.values()):
            raise Unavailable(f"{self._label}: {sid}: the JSON secret is not an object of text values")
        return doc

    def _split(self, rel: str) -> tuple[str, str]:
        full = self._full(rel)
        if "/" not in rel:
            raise Invalid(f"{self._label}: {rel}: the json layout needs the JSON secret's path and a key")
        sid, key = full.rsplit("/", 1)
        return sid, key

    def _put(self, sid: str, body: str, number: int, *, create: bool) -> str:
        vid = VID.format(number)
        if create:
            self._sdk(sid, self._client.create_secret, Name=sid, SecretString=body, ClientRequestToken=vid)
        else:
            self._sdk(
                sid, self._client.put_secret_value, SecretId=sid, SecretString=body, ClientRequestToken=vid
            )
        return vid

    # --- the protocol

    def read(self, rel: str, *, version: int | None = None, pin: str | None = None) -> UpstreamValue:
        """The current value (AWSCURRENT), version number `version`, or a staging label or version id `pin`."""
        if self._json:
            sid, key = self._split(rel)
            text, vid, n, created = self._get(sid, version=version, pin=pin)
            doc = self._blob(text, sid)
            if key not in doc:
                raise NotFound(f"{sid}: has no key {key}")
            return UpstreamValue(SecretValue(doc[key]), n, created, self._origin(f"{sid}#{key}", vid))
        sid = self._full(rel)
        text, vid, n, created = self._get(sid, version=version, pin=pin)
        return UpstreamValue(SecretValue(text), n, created, self._origin(sid, vid))

    def write(self, rel: str, value: str, *, cas: int | None) -> UpstreamMeta:
        """A new version numbered current + 1; AWS refuses a second writer of the same number."""
        name = rel.rsplit("/", 1)[-1]
        if self._json:
            sid, key = self._split(rel)
            desc = self._describe(sid)
            if desc is None:
                if cas not in (None, 0):
                    raise Conflict(f"{sid}#{key}: cas {cas} is stale; the secret does not exist")
                vid = self._put(sid, json.dumps({key: value}), 1, create=True)
                return UpstreamMeta(name, 1, False, None, None, self._origin(f"{sid}#{key}", vid))
            if desc.get("DeletedDate"):
                raise Conflict(f"{sid}: the JSON secret is scheduled for deletion upstream")
            text, _current, n, _ = self._get(sid, version=None, pin=None)
            doc = self._blob(text, sid)
            if cas == 0 and key in doc:
                raise Conflict(f"{sid}#{key}: cas 0 is stale; the key exists")
            if cas not in (None, 0) and (cas != n or key not in doc):
                raise Conflict(f"{sid}#{key}: cas {cas} is stale; current version is {n}")
            doc[key] = value
            vid = self._put(sid, json.dumps(doc), n + 1, create=False)
            return UpstreamMeta(name, n + 1, False, None, None, self._origin(f"{sid}#{key}", vid))
        sid = self._full(rel)
        desc = self._describe(sid)
        if desc is None:
            if cas not in (None, 0):
                raise Conflict(f"{sid}: cas {cas} is stale; the secret does not exist")
            vid = self._put(sid, value, 1, create=True)
            return UpstreamMeta(name, 1, False, None, None, self._origin(sid, vid))
        cur_vid = self._current_vid(desc)
        n = self._number(sid, cur_vid) if cur_vid else 0
        if cas == 0:
            raise Conflict(f"{sid}: cas 0 is stale; the secret exists (version {n})")
        if cas is not None and cas != n:
            raise Conflict(f"{sid}: cas {cas} is stale; current version is {n}")
        if desc.get("DeletedDate"):
            # Strongroom's model: a write to a deleted secret makes a new, live version.
            self._sdk(sid, self._client.restore_secret, SecretId=sid)
        vid = self._put(sid, value, n + 1, create=False)
        return UpstreamMeta(name, n + 1, False, None, None, self._origin(sid, vid))

    def _list_names(self, dir_full: str) -> list[dict[str, Any]]:
        kwargs: dict[str, Any] = {"IncludePlannedDeletion": True, "MaxResults": 100}
        head = dir_full + "/" if dir_full else ""
        if head:
            kwargs["Filters"] = [{"Key": "name", "Values": [head]}]
        out: list[dict[str, Any]] = []
        for _ in range(1000):
            resp = self._sdk(dir_full or "(root)", self._client.list_secrets, **kwargs)
            items = resp.get("SecretList")
            if not isinstance(items, list):
                raise Unavailable(f"{self._label}: {dir_full}: malformed answer (no SecretList)")
            for item in items:
                name = item.get("Name") if isinstance(item, dict) else None
                if (
                    isinstance(name, str)
                    and name.startswith(head)
                    and guard.SEGMENT.fullmatch(name[len(head) :])
                ):
                    out.append(item)
            token = resp.get("NextToken")
            if not token:
                break
            kwargs["NextToken"] = token
        out.sort(key=lambda i: i["Name"])
        return out

    def list_dir(self, rel_dir: str) -> list[UpstreamMeta]:
        """Every secret (per-key) or key (json) directly under the directory."""
        if self._json:
            sid = self._full(rel_dir)
            try:
                text, blob_vid, n, created = self._get(sid, version=None, pin=None)
            except NotFound:
                return []
            return [
                UpstreamMeta(k, n, False, created, created, self._origin(f"{sid}#{k}", blob_vid))
                for k in sorted(self._blob(text, sid))
            ]
        dir_full = self._full(rel_dir) if rel_dir else self._prefix
        out = []
        for item in self._list_names(dir_full):
            sid = item["Name"]
            vid: str | None = None
            for v, labels in (item.get("SecretVersionsToStages") or {}).items():
                if isinstance(labels, list) and "AWSCURRENT" in labels:
                    vid = str(v)
            n = self._number(sid, vid) if vid else 0
            out.append(
                UpstreamMeta(
                    sid.rsplit("/", 1)[-1],
                    n,
                    item.get("DeletedDate") is not None,
                    item.get("CreatedDate"),
                    item.get("LastChangedDate") or item.get("CreatedDate"),
                    self._origin(sid, vid),
                )
            )
        return out

    def read_many(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """Every current value under the directory: one call for json, a list and batch reads per-key."""
        if self._json:
            sid = self._full(rel_dir)
            try:
                text, vid, n, created = self._get(sid, version=None, pin=None)
            except NotFound:
                return {}
            return {
                k: UpstreamValue(SecretValue(v), n, created, self._origin(f"{sid}#{k}", vid))
                for k, v in self._blob(text, sid).items()
            }
        dir_full = self._full(rel_dir) if rel_dir else self._prefix
        names = [i["Name"] for i in self._list_names(dir_full) if i.get("DeletedDate") is None]
        out: dict[str, UpstreamValue] = {}
        for start in range(0, len(names), 20):
            chunk = names[start : start + 20]
            resp = self._sdk(dir_full, self._client.batch_get_secret_value, SecretIdList=chunk)
            values = resp.get("SecretValues")
            if not isinstance(values, list):
                raise Unavailable(f"{self._label}: {dir_full}: malformed answer (no SecretValues)")
            for item in values:
                sid, text, vid = item.get("Name"), item.get("SecretString"), item.get("VersionId")
                if (
                    not (isinstance(sid, str) and isinstance(text, str) and isinstance(vid, str))
                    or sid not in chunk
                ):
                    continue
                out[sid.rsplit("/", 1)[-1]] = UpstreamValue(
                    SecretValue(text), self._number(sid, vid), item.get("CreatedDate"), self._origin(sid, vid)
                )
            errors = [e for e in resp.get("Errors") or [] if isinstance(e, dict)]
            for e in errors:
                if e.get("ErrorCode") not in ("ResourceNotFoundException", "InvalidRequestException"):
                    raise Unavailable(
                        f"{self._label}: {dir_full}: batch read failed ({str(e.get('ErrorCode'))[:60]})"
                    )
        return out

    def delete(self, rel: str) -> int:
        """Scheduled deletion (per-key), or a new JSON version without the key (json)."""
        if self._json:
            sid, key = self._split(rel)
            text, _vid, n, _ = self._get(sid, version=None, pin=None)
            doc = self._blob(text, sid)
            if key not in doc:
                raise NotFound(f"{sid}#{key}: already deleted")
            del doc[key]
            self._put(sid, json.dumps(doc), n + 1, create=False)
            return n
        sid = self._full(rel)
        desc = self._describe(sid)
        if desc is None:
            raise NotFound(f"{sid}: no such secret")
        if desc.get("DeletedDate"):
            raise NotFound(f"{sid}: already deleted")
        cur = self._current_vid(desc)
        n = self._number(sid, cur) if cur else 0
        self._sdk(
            sid, self._client.delete_secret, SecretId=sid, RecoveryWindowInDays=self._cfg.recovery_window_days
        )
        return n

    def undelete(self, rel: str) -> UpstreamMeta:
        """RestoreSecret (per-key); refused for the json layout."""
        if self._json:
            raise Invalid(f"{self._label}: undelete is not possible in the json layout; write the key again")
        sid = self._full(rel)
        desc = self._describe(sid)
        if desc is None:
            raise NotFound(f"{sid}: no such secret")
        if not desc.get("DeletedDate"):
            raise Conflict(f"{sid}: not deleted")
        self._sdk(sid, self._client.restore_secret, SecretId=sid)
        cur = self._current_vid(desc)
        n = self._number(sid, cur) if cur else 0
        return UpstreamMeta(
            rel.rsplit("/", 1)[-1],
            n,
            False,
            desc.get("CreatedDate"),
            desc.get("LastChangedDate"),
            self._origin(sid, cur),
        )

    def destroy(self, rel: str, version: int) -> None:
        """Refused: Secrets Manager cannot erase a single version."""
        raise Invalid(
            f"{self._label}: AWS Secrets Manager cannot erase a single version; delete the secret instead "
            f"(recoverable for {self._cfg.recovery_window_days} days)"
        )

    def history(self, rel: str) -> tuple[int, list[UpstreamVersion]]:
        """Every version AWS still lists, newest first."""
        sid = self._split(rel)[0] if self._json else self._full(rel)
        desc = self._describe(sid)
        if desc is None:
            raise NotFound(f"{sid}: no such secret")
        deleted = desc.get("DeletedDate") is not None
        items = self._versions(sid)
        cur = self._current_vid(desc)
        current = next((int(i["number"]) for i in items if i["VersionId"] == cur), 0)
        out = [
            UpstreamVersion(
                int(i["number"]),
                i.get("CreatedDate"),
                deleted and i["VersionId"] == cur,
                False,
                i["VersionId"],
            )
            for i in reversed(items)
        ]
        return current, out

    def list_source(self, rel_dir: str) -> dict[str, UpstreamValue]:
        """For import: per-key, every secret directly under the directory; json, the keys of that secret."""
        return self.read_many(rel_dir)

    def close(self) -> None:
        """Close the client's connections."""
        with contextlib.suppress(AttributeError):
            self._client.close()
