"""References in clear values: `${KEY}`, `${environment.KEY}`, `$$` for a literal dollar sign.

`${KEY}` is first a clear variable visible where the value is defined (a role or tag sees the global clear
variables under its own), else a value stored in the broker for the environment being compiled (inheritance
applied). `${production.KEY}` is the same lookup in another environment. A value is evaluated where it is
defined, so a global value means the same thing in every role. Stored values are never expanded: a password
containing `${x}` is carried as it is. Cycles and chains of more than MAX_DEPTH references are errors.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import NamedTuple

from broker.domain.manifest import EnvSection, Manifest, ManifestBody, ManifestPath, Problem

MAX_DEPTH = 10

_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
_INNER = re.compile(r"(?:([a-z0-9][a-z0-9-]{0,63})\.)?([A-Za-z_][A-Za-z0-9_]*)")


def is_slug(value: str) -> bool:
    """Whether `value` can name an environment."""
    return bool(_SLUG.fullmatch(value))


@dataclass(frozen=True)
class Ref:
    """A reference to a variable, in this environment (`environment` None) or in a named one."""

    environment: str | None
    name: str

    def text(self) -> str:
        """The reference as written."""
        return f"${{{self.environment + '.' if self.environment else ''}{self.name}}}"


Part = str | Ref


class TemplateError(ValueError):
    """A clear value's `$` syntax is wrong; `reason` says where in the value, never quoting it."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@functools.lru_cache(maxsize=8192)
def _parse(text: str) -> tuple[Part, ...] | TemplateError:
    parts: list[Part] = []
    buf: list[str] = []
    i, n = 0, len(text)
    while i < n:
        dollar = text.find("$", i)
        if dollar < 0:
            buf.append(text[i:])
            break
        buf.append(text[i:dollar])
        nxt = text[dollar + 1] if dollar + 1 < n else ""
        if nxt == "$":
            buf.append("$")
            i = dollar + 2
            continue
        if nxt != "{":
            return TemplateError(
                f"a lone $ at character {dollar + 1}: write $$ for a literal dollar sign or ${{NAME}} for a variable"
            )
        end = text.find("}", dollar + 2)
        match = _INNER.fullmatch(text, dollar + 2, end) if end >= 0 else None
        if match is None:
            return TemplateError(
                f"the reference at character {dollar + 1} must be ${{NAME}} or ${{environment.NAME}} "
                "(write $$ for a literal dollar sign)"
            )
        literal = "".join(buf)
        if literal:
            parts.append(literal)
        buf = []
        parts.append(Ref(match.group(1), match.group(2)))
        i = end + 1
    literal = "".join(buf)
    if literal:
        parts.append(literal)
    return tuple(parts)


def parse(text: str) -> tuple[Part, ...]:
    """Split a clear value into literal text and references, or raise TemplateError."""
    # Cached: a manifest's values are parsed by validation, the lint and each resolution pass.
    got = _parse(text)
    if isinstance(got, TemplateError):
        raise TemplateError(got.reason)
    return got


def literal(parts: tuple[Part, ...]) -> str | None:
    """The value if it has no references (with `$$` already turned into `$`), else None."""
    text: list[str] = []
    for part in parts:
        if not isinstance(part, str):
            return None
        text.append(part)
    return "".join(text)


def literal_text(parts: tuple[Part, ...]) -> str:
    """The literal parts only, references dropped (what the lint looks at)."""
    return "".join([p for p in parts if isinstance(p, str)])


# --- where clear values live ----------------------------------------------------------------------------

Scope = tuple[str, ...]  # ("global",), ("role", name), ("tag", name), ("accessory", name)
GLOBAL: Scope = ("global",)


def _sections(body: ManifestBody) -> Iterator[tuple[Scope, ManifestPath, EnvSection]]:
    yield GLOBAL, ("env",), body.env
    for tag, section in body.env.tags.items():
        yield ("tag", tag), ("env", "tags", tag), section
    for role, spec in body.roles.items():
        yield ("role", role), ("roles", role, "env"), spec.env
    for name, accessory in body.accessories.items():
        yield ("accessory", name), ("accessories", name, "env"), accessory.env


def sections(body: ManifestBody) -> Iterator[tuple[Scope, ManifestPath, EnvSection]]:
    """(scope, path, section) of every env section of a body: global, tags, roles, accessories."""
    return _sections(body)


def clear_templates(body: ManifestBody) -> list[tuple[ManifestPath, str, str]]:
    """(path, name, text) of every clear value in a body."""
    return [
        ((*path, "clear", name), name, text)
        for _scope, path, section in _sections(body)
        for name, text in section.clear.items()
    ]


def scopes(body: ManifestBody) -> list[Scope]:
    """Every scope of a body, global first."""
    return [scope for scope, _path, _section in _sections(body)]


def referenced_environments(manifest: Manifest, environment: str) -> list[str]:
    """`environment` and every environment its clear values reach through `${env.KEY}`, transitively."""
    seen = [environment]
    i = 0
    while i < len(seen):
        for _path, _name, text in clear_templates(manifest.for_environment(seen[i])):
            try:
                parts = parse(text)
            except TemplateError:
                continue
            for part in parts:
                if isinstance(part, Ref) and part.environment and part.environment not in seen:
                    seen.append(part.environment)
        i += 1
    return seen


Namespace = dict[str, tuple[Scope, ManifestPath, str]]  # name -> (defining scope, path, text)


def namespace(body: ManifestBody, scope: Scope) -> Namespace:
    """The clear variables visible in a scope: its own, over the global ones for a role or a tag."""
    out: Namespace = {}
    for sc, path, section in _sections(body):
        if sc == scope or (sc == GLOBAL and scope[0] in ("global", "role", "tag")):
            for name, text in section.clear.items():
                if sc == scope or name not in out:
                    out[name] = (sc, (*path, "clear", name), text)
    return out


def stored_names(manifest: Manifest, environment: str) -> set[tuple[str, str]]:
    """(environment, name) of each stored value compiling `environment` can read (secrets, unanswered references)."""
    # For another environment only its global scope is reachable, so any reference there is counted.
    # Each scope's own values only: a global value seen from a role or a tag reads nothing the global pass
    # has not counted (a name not visible in the role is not visible globally either).
    body = manifest.for_environment(environment)
    out = {(environment, name) for name in body.secret_names()}
    todo: list[tuple[str, list[Scope]]] = [(environment, scopes(body))]
    done: set[str] = set()
    global_names: dict[str, Namespace] = {}
    while todo:
        env, env_scopes = todo.pop()
        if env in done:
            continue
        done.add(env)
        view = manifest.for_environment(env)
        own = {scope: section for scope, _path, section in _sections(view)}
        for scope in env_scopes:
            section = own.get(scope)
            if section is None or not section.clear:
                continue
            visible = namespace(view, scope)
            for text in section.clear.values():
                got = _parse(text)
                if isinstance(got, TemplateError):
                    continue
                for part in got:
                    if not isinstance(part, Ref):
                        continue
                    if part.environment is None:
                        if part.name not in visible:
                            out.add((env, part.name))
                        continue
                    other = global_names.get(part.environment)
                    if other is None:
                        other = global_names[part.environment] = namespace(
                            manifest.for_environment(part.environment), GLOBAL
                        )
                    if part.name not in other:
                        out.add((part.environment, part.name))
                    todo.append((part.environment, [GLOBAL]))
    return out


# --- resolution -------------------------------------------------------------------------------------------


class StoredValue(NamedTuple):
    """A value stored in the broker, as the environment being read sees it (inheritance applied)."""

    # Named tuples rather than frozen dataclasses (here and Resolved): one per value of a compile, built
    # at a third of the cost; repr still never shows the value.
    value: str
    sensitive: bool
    version: int
    environment: str  # the environment it was stored in

    def __repr__(self) -> str:
        return (
            f"StoredValue(value=[REDACTED], sensitive={self.sensitive}, version={self.version}, "
            f"environment={self.environment!r})"
        )


Lookup = Callable[[str, str], StoredValue | None]


class Resolved(NamedTuple):
    """A clear value with its references replaced; sensitive if any stored value it used is."""

    value: str
    sensitive: bool
    reads: frozenset[tuple[str, str]]  # (environment, name) of each stored value used

    def __repr__(self) -> str:
        return f"Resolved(value=[REDACTED], sensitive={self.sensitive}, reads={sorted(self.reads)!r})"


class _Failed(Exception):
    pass


_Key = tuple[str, Scope, str]  # environment, defining scope, name


class Resolver:
    """Resolves clear values of any environment's scopes; problems are collected, not raised."""

    def __init__(self, manifest: Manifest, lookup: Lookup) -> None:
        self._manifest = manifest
        self._lookup = lookup
        self._memo: dict[_Key, tuple[Resolved, int] | None] = {}
        self._stack: list[_Key] = []
        self._active: set[_Key] = set()  # the keys on the stack, for the cycle check
        self._namespaces: dict[tuple[str, Scope], Namespace] = {}
        self.problems: list[Problem] = []

    def _namespace(self, environment: str, scope: Scope) -> Namespace:
        # Built once per scope: references look names up thousands of times.
        key = (environment, scope)
        if key not in self._namespaces:
            self._namespaces[key] = self._build_namespace(environment, scope)
        return self._namespaces[key]

    def _build_namespace(self, environment: str, scope: Scope) -> Namespace:
        return namespace(self._manifest.for_environment(environment), scope)

    _root_environment = ""

    def resolve_scope(
        self, environment: str, scope: Scope, names: Iterable[str] | None = None
    ) -> dict[str, Resolved]:
        """Every clear value visible in `scope` of `environment` (or only `names` of them), resolved, in
        order of name; failures become problems."""
        self._root_environment = environment
        visible = self._namespace(environment, scope)
        out: dict[str, Resolved] = {}
        for name in sorted(visible if names is None else names):
            defined = visible.get(name)
            got = self._node((environment, defined[0], name)) if defined is not None else None
            if got is not None:
                out[name] = got[0]
        return out

    def _problem(self, key: _Key, message: str) -> None:
        environment, scope, name = key
        path = self._namespace(environment, scope)[name][1]
        if environment != self._root_environment:
            message = f"{message} (as {environment} sees it)"
        problem = Problem(path, message)
        if problem not in self.problems:
            self.problems.append(problem)

    def _node(self, key: _Key) -> tuple[Resolved, int] | None:
        if key in self._memo:
            return self._memo[key]
        if key in self._active:
            cycle = [*self._stack[self._stack.index(key) :], key]
            names = " -> ".join(k[2] if k[0] == key[0] else f"{k[0]}.{k[2]}" for k in cycle)
            self._problem(key, f"reference cycle: {names}")
            for member in cycle:
                self._memo[member] = None
            return None
        self._stack.append(key)
        self._active.add(key)
        try:
            result = self._evaluate(key)
        finally:
            self._stack.pop()
            self._active.discard(key)
        return self._memo.setdefault(key, result)

    def _evaluate(self, key: _Key) -> tuple[Resolved, int] | None:
        environment, scope, name = key
        here = self._namespace(environment, scope)
        parts = _parse(here[name][2])
        if isinstance(parts, TemplateError):
            self._problem(key, parts.reason)
            return None
        out: list[str] = []
        sensitive = False
        reads: set[tuple[str, str]] = set()
        height = 0
        failed = False
        for part in parts:
            if isinstance(part, str):
                out.append(part)
                continue
            if part.environment is None:
                target_env, namespace = environment, here
            else:
                target_env = part.environment
                namespace = self._namespace(target_env, GLOBAL)
            defined = namespace.get(part.name)
            if defined is not None:
                got = self._node((target_env, defined[0], part.name))
                if got is None:
                    failed = True  # reported where it went wrong
                    continue
                resolved, below = got
                out.append(resolved.value)
                sensitive = sensitive or resolved.sensitive
                reads |= resolved.reads
                height = max(height, below + 1)
                continue
            stored = self._lookup(target_env, part.name)
            if stored is None:
                where = f"{target_env} (or the environments it inherits)"
                self._problem(
                    key,
                    f"{part.text()} names neither a clear variable here nor a secret stored in {where}",
                )
                failed = True
                continue
            out.append(stored.value)
            sensitive = sensitive or stored.sensitive
            reads.add((target_env, part.name))
            if not height:
                height = 1
        if failed:
            return None
        if height > MAX_DEPTH:
            # Only the first value whose chain is too long is reported; those above it fail with it.
            self._problem(key, f"references nest deeper than {MAX_DEPTH} levels")
            return None
        return Resolved("".join(out), sensitive, frozenset(reads)), height
