"""The consumers of rendered files, as test oracles: real parsers where they run here, faithful ports otherwise.

Real: python-dotenv (in the venv), Node dotenv (npm, see NODE_PREFIX), Ruby dotenv (Debian's
ruby-dotenv), sh/dash/bash (sourcing the export file), PyYAML, json, base64, and the docker engine
and podman (tests/integration/renderers). Ports, line by line from the upstream source, for the
property tests and for what cannot run here: docker/cli pkg/kvfile and podman pkg/env (both checked
against the real programs by the integration tests), compose-go v2 dotenv (checked against Docker
Compose v2.40.3 itself by tests/integration/renderers/test_compose_real.py), and systemd's
src/basic/env-file.c (no systemd manager runs here) with the env_assignment_is_valid() rules of
systemd v239-v247 (the strictest still shipped).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

# Where `.ci/run` (or a developer) installs Node's dotenv: npm install --prefix "$NODE_PREFIX" dotenv@17
NODE_PREFIX = Path(
    os.environ.get("STRONGROOM_ORACLE_NODE_PREFIX", Path.home() / ".cache" / "strongroom-oracles")
)


class ParseError(Exception):
    """The consumer refuses the file (the equivalent of its own error)."""


# --------------------------------------------------------------------------------------------
# Go helpers: bufio.Scanner with ScanLines, unicode.IsSpace
# --------------------------------------------------------------------------------------------
GO_MAX_SCAN_TOKEN = 64 * 1024
GO_SPACE = frozenset(
    "\t\n\v\f\r \x85\xa0\u1680\u2028\u2029\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
)


def go_scan_lines(data: bytes) -> Iterator[bytes]:
    """bufio.Scanner(ScanLines): split at \\n, drop one trailing \\r, fail on a line that does not fit 64 KiB."""
    start = 0
    while start < len(data):
        end = data.find(b"\n", start)
        if end == -1:
            line, start_next = data[start:], len(data)
            if len(line) > GO_MAX_SCAN_TOKEN:
                raise ParseError("bufio.Scanner: token too long")
        else:
            line, start_next = data[start:end], end + 1
            if len(line) + 1 > GO_MAX_SCAN_TOKEN:
                raise ParseError("bufio.Scanner: token too long")
        yield line.removesuffix(b"\r")
        start = start_next


def _go_trim_left_space(text: str) -> str:
    i = 0
    while i < len(text) and text[i] in GO_SPACE:
        i += 1
    return text[i:]


# --------------------------------------------------------------------------------------------
# docker/cli pkg/kvfile (docker CLI 20.10 opts/file.go behaves the same for lines with "=")
# --------------------------------------------------------------------------------------------
def docker_env_file(
    data: bytes, *, lookup: Callable[[str], str | None] = lambda _k: None, trim_quotes: bool = False
) -> list[tuple[str, str]]:
    """Port of kvfile.parseKeyValueFile; trim_quotes=True adds the pending docker/cli#3630 quote trimming."""
    out: list[tuple[str, str]] = []
    for number, raw in enumerate(go_scan_lines(data), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ParseError(f"invalid utf8 bytes at line {number}") from None
        if number == 1:
            text = text.removeprefix("\ufeff")
        line = _go_trim_left_space(text)
        if not line or line[0] == "#":
            continue
        key, sep, value = line.partition("=")
        if not key:
            raise ParseError(f"no variable name on line {line!r}")
        if " " in key or "\t" in key:
            raise ParseError(f"variable {key!r} contains whitespaces")
        if sep:
            out.append((key, _trim_quotes(value) if trim_quotes else value))
        else:
            found = lookup(line)
            if found is not None:
                out.append((key, _trim_quotes(found) if trim_quotes else found))
    return out


def _trim_quotes(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        return value[1:-1]
    return value


# --------------------------------------------------------------------------------------------
# podman pkg/env ParseFile
# --------------------------------------------------------------------------------------------
def podman_env_file(data: bytes, *, lookup: Callable[[str], str | None] = lambda _k: None) -> dict[str, str]:
    """Port of podman's env.ParseFile (scanner.Text, TrimLeft " \\t", first "=")."""
    env: dict[str, str] = {}
    for raw in go_scan_lines(data):
        line = raw.decode("utf-8", errors="surrogateescape").lstrip(" \t")
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        if not key:
            raise ParseError(f"invalid variable: {line!r}")
        name = key.lstrip(" \t")
        if sep:
            env[name] = value
        else:
            found = lookup(name)
            if found is not None:
                env[name] = found
    return env


# --------------------------------------------------------------------------------------------
# compose-go v2 dotenv (parser.go) + template substitution
# --------------------------------------------------------------------------------------------
def _compose_is_space(ch: str) -> bool:
    return ch in "\t\v\f\r \x85\xa0"


_COMPOSE_SIMPLE_ESCAPES = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v"}
_COMPOSE_ESCAPE_CHARS = 'abcfnrtv$"\\'


def _compose_expand_escapes(text: str) -> str:
    # regexp `(\\(?:[abcfnrtv$"\\]|0\d{0,3}))`, left to right, then strconv.UnquoteChar
    out: list[str] = []
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] in _COMPOSE_ESCAPE_CHARS:
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$$")
            elif nxt == "c":  # `\c` is no Go escape: UnquoteChar fails and the match is kept
                out.append("\\c")
            else:
                out.append(_COMPOSE_SIMPLE_ESCAPES.get(nxt, nxt))
            i += 2
        elif ch == "\\" and i + 1 < len(text) and text[i + 1] == "0":
            j = i + 2
            while j < len(text) and j < i + 5 and text[j].isdigit() and text[j].isascii():
                j += 1
            digits = text[i + 2 : j]
            # `\0ddd` is rewritten `\ddd` and unquoted: Go octal needs exactly three octal digits
            # (at most 0377); on failure the *rewritten* match is kept (the `0` is gone).
            if len(digits) == 3 and all(c in "01234567" for c in digits) and int(digits, 8) <= 255:
                out.append(chr(int(digits, 8)))
            else:
                out.append("\\" + digits)
            i = j
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _compose_substitute(text: str) -> str:
    """compose-go template.Substitute, strict: `$$` is a dollar; any other `$` would interpolate -> ParseError."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text[i] == "$":
            if text[i + 1 : i + 2] == "$":
                out.append("$")
                i += 2
                continue
            raise ParseError("compose would interpolate (or reject) a `$` here")
        out.append(text[i])
        i += 1
    return "".join(out)


def compose_env_file(data: bytes) -> dict[str, str]:
    """Port of compose-go v2 dotenv.parse for the statements our renderer writes (KEY="..." and comments)."""
    src = data.decode("utf-8")
    out: dict[str, str] = {}
    pos = 0
    while True:
        # getStatementStart: skip unicode spaces and `#` comment lines
        while pos < len(src) and src[pos] in GO_SPACE:
            pos += 1
        if pos >= len(src):
            return out
        if src[pos] == "#":
            nl = src.find("\n", pos)
            if nl == -1:
                return out
            pos = nl
            continue
        rest = src[pos:]
        if rest.startswith("export") and len(rest) > 6 and rest[6].isspace():
            rest = rest[6:]
            i = 0
            while i < len(rest) and _compose_is_space(rest[i]):
                i += 1
            rest = rest[i:]
        # scanKeyEnd
        end = None
        for i, ch in enumerate(rest):
            if _compose_is_space(ch):
                continue
            if ch in "=:\n":
                end = i
                break
            if ch in "_.-[]" or ch.isalpha() or ch.isnumeric():
                continue
            raise ParseError(f"unexpected character {ch!r} in variable name")
        if end is None:
            raise ParseError("zero length string / no separator")
        if rest[end] == "\n":
            raise ParseError("inherited key (no value): the renderer must never write one")
        key = rest[:end].rstrip()
        if " " in key:
            raise ParseError("key cannot contain a space")
        value_src = rest[end + 1 :]
        i = 0
        while i < len(value_src) and _compose_is_space(value_src[i]):
            i += 1
        value_src = value_src[i:]
        if not value_src or value_src[0] not in "'\"":
            raise ParseError("unquoted value: the renderer quotes every value")
        quote = value_src[0]
        chars: list[str] = []
        escaped = False
        closed_at = None
        for j in range(1, len(value_src)):
            ch = value_src[j]
            if escaped:
                escaped = False
                if ch != quote:
                    chars.append("\\")
                chars.append(ch)
                continue
            if ch == "\\":
                escaped = True
            elif ch == quote:
                closed_at = j
                break
            else:
                chars.append(ch)
        if closed_at is None:
            raise ParseError("unterminated quoted value")
        value = "".join(chars)
        if quote == '"':
            value = _compose_substitute(_compose_expand_escapes(value))
        out[key] = value
        consumed = len(src) - len(value_src) + closed_at + 1
        pos = consumed
        # after the closing quote only spaces, an optional comment and the newline may follow
        nl = src.find("\n", pos)
        tail = src[pos : (len(src) if nl == -1 else nl)]
        if tail.strip(" \t"):
            raise ParseError("text after the closing quote")
        pos = len(src) if nl == -1 else nl


# --------------------------------------------------------------------------------------------
# systemd src/basic/env-file.c parse_env_file_internal + load_env_file_push + strv_env_clean
# --------------------------------------------------------------------------------------------
_SD_WHITESPACE = b" \t\n\r"
_SD_NEWLINE = b"\n\r"
_SD_COMMENTS = b"#;"
_SD_SHELL_NEED_ESCAPE = b'"\\`$'
_SD_ARG_MAX = os.sysconf("SC_ARG_MAX")


def _sd_name_valid(key: bytes) -> bool:
    return (
        0 < len(key) <= _SD_ARG_MAX - 2
        and not key[:1].isdigit()
        and all(c in b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_" for c in key)
    )


def _sd_value_valid(value: bytes) -> bool:
    # v239-v247: valid UTF-8, no control characters but tab and newline, at most ARG_MAX - 3
    try:
        value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if any((c < 0x20 and c not in (0x09, 0x0A)) or c == 0x7F for c in value):
        return False
    return len(value) <= _SD_ARG_MAX - 3


def systemd_env_file(data: bytes) -> dict[str, str]:
    """What a unit's EnvironmentFile= gives the service: parse, utf-8 check, then drop invalid assignments."""
    data = data.split(b"\x00", 1)[0]  # a C string
    pairs: list[tuple[bytes, bytes | None]] = []
    state = "PRE_KEY"
    key = bytearray()
    value: bytearray | None = None
    last_key_ws: int | None = None
    last_value_ws: int | None = None

    def push() -> None:
        k = bytes(key[:last_key_ws] if last_key_ws is not None else key)
        pairs.append((k, None if value is None else bytes(value)))

    for c in data:
        b = bytes([c])
        if state == "PRE_KEY":
            if b in _SD_COMMENTS:
                state = "COMMENT"
            elif b not in _SD_WHITESPACE:
                state = "KEY"
                last_key_ws = None
                key.append(c)
        elif state == "KEY":
            if b in _SD_NEWLINE:
                state, key = "PRE_KEY", bytearray()
            elif b == b"=":
                state, last_value_ws = "PRE_VALUE", None
            else:
                if b not in _SD_WHITESPACE:
                    last_key_ws = None
                elif last_key_ws is None:
                    last_key_ws = len(key)
                key.append(c)
        elif state == "PRE_VALUE":
            if b in _SD_NEWLINE:
                state = "PRE_KEY"
                push()
                key, value = bytearray(), None
            elif b == b"'":
                state = "SINGLE_QUOTE_VALUE"
            elif b == b'"':
                state = "DOUBLE_QUOTE_VALUE"
            elif b == b"\\":
                state = "VALUE_ESCAPE"
            elif b not in _SD_WHITESPACE:
                state = "VALUE"
                value = value if value is not None else bytearray()
                value.append(c)
        elif state == "VALUE":
            if b in _SD_NEWLINE:
                state = "PRE_KEY"
                if value is not None and last_value_ws is not None:
                    del value[last_value_ws:]
                push()
                key, value = bytearray(), None
            elif b == b"\\":
                state, last_value_ws = "VALUE_ESCAPE", None
            else:
                value = value if value is not None else bytearray()
                if b not in _SD_WHITESPACE:
                    last_value_ws = None
                elif last_value_ws is None:
                    last_value_ws = len(value)
                value.append(c)
        elif state == "VALUE_ESCAPE":
            state = "VALUE"
            if b not in _SD_NEWLINE:
                value = value if value is not None else bytearray()
                value.append(c)
        elif state == "SINGLE_QUOTE_VALUE":
            if b == b"'":
                state = "PRE_VALUE"
            else:
                value = value if value is not None else bytearray()
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE":
            if b == b'"':
                state = "PRE_VALUE"
            elif b == b"\\":
                state = "DOUBLE_QUOTE_VALUE_ESCAPE"
            else:
                value = value if value is not None else bytearray()
                value.append(c)
        elif state == "DOUBLE_QUOTE_VALUE_ESCAPE":
            state = "DOUBLE_QUOTE_VALUE"
            value = value if value is not None else bytearray()
            if b in _SD_SHELL_NEED_ESCAPE:
                value.append(c)
            elif b != b"\n":
                value += b"\\" + b
        elif state == "COMMENT":
            if b == b"\\":
                state = "COMMENT_ESCAPE"
            elif b in _SD_NEWLINE:
                state = "PRE_KEY"
        elif state == "COMMENT_ESCAPE":
            state = "PRE_KEY" if b in _SD_NEWLINE else "COMMENT"
    if state in (
        "PRE_VALUE",
        "VALUE",
        "VALUE_ESCAPE",
        "SINGLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE",
        "DOUBLE_QUOTE_VALUE_ESCAPE",
    ):
        if state == "VALUE" and value is not None and last_value_ws is not None:
            del value[last_value_ws:]
        push()
    env: dict[str, str] = {}
    for k, v in pairs:
        try:
            k.decode("utf-8")
        except UnicodeDecodeError:
            continue  # check_utf8ness_and_warn: "invalid UTF-8 in key, ignoring"
        assignment_value = v if v is not None else b""
        if not _sd_name_valid(k) or not _sd_value_valid(assignment_value):
            continue  # strv_env_clean: "Ignoring invalid environment assignment"
        env[k.decode()] = assignment_value.decode()
    return env


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
