"""Mask every value fetched during a deploy out of whatever docker, ssh or the remote script print.

Seeded with each value the run fetched (env files, the registry password, build secrets), in the forms a
program is likely to echo it: the value itself, each line of a multi-line value, JSON-escaped (with and
without \\u escapes), shell-quoted (POSIX and Ruby's Shellwords) and percent-encoded (as in a URL).

Values shorter than MIN_LENGTH characters are not masked: replacing every "1" or "on" in docker's output
would mangle it beyond use, and the gaps would tell a reader where the short value had been anyway. They
are counted in `skipped` so the caller can say so.
"""

from __future__ import annotations

import json
import re
import shlex
import threading
from collections.abc import Iterable
from urllib.parse import quote

MASK = "[REDACTED]"
MIN_LENGTH = 4
_SHELLWORDS_SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.,:+/@")


def _shellwords_escape(text: str) -> str:
    """Ruby's Shellwords.escape (what Kamal writes into commands): a backslash before each unsafe character."""
    escaped = "".join(ch if ch in _SHELLWORDS_SAFE or ch == "\n" else "\\" + ch for ch in text)
    return escaped.replace("\n", "'\n'")


def encodings(value: str) -> set[str]:
    """The forms of `value` a program may print: itself, its lines, JSON-, shell- and URL-escaped."""
    forms = {value}
    forms.update(line.rstrip("\r") for line in value.split("\n"))
    forms.add(json.dumps(value)[1:-1])
    forms.add(json.dumps(value, ensure_ascii=False)[1:-1])
    forms.add(shlex.quote(value))
    forms.add(_shellwords_escape(value))
    forms.add(quote(value, safe=""))
    return {form for form in forms if len(form) >= MIN_LENGTH}


class Redactor:
    """Replaces every seeded value (in each of its encodings) with [REDACTED]; callable on text."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self._forms: set[str] = set()
        self._pattern: re.Pattern[str] | None = None
        self._lock = threading.Lock()
        self.skipped = 0
        self.add(*values)

    def add(self, *values: str) -> None:
        """Seed more values (too-short ones are counted in `skipped`, not masked)."""
        with self._lock:
            for value in values:
                if len(value) < MIN_LENGTH:
                    if value:
                        self.skipped += 1
                    continue
                self._forms |= encodings(value)
            # Longest first, so that a value is masked whole rather than around a shorter value inside it.
            ordered = sorted(self._forms, key=lambda form: (-len(form), form))
            self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    def add_env_file(self, text: str) -> None:
        """Seed each value of a docker --env-file text (KEY=value lines; comments and blank lines ignored)."""
        values = []
        for line in text.splitlines():
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            _name, equals, value = line.partition("=")
            if equals:
                values.append(value)
        self.add(*values)

    def __call__(self, text: str) -> str:
        """`text` with every seeded form replaced by [REDACTED]."""
        pattern = self._pattern
        return pattern.sub(MASK, text) if pattern is not None and text else text

    text = __call__

    def __len__(self) -> int:
        return len(self._forms)
