"""`compose`: Docker Compose v2's own `.env` dialect (compose-go `dotenv`), for `env_file:` and `--env-file`.

Compose interpolates unquoted and double-quoted values (`${VAR}`, `$VAR`) and expands escapes in
double quotes. Every value is written double-quoted with:

- `$` doubled (`$$` is compose's literal dollar), so nothing is ever interpolated;
- `\\` written `\\\\` and `"` written `\\"`;
- newline written `\\n` and carriage return `\\r` (compose expands both in double quotes), so every
  variable stays on one line and a multi-line value (PEM key) is carried exactly.

Refused: NUL, lone surrogates, strings over the Linux environment limit, and a value ending with a
backslash (older compose-go releases read the `\\\\"` before the closing quote as an escaped quote).
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderOptions

# Suggested only where they carry the very value refused (checks.refuse tries them).
_OTHERS = ("env-file", "dotenv", "k8s")


def compose_quote(value: str) -> str:
    """The double-quoted compose form of a value ($ doubled, backslash, quote, newline, CR escaped)."""
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("$", "$$")
        .replace("\n", "\\n")
        .replace("\r", "\\r")
    )
    return '"' + escaped + '"'


class ComposeRenderer:
    """A compose `.env` file with every value double-quoted and `$` doubled."""

    name = "compose"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Double-quote each value in compose's dialect, or refuse."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.compose.env", self.name)
        lines = [
            f"# Docker Compose env file for {options.service} ({options.environment}), rendered by Strongroom\n"
        ]
        for entry in checks.unique_sorted(entries, self.name):
            checks.posix_name(entry, self.name)
            data = checks.utf8(entry, self.name)
            checks.refuse_chars(entry, self.name, "\x00", checks.FILE_MOUNT, targets=_OTHERS)
            checks.env_string_size(entry, data, self.name)
            if entry.value.endswith("\\"):
                raise checks.refuse(
                    entry,
                    self.name,
                    "value ends with a backslash, which older compose releases read as escaping the closing quote",
                    checks.FILE_MOUNT,
                    targets=_OTHERS,
                )
            lines.append(f"{entry.name}={compose_quote(entry.value)}\n")
        return [RenderedFile(path=path, content="".join(lines).encode(), holds_values=True)]
