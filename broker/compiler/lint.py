"""The lint for clear values that look like secrets: by name, by a password inside a URL, by entropy.

Clear values end up in reviewable files (`strongroom.yml`, Kamal's `deploy.yml`) and in build arguments, so
a secret there is a leak. The lint looks at what the manifest itself says: the names, and the literal parts
of values (a `${REFERENCE}` is fine, that is the point of references). Findings are errors or warnings as
`lint.secret_like` says; names in `lint.allow` have been reviewed and are skipped.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Literal

from broker.compiler import references
from broker.domain.manifest import ManifestBody, ManifestPath, Problem

SECRET_SUFFIXES = (
    "_PASSWORD",
    "_PASSWD",
    "_PWD",
    "_PASS",
    "_TOKEN",
    "_SECRET",
    "_KEY",
    "_KEY_BASE",
    "_CREDENTIALS",
    "_PRIVATE_KEY",
)
SECRET_NAMES = frozenset({"PASSWORD", "PASSWD", "SECRET", "TOKEN", "API_KEY", "PRIVATE_KEY", "CREDENTIALS"})

_URL_PASSWORD = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:[^/\s@]+@")
_TOKEN = re.compile(r"[A-Za-z0-9+/=_-]{20,}")
# A DNS name as people write one: lower-case labels, two or more, ending in an alphabetic top-level label.
# Host names are public (they are in DNS), and their labels (`microblog-postgres-primary-2024`) would
# otherwise pass for random tokens. Upper-case or base64 text (a JWT, an API key) never matches.
_HOST_NAME = re.compile(
    r"(?<![A-Za-z0-9._-])(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}(?![A-Za-z0-9_-])(?!\.[A-Za-z0-9])"
)
_WORD_SEPARATOR = re.compile(r"[-_/]")
_HEX = re.compile(r"[0-9a-fA-F]+")
ENTROPY_BITS_PER_CHAR = 4.0
HEX_MIN = 32


def name_looks_secret(name: str) -> bool:
    """Whether a variable name says it holds a secret (`*_PASSWORD`, `*_TOKEN`, `*_SECRET`, `*_KEY`, ...)."""
    upper = name.upper()
    return upper in SECRET_NAMES or upper.endswith(SECRET_SUFFIXES) or upper.startswith("SECRET_")


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(c / len(text) * math.log2(c / len(text)) for c in counts.values())


def _words(token: str) -> bool:
    # `microblog-db-primary-2024`: lower-case words and numbers joined by '-', '_' or '/', an identifier
    # people chose; a random token mixes letters and digits (or cases) inside its parts.
    parts = [p for p in _WORD_SEPARATOR.split(token) if p]
    return len(parts) > 1 and all(p.isdigit() or (p.isalpha() and p.islower()) for p in parts)


def value_looks_secret(text: str) -> str | None:
    """Why a literal value looks like a secret (a URL with a password, a random token), or None."""
    if _URL_PASSWORD.search(text):
        return "it holds a URL with a password in it"
    for token in _TOKEN.findall(_HOST_NAME.sub(" ", text)):
        if _HEX.fullmatch(token):
            if len(token) >= HEX_MIN:
                return "it holds a long random-looking hex string"
            continue
        if _words(token):
            continue
        letters = [c for c in token if c.isalpha()]
        has_digits = any(c.isdigit() for c in token)
        # Without digits, only a random mix of cases counts: CamelCase words have few capitals.
        upper = sum(c.isupper() for c in letters) / len(letters) if letters else 0.0
        mixed = len(token) >= 24 and 0.3 <= upper <= 0.7
        if letters and (has_digits or mixed) and _entropy(token) >= ENTROPY_BITS_PER_CHAR:
            return "it holds a long random-looking string"
    return None


def _finding(name: str, text: str) -> str | None:
    return "its name says it is a secret" if name_looks_secret(name) else value_looks_secret(text)


def lint(body: ManifestBody) -> list[Problem]:
    """Every clear value or build argument that looks like a secret, at the level `lint.secret_like` sets."""
    level: Literal["error", "warning"] = "error" if body.lint.secret_like == "fail" else "warning"  # noqa: S105
    allowed = set(body.lint.allow)
    found: list[Problem] = []

    def note(path: ManifestPath, why: str) -> None:
        found.append(
            Problem(
                path,
                f"looks like a secret ({why}); move it under secret and store the value in the broker, "
                "or list the name under lint/allow once reviewed",
                level=level,
            )
        )

    # Paths are built only for findings: a manifest has hundreds of clear values and few findings.
    for _scope, section_path, section in references.sections(body):
        for name, text in section.clear.items():
            if name in allowed:
                continue
            try:
                literal = references.literal_text(references.parse(text))
            except references.TemplateError:
                continue  # reported by the parser
            why = _finding(name, literal)
            if why:
                note((*section_path, "clear", name), why)
    if body.builder is not None:
        for name, text in body.builder.args.items():
            why = None if name in allowed else _finding(name, text)
            if why:
                note(("builder", "args", name), why)
    return found
