"""`systemd`: an `EnvironmentFile=` for a unit, quoted per systemd.exec(5).

Each value is written `NAME="value"` with only `\\` and `"` escaped: inside double quotes systemd
keeps every other character, a newline included, and never expands `$` or backticks in this file
(escaping them would leave a stray backslash on systemd before v240). Refused, because systemd
drops or cuts the assignment instead of carrying it:

- NUL (ends the C string), carriage return and the other control characters except tab and
  newline (systemd before v248 drops the whole assignment, with only a log line), DEL;
- lone surrogates (systemd skips lines that are not UTF-8);
- strings over the Linux environment limit.

A multi-line value (PEM key) is carried inside the quotes (systemd v239 and later); for secrets,
systemd's own route is a credential file (`LoadCredential=`), i.e. a file mount.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderOptions

_REFUSED_CONTROLS = "".join(chr(c) for c in range(32) if chr(c) not in "\t\n") + "\x7f"
_REFUSED = re.compile("[" + re.escape(_REFUSED_CONTROLS) + "]")
_ALTERNATIVE = "use a file mount (systemd LoadCredential=)"


def systemd_quote(value: str) -> str:
    """The double-quoted EnvironmentFile form of a value (backslash and double quote escaped)."""
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


class SystemdRenderer:
    """`NAME="value"` lines for a systemd unit's `EnvironmentFile=`."""

    name = "systemd"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Double-quote each value for systemd's EnvironmentFile parser, or refuse."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.systemd.env", self.name)
        lines = [
            f"# systemd EnvironmentFile for {options.service} ({options.environment}), rendered by Strongroom\n"
        ]
        for entry in checks.unique_sorted(entries, self.name):
            checks.posix_name(entry, self.name)
            data = checks.utf8(entry, self.name)
            if _REFUSED.search(entry.value):
                checks.refuse_chars(entry, self.name, _REFUSED_CONTROLS, _ALTERNATIVE)
            checks.env_string_size(entry, data, self.name)
            lines.append(f"{entry.name}={systemd_quote(entry.value)}\n")
        return [RenderedFile(path=path, content="".join(lines).encode(), holds_values=True)]
