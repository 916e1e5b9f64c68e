"""Argv builders for the local docker CLI (build, login, push, inspect). Pure: lists in, lists out.

What a secret never is here: an argument. Build secrets go in as BuildKit `--secret id=NAME,src=FILE`
(the file written 0600 by the engine), the registry password on `docker login --password-stdin`. Only the
manifest's clear builder args become `--build-arg`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence

# BuildKit is what makes `--secret` exist; the classic builder would refuse the flag.
BUILD_ENV: Mapping[str, str] = {"DOCKER_BUILDKIT": "1"}
SERVICE_LABEL = "strongroom.service"


def image_ref(repository: str, version: str) -> str:
    """`repository:version`, the tag a deploy builds, pushes and runs."""
    return f"{repository}:{version}"


def repository(image: str, server: str | None) -> str:
    """The image's full repository name: the registry server in front unless the image already names it."""
    if not server or server in ("docker.io", "index.docker.io") or image.startswith(f"{server}/"):
        return image
    return f"{server}/{image}"


def _secret_spec(name: str, path: str) -> str:
    # docker splits --secret's value as CSV on commas and keys on "=": a path holding either would be misread.
    if "," in path or '"' in path:
        raise ValueError(f"build secret {name}: its file path has a comma or quote docker would misread")
    return f"id={name},src={path}"


def build(
    docker: str,
    *,
    ref: str,
    context: str,
    service: str,
    dockerfile: str | None = None,
    target: str | None = None,
    args: Mapping[str, str] | None = None,
    secret_files: Mapping[str, str] | None = None,
    network: str | None = None,
) -> list[str]:
    """`docker build` of `context` tagged `ref`, labelled with the service; run it with BUILD_ENV."""
    argv = [docker, "build", "--tag", ref, "--label", f"{SERVICE_LABEL}={service}"]
    if dockerfile:
        argv += ["--file", dockerfile]
    if target:
        argv += ["--target", target]
    if network:
        argv += ["--network", network]
    for name, value in sorted((args or {}).items()):
        argv += ["--build-arg", f"{name}={value}"]
    for name, path in sorted((secret_files or {}).items()):
        argv += ["--secret", _secret_spec(name, path)]
    argv.append(context)
    return argv


def login(docker: str, *, server: str | None, username: str) -> list[str]:
    """`docker login` reading the password from stdin (the default registry when `server` is None)."""
    argv = [docker, "login", "--username", username, "--password-stdin"]
    if server:
        argv.append(server)
    return argv


def logout(docker: str, *, server: str | None) -> list[str]:
    """`docker logout` of `server` (the default registry when None)."""
    return [docker, "logout", *([server] if server else [])]


def push(docker: str, ref: str) -> list[str]:
    """`docker push ref`."""
    return [docker, "push", ref]


def repo_digests(docker: str, ref: str) -> list[str]:
    """`docker image inspect` printing the image's repository digests as JSON."""
    return [docker, "image", "inspect", "--format", "{{json .RepoDigests}}", ref]


def image_exists(docker: str, ref: str) -> list[str]:
    """`docker image inspect` that succeeds only when `ref` is present locally (prints only the id)."""
    return [docker, "image", "inspect", "--format", "{{.Id}}", ref]


def parse_repo_digest(output: str, repository_name: str) -> str | None:
    """The `sha256:…` digest of `repository_name` in `repo_digests`' output, or None when it has none."""
    try:
        digests = json.loads(output.strip() or "null")
    except ValueError:
        return None
    if not isinstance(digests, list):
        return None
    for item in digests:
        if isinstance(item, str):
            name, at, digest = item.rpartition("@")
            if at and name == repository_name and digest.startswith("sha256:"):
                return digest
    return None


def argv_text(argv: Sequence[str]) -> str:
    """An argv shown to a person (shell-quoted, for --dry-run and errors; never executed)."""
    import shlex

    return shlex.join(argv)
