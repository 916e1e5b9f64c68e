"""`env-file`: docker and podman `--env-file`, which take every byte after the first `=` literally.

The format has no quoting and no escapes: the docker CLI (pkg/kvfile) and podman split each line at
the first `=`, skip lines starting with `#` and read a line without `=` from the *host's* environment
(so this renderer never writes one). Hence a value is carried only if the line scanner reads it back
unchanged, and refused otherwise:

- newline, carriage return (the scanner drops a trailing CR) and NUL;
- a value starting with `'` or `"` (proposed docker/cli changes for docker/cli#3630 strip matching
  outer quotes, and podman's multi-line env-file support, containers/podman#19096, reads quoted
  values specially: the readers disagree);
- a line over 65,535 bytes (bufio.Scanner's token limit; docker fails with "token too long");
- lone surrogates (docker refuses a file that is not UTF-8).

Leading and trailing spaces, `#`, `$`, quotes inside, backslashes and any other Unicode are carried
as they are. Multi-line values (PEM keys) have no route in this format: use a file mount.
"""

from __future__ import annotations

from collections.abc import Sequence

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderOptions

# bufio.MaxScanTokenSize is 64 KiB; the buffer must hold the line and its newline.
LINE_MAX_BYTES = 64 * 1024 - 1
# Suggested only where they carry the very value refused (checks.refuse tries them).
_OTHERS = ("compose", "dotenv", "k8s")


class EnvFileRenderer:
    """`NAME=value` lines for `docker run --env-file` / `podman run --env-file`."""

    name = "env-file"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Write each value verbatim after `NAME=`, or refuse what the line scanner would change."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.docker.env", self.name)
        lines = [
            f"# docker/podman --env-file for {options.service} ({options.environment}), rendered by Strongroom\n"
        ]
        for entry in checks.unique_sorted(entries, self.name):
            checks.posix_name(entry, self.name)
            data = checks.utf8(entry, self.name)
            checks.refuse_chars(entry, self.name, "\n\r\x00", checks.FILE_MOUNT, targets=_OTHERS)
            if entry.value[:1] in ("'", '"'):
                raise checks.refuse(
                    entry,
                    self.name,
                    "value starts with a quote, which some docker and podman releases strip (docker/cli#3630)",
                    checks.FILE_MOUNT,
                    targets=_OTHERS,
                )
            if len(entry.name.encode()) + 1 + len(data) > LINE_MAX_BYTES:
                raise checks.refuse(
                    entry,
                    self.name,
                    f"NAME=value is longer than {LINE_MAX_BYTES} bytes, the docker env-file line limit",
                    checks.FILE_MOUNT,
                    targets=_OTHERS,
                )
            lines.append(f"{entry.name}={entry.value}\n")
        return [RenderedFile(path=path, content="".join(lines).encode(), holds_values=True)]
