"""Argv builders for docker and git: exact lists, secrets only by name or file path, never by value."""

from __future__ import annotations

import pytest

from cli.plans import docker, git


def test_build_passes_secrets_as_buildkit_files_and_clear_args_as_build_args() -> None:
    argv = docker.build(
        "docker",
        ref="127.0.0.1:5000/app:abc123",
        context="/src/app",
        service="app",
        dockerfile="/src/app/Dockerfile.prod",
        target="release",
        args={"RUBY_VERSION": "3.3", "APP_ENV": "production"},
        secret_files={"NPM_TOKEN": "/tmp/sr-x/NPM_TOKEN", "GEM_TOKEN": "/tmp/sr-x/GEM_TOKEN"},
    )
    assert argv == [
        "docker", "build",
        "--tag", "127.0.0.1:5000/app:abc123",
        "--label", "strongroom.service=app",
        "--file", "/src/app/Dockerfile.prod",
        "--target", "release",
        "--build-arg", "APP_ENV=production",
        "--build-arg", "RUBY_VERSION=3.3",
        "--secret", "id=GEM_TOKEN,src=/tmp/sr-x/GEM_TOKEN",
        "--secret", "id=NPM_TOKEN,src=/tmp/sr-x/NPM_TOKEN",
        "/src/app",
    ]  # fmt: skip
    assert docker.BUILD_ENV == {"DOCKER_BUILDKIT": "1"}


def test_minimal_build_and_network() -> None:
    assert docker.build("/usr/bin/docker", ref="app:v1", context=".", service="app", network="host") == [
        "/usr/bin/docker", "build", "--tag", "app:v1", "--label", "strongroom.service=app",
        "--network", "host", ".",
    ]  # fmt: skip


@pytest.mark.parametrize("path", ["/tmp/a,b/KEY", '/tmp/a"b/KEY'])
def test_secret_file_path_docker_would_misread_is_refused(path: str) -> None:
    with pytest.raises(ValueError, match="build secret KEY"):
        docker.build("docker", ref="a:b", context=".", service="a", secret_files={"KEY": path})


def test_login_reads_the_password_from_stdin() -> None:
    assert docker.login("docker", server="127.0.0.1:5000", username="ci") == [
        "docker", "login", "--username", "ci", "--password-stdin", "127.0.0.1:5000",
    ]  # fmt: skip
    assert docker.login("docker", server=None, username="ci") == [
        "docker", "login", "--username", "ci", "--password-stdin",
    ]  # fmt: skip
    assert docker.logout("docker", server="ghcr.io") == ["docker", "logout", "ghcr.io"]


def test_push_and_inspect() -> None:
    assert docker.push("docker", "r/app:v1") == ["docker", "push", "r/app:v1"]
    assert docker.repo_digests("docker", "r/app:v1") == [
        "docker", "image", "inspect", "--format", "{{json .RepoDigests}}", "r/app:v1",
    ]  # fmt: skip
    assert docker.image_exists("docker", "r/app:v1") == [
        "docker", "image", "inspect", "--format", "{{.Id}}", "r/app:v1",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("image", "server", "expected"),
    [
        ("app", "127.0.0.1:5000", "127.0.0.1:5000/app"),
        ("127.0.0.1:5000/app", "127.0.0.1:5000", "127.0.0.1:5000/app"),
        ("team/app", None, "team/app"),
        ("team/app", "docker.io", "team/app"),
        ("team/app", "ghcr.io", "ghcr.io/team/app"),
    ],
)
def test_repository_puts_the_registry_in_front_once(image: str, server: str | None, expected: str) -> None:
    assert docker.repository(image, server) == expected
    assert docker.image_ref(expected, "v2") == f"{expected}:v2"


def test_parse_repo_digest_picks_the_pushed_repository() -> None:
    digest = "sha256:" + "a" * 64
    other = "sha256:" + "b" * 64
    output = f'["other/app@{other}","127.0.0.1:5000/app@{digest}"]\n'
    assert docker.parse_repo_digest(output, "127.0.0.1:5000/app") == digest
    assert docker.parse_repo_digest("[]", "127.0.0.1:5000/app") is None
    assert docker.parse_repo_digest("null", "x") is None
    assert docker.parse_repo_digest("not json", "x") is None


def test_argv_text_quotes_for_people() -> None:
    assert docker.argv_text(["docker", "build", "--label", "a=b c"]) == "docker build --label 'a=b c'"


def test_git_argv() -> None:
    assert git.head_commit("git", "/src/app") == ["git", "-C", "/src/app", "rev-parse", "--verify", "HEAD"]
    assert git.tracked_changes("git", "/src") == [
        "git", "-C", "/src", "status", "--porcelain", "--untracked-files=no",
    ]  # fmt: skip


def test_only_the_process_module_and_the_runner_start_programs_and_nothing_uses_a_shell() -> None:
    """G43: one module per purpose starts programs (deploys: cli/deploy/process.py; run: cli/runner.py)."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[4]
    starting = re.compile(
        r"\bimport subprocess\b|\bfrom subprocess\b|\bos\.(system|popen|exec\w*|spawn\w*)\("
    )
    shell = re.compile(r"shell\s*=\s*True")
    starters = []
    for path in sorted([*(root / "cli").rglob("*.py"), *(root / "broker").rglob("*.py")]):
        text = path.read_text("utf-8")
        assert not shell.search(text), f"{path} passes shell=True"
        if starting.search(text):
            starters.append(path.relative_to(root).as_posix())
    assert starters == ["cli/deploy/process.py", "cli/runner.py"]
