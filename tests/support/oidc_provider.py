"""A real OpenID provider for the console's sign-in tests: panva's `oidc-provider` (a certified OpenID
provider library) from npm, run by Node on loopback with the script beside this file (oidc_provider.mjs).

The package is installed once into a cache (~/.cache/strongroom-oidc-provider/<version>, or
$STRONGROOM_OIDC_PROVIDER_CACHE/<version>) under a flock, so parallel test workers and checkouts share one
install. Each provider gets its own directory holding the script and a link to the cached node_modules
(Node resolves an ES module's imports from the script's own directory).

`walk_sign_in` signs a person in through the provider's development interactions by plain HTTP (login form,
then consent), for the tests that need no browser.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import selectors
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from html import unescape
from pathlib import Path
from typing import Any
from urllib.parse import urljoin

import requests

VERSION = "9.13.3"
SCRIPT = Path(__file__).with_name("oidc_provider.mjs")


def cache_dir() -> Path:
    """Where this version of the package is installed."""
    root = os.environ.get("STRONGROOM_OIDC_PROVIDER_CACHE") or str(
        Path.home() / ".cache" / "strongroom-oidc-provider"
    )
    return Path(root) / VERSION


def missing() -> str | None:
    """Why the provider cannot run here (no node or npm), or None."""
    for tool in ("node", "npm"):
        if shutil.which(tool) is None:
            return f"{tool} is not installed (apt-get install nodejs npm): the console sign-in tests need it"
    return None


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # blocks while another process installs the same version
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def install() -> Path:
    """The node_modules holding oidc-provider VERSION, installed from npm on first use."""
    target = cache_dir()
    done = target / ".complete"
    with _locked(target.parent / f".{VERSION}.lock"):
        if not done.exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir(parents=True)
            installed = subprocess.run(
                [
                    "npm",
                    "install",
                    "--no-audit",
                    "--no-fund",
                    "--silent",
                    "--prefix",
                    str(target),
                    f"oidc-provider@{VERSION}",
                ],
                check=False,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
            )
            if installed.returncode != 0:
                raise RuntimeError(
                    f"npm could not install oidc-provider@{VERSION} into {target}: {installed.stderr[-1500:]}"
                )
            done.touch()
    return target / "node_modules"


@dataclass
class Provider:
    """A running provider: its issuer URL and process."""

    issuer: str
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        """Stop the provider by its PID."""
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(
    root: Path,
    *,
    clients: list[dict[str, Any]],
    accounts: dict[str, dict[str, Any]],
    tamper: dict[str, dict[str, Any]] | None = None,
) -> Provider:
    """Start a provider in `root` with these confidential clients and accounts (and `tamper`: accounts whose
    ID tokens the token endpoint alters, see the script); returns once it listens."""
    modules = install()
    root.mkdir(parents=True, exist_ok=True)
    (root / "node_modules").symlink_to(modules)
    script = root / SCRIPT.name
    shutil.copyfile(SCRIPT, script)
    spec = root / "spec.json"
    spec.write_text(json.dumps({"clients": clients, "accounts": accounts, "tamper": tamper or {}}))
    spec.chmod(0o600)
    log = root / "provider.log"
    proc = subprocess.Popen(
        ["node", str(script), str(spec)],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=log.open("ab"),
        stdin=subprocess.DEVNULL,
    )
    assert proc.stdout is not None
    # The ready line is the condition; the deadline only bounds a provider that never starts.
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        ready = sel.select(timeout=60)
    line = proc.stdout.readline() if ready else b""
    if not line:
        proc.kill()
        proc.wait()
        raise RuntimeError(f"the OpenID provider did not start: {log.read_text()[-2000:]}")
    return Provider(issuer=json.loads(line)["issuer"], proc=proc, log=log)


_FORM = re.compile(r'<form[^>]*action="([^"]+)"[^>]*method="post"', re.IGNORECASE)


def walk_sign_in(http: requests.Session, url: str, *, login: str, until: str) -> str:
    """Follow the provider from the authorization URL `url` through its login and consent forms as `login`;
    the URL it finally sends the browser to (the first one starting with `until`, not visited)."""
    method, data = "GET", None
    for _ in range(20):
        r = http.request(method, url, data=data, allow_redirects=False, timeout=30)
        if r.is_redirect:
            url, method, data = urljoin(url, r.headers["location"]), "GET", None
            if url.startswith(until):
                return url
            continue
        assert r.status_code == 200, (r.status_code, r.text[:500])
        found = _FORM.search(r.text)
        assert found is not None, r.text[:500]
        url = urljoin(url, unescape(found.group(1)))
        prompt = "login" if 'name="login"' in r.text else "consent"
        method = "POST"
        data = (
            {"prompt": prompt, "login": login, "password": "any"} if prompt == "login" else {"prompt": prompt}
        )
    raise AssertionError("the provider never sent the browser back")
