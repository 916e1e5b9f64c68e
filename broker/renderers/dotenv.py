"""`dotenv` (for python-dotenv, Node dotenv and Ruby dotenv) and `dotenv-export` (sourced by sh and bash).

dotenv: one `NAME='value'` line per variable, or `NAME="value"` when the value holds a single quote.
The quoting is chosen so that all three libraries read the same text:

- single quotes when the value has no `'`, no `\\\\` (python-dotenv reads it as one backslash) and
  does not end with a backslash (which would escape the closing quote);
- double quotes when the value has a `'` but no `"`, `\\`, `$` or backtick (Ruby substitutes
  `$VAR` and `$(cmd)`, Node does not unescape inside double quotes, a shell runs backticks);
- anything else is refused, as are NUL, carriage return (Node and Python's newline translation
  turn it into a newline) and `${...}` (python-dotenv expands it even in single quotes and has no
  escape for `$`). A newline is carried inside the quotes (a multi-line value such as a PEM key).
  Multi-line values need python-dotenv >= 0.10, Node dotenv >= 15 and Ruby dotenv >= 3.0; older
  readers go line by line, so a multi-line value holding `$(` is refused (Ruby dotenv 2.x would
  run the continuation line's command).

Either way the line also means the same to `sh`/`bash` sourcing the file (people do).

dotenv-export: `export NAME='value'` lines, every `'` written as `'\\''`: POSIX single quotes
take every byte literally, so `sh`, `dash` and `bash` (with or without `set -a`) never expand or
execute anything. Refuses only NUL (no shell can hold it), lone surrogates, names the shells treat
specially (bash read-only or dynamic variables) and strings over the Linux environment limit.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderOptions

# python-dotenv's own pattern (dotenv/variables.py): what it expands even inside single quotes.
_PYTHON_DOTENV_VARIABLE = re.compile(r"\$\{[^}:]*(?::-[^}]*)?\}")

# Suggested only where they carry the very value refused (checks.refuse tries them).
_DOTENV_OTHERS = ("dotenv-export", "env-file", "compose", "json")


def _header(options: RenderOptions, what: str) -> str:
    return f"# {what} for {options.service} ({options.environment}), rendered by Strongroom; do not edit.\n"


def dotenv_line(entry: Entry, target: str = "dotenv") -> str:
    """One dotenv line for the entry, or RenderError when no quoting reads the same in all three libraries."""
    checks.posix_name(entry, target)
    data = checks.utf8(entry, target)
    checks.refuse_chars(entry, target, "\x00\r", checks.FILE_MOUNT, targets=_DOTENV_OTHERS)
    checks.env_string_size(entry, data, target)
    value = entry.value
    if _PYTHON_DOTENV_VARIABLE.search(value):
        raise checks.refuse(
            entry,
            target,
            "value holds ${...}, which python-dotenv expands even inside quotes",
            checks.FILE_MOUNT,
            targets=_DOTENV_OTHERS,
        )
    if "\n" in value and "$(" in value:
        raise checks.refuse(
            entry,
            target,
            "value has several lines and a $(, which Ruby dotenv before 3.0 (line by line) would run as a command",
            checks.FILE_MOUNT,
            targets=_DOTENV_OTHERS,
        )
    if "'" not in value and "\\\\" not in value and not value.endswith("\\"):
        return f"{entry.name}='{value}'\n"
    if not any(c in value for c in '"\\$`'):
        return f'{entry.name}="{value}"\n'
    if "'" in value:
        reason = (
            "value mixes a single quote with a double quote, backslash, $ or backtick, which the dotenv "
            "readers (and shells sourcing the file) read differently"
        )
    else:  # single quotes failed only for the backslashes, and double quotes cannot hold one either
        reason = (
            "value has two backslashes in a row or ends with one, which python-dotenv unescapes inside "
            "single quotes, and the dotenv readers read a backslash differently inside double quotes"
        )
    raise checks.refuse(entry, target, reason, checks.FILE_MOUNT, targets=_DOTENV_OTHERS)


class DotenvRenderer:
    """`.env` for python-dotenv (interpolation on or off), Node dotenv and Ruby dotenv."""

    name = "dotenv"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Quote each value so that every dotenv library reads it back unchanged, or refuse."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.env", self.name)
        lines = [_header(options, "dotenv file")]
        lines += [dotenv_line(entry, self.name) for entry in checks.unique_sorted(entries, self.name)]
        return [RenderedFile(path=path, content="".join(lines).encode(), holds_values=True)]


# Names bash keeps read-only or recomputes (`_` is the last argument of the previous command):
# exporting them fails or loses the value.
SHELL_SPECIAL_NAMES = frozenset(
    {
        "BASHOPTS",
        "BASHPID",
        "BASH_ALIASES",
        "BASH_ARGC",
        "BASH_ARGV",
        "BASH_CMDS",
        "BASH_COMMAND",
        "BASH_LINENO",
        "BASH_SOURCE",
        "BASH_SUBSHELL",
        "BASH_VERSINFO",
        "DIRSTACK",
        "EPOCHREALTIME",
        "EPOCHSECONDS",
        "EUID",
        "FUNCNAME",
        "GROUPS",
        "HISTCMD",
        "LINENO",
        "OPTIND",
        "PPID",
        "RANDOM",
        "SECONDS",
        "SHELLOPTS",
        "SRANDOM",
        "UID",
        "_",
    }
)


def shell_quote(value: str) -> str:
    """POSIX single-quoting: every byte literal, `'` written as `'\\''`."""
    return "'" + value.replace("'", "'\\''") + "'"


class DotenvExportRenderer:
    """`export NAME='value'` lines for `set -a; . ./file; set +a` in sh, dash or bash."""

    name = "dotenv-export"

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Single-quote every value for POSIX shells, or refuse."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.export.sh", self.name)
        lines = [_header(options, "Shell environment (source it: set -a; . ./FILE; set +a)")]
        for entry in checks.unique_sorted(entries, self.name):
            checks.posix_name(entry, self.name)
            if entry.name in SHELL_SPECIAL_NAMES:
                raise checks.refuse(
                    entry,
                    self.name,
                    "bash treats this name specially (read-only or recomputed), so the value would be lost",
                    "rename the variable",
                )
            data = checks.utf8(entry, self.name)
            checks.refuse_chars(entry, self.name, "\x00", checks.FILE_MOUNT, targets=("json",))
            checks.env_string_size(entry, data, self.name)
            lines.append(f"export {entry.name}={shell_quote(entry.value)}\n")
        return [RenderedFile(path=path, content="".join(lines).encode(), holds_values=True)]
