"""The CI platform's OIDC ID token for `strongroom login --oidc`: from a file, GitLab's variable, or GitHub.

Looked for in this order: `--id-token-file`; the variable STRONGROOM_ID_TOKEN (the name to give GitLab's
`id_tokens:` keyword); GitHub Actions' request URL and token (ACTIONS_ID_TOKEN_REQUEST_URL and
ACTIONS_ID_TOKEN_REQUEST_TOKEN, present when the job has `permissions: id-token: write`), asked for the
audience; GitLab's older CI_JOB_JWT_V2. The ID token is a credential: it is never printed, and errors
name where it came from, never its text.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote, urlsplit

from cli.client import is_loopback
from cli.errors import CliError

MAX_BYTES = 16 * 1024
GITLAB_VARIABLE = "STRONGROOM_ID_TOKEN"
GITLAB_LEGACY_VARIABLE = "CI_JOB_JWT_V2"
GITHUB_URL = "ACTIONS_ID_TOKEN_REQUEST_URL"
GITHUB_TOKEN = "ACTIONS_ID_TOKEN_REQUEST_TOKEN"  # noqa: S105 (a variable's name)


def _checked(text: str, where: str) -> str:
    token = text.strip()
    if not token:
        raise CliError(f"the ID token from {where} is empty")
    if len(token) > MAX_BYTES or token.count(".") != 2 or not token.isascii() or not token.isprintable():
        raise CliError(f"the ID token from {where} is not a JWT (three base64url parts joined by dots)")
    return token


def from_github(url: str, bearer: str, *, audience: str, timeout: float = 10.0) -> str:
    """Ask GitHub Actions' token service for an ID token with `audience`."""
    import urllib.error
    import urllib.request

    parts = urlsplit(url)
    if parts.scheme != "https" and not (parts.scheme == "http" and is_loopback(parts.hostname or "")):
        raise CliError(f"{GITHUB_URL} must be an https:// URL")
    target = f"{url}{'&' if parts.query else '?'}audience={quote(audience, safe='')}"
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        target, headers={"Authorization": f"Bearer {bearer}", "Accept": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:  # noqa: S310
            body = response.read(MAX_BYTES * 2 + 1)
    except urllib.error.HTTPError as exc:
        raise CliError(f"GitHub's ID token service answered HTTP {exc.code}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise CliError(f"cannot reach GitHub's ID token service ({type(exc).__name__})") from None
    try:
        value = json.loads(body).get("value")
    except (ValueError, AttributeError):
        value = None
    if not isinstance(value, str):
        raise CliError("GitHub's ID token service answered without a token (`value`)")
    return _checked(value, "GitHub's ID token service")


def ci_id_token(*, id_token_file: Path | None, environ: Mapping[str, str], audience: str) -> tuple[str, str]:
    """The ID token and where it came from (for messages), or CliError saying where it was looked for."""
    if id_token_file is not None:
        try:
            text = id_token_file.read_bytes()[: MAX_BYTES + 1].decode("ascii", errors="replace")
        except OSError as exc:
            raise CliError(f"cannot read the ID token from {id_token_file}: {exc.strerror}") from None
        return _checked(text, str(id_token_file)), str(id_token_file)
    if environ.get(GITLAB_VARIABLE):
        return _checked(environ[GITLAB_VARIABLE], GITLAB_VARIABLE), GITLAB_VARIABLE
    if environ.get(GITHUB_URL) and environ.get(GITHUB_TOKEN):
        return from_github(environ[GITHUB_URL], environ[GITHUB_TOKEN], audience=audience), "GitHub Actions"
    if environ.get(GITLAB_LEGACY_VARIABLE):
        return _checked(environ[GITLAB_LEGACY_VARIABLE], GITLAB_LEGACY_VARIABLE), GITLAB_LEGACY_VARIABLE
    raise CliError(
        f"no CI ID token found: pass --id-token-file, set {GITLAB_VARIABLE} (GitLab: id_tokens), or run in "
        "GitHub Actions with `permissions: id-token: write`"
    )
