"""Manifest x stored values -> one environment's resolved variables, problems, and rendered files.

Pure: stored values come in through a lookup function (the broker's compile service reads and decrypts
them); nothing here touches a database, the network or the clock.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from broker.compiler import lint, references
from broker.compiler.references import GLOBAL, Lookup, Resolved, Resolver, Scope, StoredValue
from broker.domain.manifest import EnvSection, Manifest, ManifestBody, ManifestPath, Problem
from broker.errors import Invalid
from broker.renderers import kamal
from broker.renderers.base import Entry, RenderedFile, RenderError, RenderOptions, find_problems
from broker.renderers.kamal import ClearValue, KamalPlan, KamalRenderer
from broker.renderers.registry import TARGETS, get_renderer


@dataclass(frozen=True)
class Compiled:
    """One environment as the manifest describes it, with every value it needs resolved."""

    project: str | None
    environment: str
    manifest: Manifest
    body: ManifestBody
    clear: dict[Scope, dict[str, Resolved]]  # each scope's own clear names, resolved
    secrets: dict[str, StoredValue] = field(repr=False)
    problems: list[Problem]
    reads: frozenset[tuple[str, str]]  # (environment, name) of every stored value used

    @property
    def errors(self) -> list[Problem]:
        """Problems that stop a compile."""
        return [p for p in self.problems if p.level == "error"]

    def entries(self, role: str | None = None) -> list[Entry]:
        """The app's variables (or one role's, its own over the global ones), sorted; tags are Kamal-only."""
        sections: list[tuple[Scope, EnvSection]] = [(GLOBAL, self.body.env)]
        if role is not None:
            if role not in self.body.roles:
                raise Invalid(f"role: {role} is not defined under roles", field="role")
            sections.append((("role", role), self.body.roles[role].env))
        out: dict[str, Entry] = {}
        secrets = self.secrets
        for scope, section in sections:
            # A later section's name replaces an earlier one's, or removes it when it has no value.
            for name in section.secret:
                stored = secrets.get(name)
                if stored is None:
                    out.pop(name, None)
                else:
                    out[name] = Entry(name, stored.value, True)
            resolved_here = self.clear.get(scope, {})
            for name in section.clear:
                resolved = resolved_here.get(name)
                if resolved is None:
                    out.pop(name, None)
                else:
                    out[name] = Entry(name, resolved.value, resolved.sensitive)
        return [out[name] for name in sorted(out)]

    def secret_entries(self) -> list[Entry]:
        """Every secret the manifest names (env, roles, tags, accessories, builds, registry), sorted."""
        return [Entry(name, v.value, sensitive=True) for name, v in sorted(self.secrets.items())]

    def options(self) -> RenderOptions:
        """Render options for this environment."""
        return RenderOptions(environment=self.environment, service=self.body.service)

    def kamal_plan(self) -> KamalPlan:
        """What the kamal renderer needs: both manifest views and their clear values."""
        clear = {
            scope: {name: ClearValue(r.value, r.sensitive) for name, r in values.items()}
            for scope, values in self.clear.items()
        }
        base = self.manifest.base
        base_clear: dict[Scope, dict[str, str]] = {}
        for scope, section in _sections(base):
            for name, text in section.clear.items():
                value = references.literal(references.parse(text))
                if value is not None:
                    base_clear.setdefault(scope, {})[name] = value
        return KamalPlan(project=self.project, body=self.body, clear=clear, base=base, base_clear=base_clear)


def _sections(body: ManifestBody) -> list[tuple[Scope, EnvSection]]:
    out: list[tuple[Scope, EnvSection]] = [(GLOBAL, body.env)]
    out += [(("tag", t), s) for t, s in body.env.tags.items()]
    out += [(("role", r), spec.env) for r, spec in body.roles.items()]
    out += [(("accessory", a), spec.env) for a, spec in body.accessories.items()]
    return out


def _secret_paths(body: ManifestBody) -> dict[str, ManifestPath]:
    paths: dict[str, ManifestPath] = {}

    def note(path: ManifestPath, names: Sequence[str]) -> None:
        for i, name in enumerate(names):
            paths.setdefault(name, (*path, i))

    note(("env", "secret"), body.env.secret)
    for tag, section in body.env.tags.items():
        note(("env", "tags", tag, "secret"), section.secret)
    for role, spec in body.roles.items():
        note(("roles", role, "env", "secret"), spec.env.secret)
    for name, accessory in body.accessories.items():
        note(("accessories", name, "env", "secret"), accessory.env.secret)
    if body.builder is not None:
        note(("builder", "secrets"), body.builder.secrets)
    if body.registry is not None:
        paths.setdefault(body.registry.password, ("registry", "password"))
    certificate = body.proxy.certificate if body.proxy is not None else None
    if certificate is not None:
        paths.setdefault(certificate.certificate_pem, ("proxy", "ssl", "certificate_pem"))
        paths.setdefault(certificate.private_key_pem, ("proxy", "ssl", "private_key_pem"))
    return paths


def compile_environment(
    manifest: Manifest, environment: str, lookup: Lookup, *, with_lint: bool = True
) -> Compiled:
    """Resolve every clear value and secret of `environment`; problems are collected, not raised."""
    body = manifest.for_environment(environment)
    resolver = Resolver(manifest, lookup)
    clear: dict[Scope, dict[str, Resolved]] = {}
    for scope, section in _sections(body):
        # Each scope's own names: what they reference elsewhere is resolved (and reported) on the way.
        got = resolver.resolve_scope(environment, scope, section.clear)
        clear[scope] = {name: got[name] for name in section.clear if name in got}  # the manifest's order
    problems = list(resolver.problems)
    secrets: dict[str, StoredValue] = {}
    paths: dict[str, ManifestPath] | None = None  # where each secret is named, for problems only
    for name in body.secret_names():
        stored = lookup(environment, name)
        if stored is not None and stored.value != "":
            secrets[name] = stored
            continue
        if paths is None:
            paths = _secret_paths(body)
        if stored is None:
            problems.append(
                Problem(
                    paths[name],
                    f"{name} is not stored in {environment} (nor in the environments it inherits)",
                )
            )
        else:
            problems.append(Problem(paths[name], f"{name} is empty in {stored.environment}"))
    if with_lint:
        problems += lint.lint(body)
    reads = {(environment, name) for name in secrets}
    for values in clear.values():
        for resolved in values.values():
            reads |= resolved.reads
    return Compiled(
        project=manifest.project,
        environment=environment,
        manifest=manifest,
        body=body,
        clear=clear,
        secrets=secrets,
        problems=problems,
        reads=frozenset(reads),
    )


def check_targets(targets: Sequence[str]) -> list[str]:
    """The target names, deduplicated in order, or Invalid naming the known ones."""
    out: list[str] = []
    for target in targets:
        if target not in TARGETS:
            raise Invalid(
                f"targets: unknown target {target!r} (known: {', '.join(TARGETS)})", field="targets"
            )
        if target not in out:
            out.append(target)
    return out


def _problem(target: str, error: RenderError) -> Problem:
    return Problem(("targets", target), error.message)


def kamal_config_problems(compiled: Compiled) -> list[RenderError]:
    """What would stop Kamal 2.12 loading this environment's configuration (its rules, the TLS secrets)."""
    values = {name: stored.value for name, stored in compiled.secrets.items()}
    return kamal.config_problems(compiled.body) + kamal.certificate_problems(compiled.body, values)


def target_problems(compiled: Compiled, targets: Sequence[str], *, role: str | None = None) -> list[Problem]:
    """Every value each target cannot carry (for `check`)."""
    found: list[Problem] = []
    for target in check_targets(targets):
        if target == "kamal":
            found += [_problem(target, e) for e in kamal_config_problems(compiled)]
            renderer = KamalRenderer(compiled.kamal_plan())
            found += [
                _problem(target, e)
                for e in renderer.find_problems(compiled.secret_entries(), options=compiled.options())
            ]
            continue
        errors = find_problems(get_renderer(target), compiled.entries(role), options=compiled.options())
        found += [_problem(target, e) for e in errors]
    return found


def render(compiled: Compiled, targets: Sequence[str], *, role: str | None = None) -> list[RenderedFile]:
    """The files of every target, or Invalid (a RenderError) for the first value one cannot carry."""
    files: list[RenderedFile] = []
    for target in check_targets(targets):
        if target == "kamal":
            refused = kamal_config_problems(compiled)
            if refused:
                raise refused[0]
            files += KamalRenderer(compiled.kamal_plan()).render(
                compiled.secret_entries(), options=compiled.options()
            )
        else:
            files += get_renderer(target).render(compiled.entries(role), options=compiled.options())
    seen: set[str] = set()
    for item in files:
        if item.path in seen:
            raise Invalid(f"targets: two targets write {item.path}; compile them separately", field="targets")
        seen.add(item.path)
    return files
