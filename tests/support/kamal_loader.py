"""A test oracle: what Kamal 2.12.0's configuration loader refuses in a deploy.yml (merged with its destination).

Kamal itself cannot be installed here (it comes from RubyGems). This is the project's own emulation, written
from Kamal 2.12.0's documented configuration (lib/kamal/configuration/docs/*.yml: every key it knows) and the
refusals its loader raises, as a user meets them in `kamal config -d DESTINATION`; each rule below is pinned
by a test in tests/unit/compiler/test_kamal_config.py. It checks only what a configuration can break,
not what needs a network or a git checkout (the version, hooks, secrets files).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

VERSION = "2.12.0"

# The keys each section documents (docs/configuration.yml, role.yml, proxy.yml, builder.yml, registry.yml,
# accessory.yml, ssh.yml); any other key is "unknown".
KEYS = {
    "": {
        "service", "image", "labels", "volumes", "registry", "servers", "env", "asset_path", "hooks_path",
        "hooks_output", "secrets_path", "error_pages_path", "require_destination", "primary_role",
        "allow_empty_roles", "retain_containers", "minimum_version", "readiness_delay", "deploy_timeout",
        "drain_timeout", "stop_timeout", "run_directory", "ssh", "builder", "accessories", "proxy", "sshkit",
        "boot", "logging", "output", "aliases",
    },
    "role": {
        "hosts", "cmd", "stop_timeout", "options", "logging", "proxy", "labels", "env", "asset_path",
    },
    "proxy": {
        "host", "hosts", "app_port", "ssl", "ssl_redirect", "forward_headers", "response_timeout",
        "path_prefix", "path_prefixes", "strip_path_prefix", "healthcheck", "buffering", "logging", "run",
    },
    "healthcheck": {"interval", "path", "timeout"},
    "ssl": {"certificate_pem", "private_key_pem"},
    "builder": {
        "arch", "remote", "local", "pack", "cache", "context", "dockerfile", "target", "args", "secrets",
        "ssh", "driver", "provenance", "sbom",
    },
    "registry": {"server", "username", "password"},
    "accessory": {
        "service", "image", "registry", "host", "hosts", "role", "roles", "tag", "tags", "cmd", "port",
        "labels", "options", "env", "files", "directories", "volumes", "network", "proxy",
    },
    "ssh": {
        "user", "port", "proxy", "proxy_command", "log_level", "keys_only", "keys", "key_data", "config",
        "forward_agent",
    },
    "env": {"clear", "secret", "tags"},
}  # fmt: skip
_RESTART = re.compile(r"no|always|unless-stopped|on-failure(?::\d+)?")


def _unknown(section: Mapping[str, Any], kind: str, where: str) -> Iterator[str]:
    extra = sorted(str(k) for k in section if k not in KEYS[kind])
    if extra:
        yield f"{where}: unknown key{'s' if len(extra) > 1 else ''}: {', '.join(extra)}"


def _hosts(spec: Any) -> list[str]:
    listed = spec if isinstance(spec, list) else (spec or {}).get("hosts", [])
    out: list[str] = []
    for item in listed:
        host = next(iter(item)) if isinstance(item, dict) else item
        if host not in out:
            out.append(host)
    return out


def refusals(config: Mapping[str, Any]) -> list[str]:
    """Kamal's messages for everything this configuration breaks (empty: Kamal 2.12 loads it)."""
    found: list[str] = [*_unknown(config, "", "")]
    found = [m.removeprefix(": ") for m in found]
    servers = config.get("servers")
    roles: dict[str, Any] = {}
    if isinstance(servers, list):
        roles = {"web": servers}
    elif isinstance(servers, dict):
        roles = servers
    for name, spec in roles.items():
        if isinstance(spec, dict):
            found += _unknown(spec, "role", f"servers/{name}")
            restart = (spec.get("options") or {}).get("restart")
            if restart is not None and not (isinstance(restart, str) and _RESTART.fullmatch(restart)):
                found.append(
                    f"servers/{name}/options/restart: should be no, always, unless-stopped, on-failure, "
                    "or on-failure:N"
                )
    proxy = config.get("proxy")
    if isinstance(proxy, dict):
        found += _unknown(proxy, "proxy", "proxy")
        ssl = proxy.get("ssl")
        if isinstance(ssl, dict):
            found += _unknown(ssl, "ssl", "proxy/ssl")
            if ssl.get("certificate_pem") and not ssl.get("private_key_pem"):
                found.append(
                    "proxy: Missing private_key_pem setting (required when certificate_pem is present)"
                )
            if ssl.get("private_key_pem") and not ssl.get("certificate_pem"):
                found.append(
                    "proxy: Missing certificate_pem setting (required when private_key_pem is present)"
                )
        if ssl and not proxy.get("host") and not proxy.get("hosts"):
            found.append("proxy: Must set a host to enable automatic SSL")
        if isinstance(proxy.get("healthcheck"), dict):
            found += _unknown(proxy["healthcheck"], "healthcheck", "proxy/healthcheck")
    registry = config.get("registry") or {}
    found += _unknown(registry, "registry", "registry")
    if not str(registry.get("server", "")).startswith("localhost:"):
        for key in ("username", "password"):
            value = registry.get(key)
            if not value:
                found.append(f"registry/{key}: is required")
            elif not (isinstance(value, str) or (isinstance(value, list) and len(value) == 1)):
                found.append(
                    f"registry/{key}: should be a string or an array with one string (for secret lookup)"
                )
            else:
                continue
            break  # the registry is validated while it loads: Kamal stops at its first problem
    builder = config.get("builder") or {}
    found += _unknown(builder, "builder", "builder")
    if not builder.get("arch"):
        found.append("builder: Builder arch not set")
    for name, spec in (config.get("accessories") or {}).items():
        found += _unknown(spec, "accessory", f"accessories/{name}")
        if len(set(spec) & {"host", "hosts", "role", "roles", "tag", "tags"}) != 1:
            found.append(
                f"accessories/{name}: specify one of `host`, `hosts`, `role`, `roles`, `tag` or `tags`"
            )
        restart = (spec.get("options") or {}).get("restart")
        if restart is not None and not (isinstance(restart, str) and _RESTART.fullmatch(restart)):
            found.append(
                f"accessories/{name}/options/restart: should be no, always, unless-stopped, on-failure, "
                "or on-failure:N"
            )
        missing = [r for r in spec.get("roles") or [] if r not in roles]
        if missing:
            found.append(f"accessories/{name}: unknown roles {', '.join(missing)}")
    if isinstance(config.get("ssh"), dict):
        found += _unknown(config["ssh"], "ssh", "ssh")
    env = config.get("env")
    if isinstance(env, dict) and set(env) & KEYS["env"]:
        found += _unknown(env, "env", "env")
    # Without a registry Kamal has already stopped on registry/username above; this is reached only for service.
    if not config.get("service"):
        found.append("Missing required configuration for service")
    if not config.get("image") and not str(registry.get("server", "")).startswith("localhost:"):
        found.append("Missing required configuration for image")
    if not re.fullmatch(r"[a-z0-9_-]+", str(config.get("service", "")), re.IGNORECASE):
        found.append("Service name can only include alphanumeric characters, hyphens, and underscores")
    if servers is None:
        if not config.get("accessories"):
            found.append("No servers or accessories specified")
    elif "web" not in roles:
        found.append("The primary_role web isn't defined")
    found += _ssl_roles(config, roles)
    return found


def _ssl_roles(config: Mapping[str, Any], roles: Mapping[str, Any]) -> list[str]:
    # A role runs kamal-proxy when it is web (unless `proxy: false`) or says `proxy: true` (or a mapping);
    # the root proxy section is merged under the role's own, so its ssl and host apply to every such role.
    root = config.get("proxy") if isinstance(config.get("proxy"), dict) else {}
    found: list[str] = []
    ssl_hosts: list[str] = []
    for name, spec in roles.items():
        own = spec.get("proxy") if isinstance(spec, dict) else None
        running = own is not False if name == "web" else bool(own)
        if not running:
            continue
        merged = {**root, **(own if isinstance(own, dict) else {})}
        ssl = merged.get("ssl")
        if not ssl:
            continue
        custom = isinstance(ssl, dict) and ssl.get("certificate_pem") and ssl.get("private_key_pem")
        count = len(_hosts(spec))
        if count > 1 and not custom:
            found.append(
                "SSL is only supported on a single server unless you provide custom certificates, "
                f"found {count} servers for role {name}"
            )
        ssl_hosts += merged.get("hosts") or str(merged.get("host", "")).split(",")
    shared = sorted({h for h in ssl_hosts if ssl_hosts.count(h) > 1})
    if shared:
        found.append(f"Different roles can't share the same host for SSL: {', '.join(shared)}")
    return found
