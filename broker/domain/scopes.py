"""Token scopes: which actions on which projects, environments and (optionally) keys; default deny.

A scope with `keys` speaks only about the named secrets: as a grant it allows its actions on those keys
and never an environment-wide call (list, resolved, compile, export: key None); as a deny it refuses
those keys, and environment-wide calls too, since their answers would hold them.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from broker.domain.names import check_name
from broker.errors import Invalid

_PROJECT = re.compile(r"\*|[a-z0-9][a-z0-9-]{0,63}")
_ENV_GLOB = re.compile(r"[a-z0-9*?-]{1,64}")
MAX_KEYS = 1000


class Action(StrEnum):
    """What a scope allows."""

    READ = "read"
    WRITE = "write"
    ADMIN = "admin"
    AUDIT = "audit"


@dataclass(frozen=True, slots=True)
class Scope:
    """A grant (or, with deny, a refusal): actions on one project (or '*') and the environments matching a glob."""

    project: str
    environments: str
    actions: frozenset[Action]
    deny: bool = False
    keys: frozenset[str] | None = None  # None: every key

    def matches(
        self, action: Action, project: str | None, environment: str | None, key: str | None = None
    ) -> bool:
        """Return whether this scope speaks about `action` on the project, environment (and key) given."""
        if action not in self.actions:
            return False
        if self.keys is not None:
            # A grant on named keys never reaches an environment-wide call; a deny on them refuses it.
            if key is None and not self.deny:
                return False
            if key is not None and key not in self.keys:
                return False
        if project is None:
            # Project-less actions (identities, tokens by accessor) need a wildcard project grant.
            return self.project == "*"
        if self.project not in ("*", project):
            return False
        if environment is None:
            # A project-wide action is granted only by a scope over every environment; but a deny
            # over any environment of the project refuses it too (deny wins).
            return self.deny or self.environments == "*"
        return fnmatch.fnmatchcase(environment, self.environments)

    def allows(
        self, action: Action, project: str | None, environment: str | None, key: str | None = None
    ) -> bool:
        """Return whether this is a grant that covers the action."""
        return not self.deny and self.matches(action, project, environment, key)

    def touches(self, project: str) -> bool:
        """Return whether this grant names the project at all (to let its holder see it exists)."""
        return not self.deny and self.project in ("*", project)

    def covers(self, other: Scope) -> bool:
        """Return whether every grant of `other` is also granted by this scope (for child tokens)."""
        if self.deny or other.deny:
            return False
        if not other.actions <= self.actions:
            return False
        if self.project not in ("*", other.project):
            return False
        if self.keys is not None and (other.keys is None or not other.keys <= self.keys):
            return False
        if self.environments == "*":
            return True
        # A narrower glob cannot be proven a subset in general; only identical or literal-matching globs.
        if other.environments == self.environments:
            return True
        literal = not any(c in other.environments for c in "*?")
        return literal and fnmatch.fnmatchcase(other.environments, self.environments)

    def to_json(self) -> dict[str, Any]:
        """Serialise for storage and API responses."""
        out: dict[str, Any] = {
            "project": self.project,
            "environments": self.environments,
            "actions": sorted(a.value for a in self.actions),
        }
        if self.deny:
            out["deny"] = True
        if self.keys is not None:
            out["keys"] = sorted(self.keys)
        return out


def scope_from_json(data: Any, *, field: str = "scopes") -> Scope:
    """Parse a stored or submitted scope, raising Invalid naming the field."""
    if not isinstance(data, dict) or set(data) - {"project", "environments", "actions", "deny", "keys"}:
        raise Invalid(
            f"{field}: must be an object with project, environments, actions, deny and keys", field=field
        )
    deny = data.get("deny", False)
    if not isinstance(deny, bool):
        raise Invalid(f"{field}.deny: must be true or false", field=f"{field}.deny")
    project = data.get("project")
    envs = data.get("environments", "*")
    actions = data.get("actions")
    if not isinstance(project, str) or not _PROJECT.fullmatch(project):
        raise Invalid(f"{field}.project: must be a project slug or '*'", field=f"{field}.project")
    if not isinstance(envs, str) or not _ENV_GLOB.fullmatch(envs):
        raise Invalid(
            f"{field}.environments: must be an environment slug or a glob of [a-z0-9-*?]",
            field=f"{field}.environments",
        )
    if not isinstance(actions, list) or not actions:
        raise Invalid(f"{field}.actions: must be a non-empty list", field=f"{field}.actions")
    try:
        parsed = frozenset(Action(a) for a in actions)
    except ValueError:
        raise Invalid(
            f"{field}.actions: each must be one of read, write, admin, audit", field=f"{field}.actions"
        ) from None
    keys = _keys(data.get("keys"), field=f"{field}.keys")
    return Scope(project=project, environments=envs, actions=parsed, deny=deny, keys=keys)


def _keys(value: Any, *, field: str) -> frozenset[str] | None:
    if value is None:
        return None
    if not isinstance(value, list) or len(value) > MAX_KEYS:
        raise Invalid(f"{field}: must be a list of at most {MAX_KEYS} secret names", field=field)
    return frozenset(check_name(name, field=f"{field}[{i}]") for i, name in enumerate(value))


def scopes_from_json(items: Iterable[Any], *, field: str = "scopes") -> tuple[Scope, ...]:
    """Parse a list of scopes."""
    return tuple(scope_from_json(item, field=f"{field}[{i}]") for i, item in enumerate(items))


def allowed(
    scopes: Sequence[Scope],
    action: Action,
    project: str | None,
    environment: str | None,
    *,
    key: str | None = None,
) -> bool:
    """Default deny, and explicit deny wins: true only if some grant matches and no deny does."""
    if any(s.deny and s.matches(action, project, environment, key) for s in scopes):
        return False
    return any(s.allows(action, project, environment, key) for s in scopes)


def covered(parent: Sequence[Scope], child: Sequence[Scope]) -> bool:
    """Return whether each child grant is covered by some parent grant (child denies only narrow)."""
    grants = [p for p in parent if not p.deny]
    return all(c.deny or any(p.covers(c) for p in grants) for c in child)


def with_denies(parent: Sequence[Scope], child: Sequence[Scope]) -> tuple[Scope, ...]:
    """The child's scopes plus every deny of the parent, so delegation never drops a refusal."""
    out = list(child)
    out += [p for p in parent if p.deny and p not in out]
    return tuple(out)


ADMIN_SCOPES = (Scope(project="*", environments="*", actions=frozenset(Action)),)
