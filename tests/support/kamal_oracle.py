"""Kamal 2.12 reading `.kamal/secrets*` and writing its env file, emulated as a test oracle.

Versions emulated: Kamal 2.12.0 with dotenv 3.2.x (the default: Kamal 2.12's lock file pins dotenv 3.2.0,
and a fresh install gets 3.2.x) and dotenv 3.1.x (Kamal 2 accepts any dotenv ~> 3.1). The 3.1 line
grammar is 3.1.5-3.1.8's; 3.1.0-3.1.4 also need `=` or `:` after a key, check `export` lines apart, and
let the process environment win over the file inside a command's own variables (the generated files
read the same under all of them, unless a deployer exports STRONGROOM_DOTENV_ORDER, which the fetch
refuses). The Kamal gem cannot be installed here (no access to rubygems.org), so this is the project's
own emulation, written for this project from how those versions behave (learned by reading their
documentation and source and by running the released versions by hand); no code of theirs is
reproduced. Each behaviour is pinned by its own test in tests/unit/compiler/test_kamal_oracle.py:

- dotenv's `.env` grammar: `KEY=value`, `KEY: value`, `export KEY=value`; single-quoted values taken as
  written; double-quoted and bare values unescaped (a backslash before any character but `$` is dropped;
  in double quotes `\\n` and `\\r` stay as written, the legacy line-break mode is not emulated); a bare
  value ends at `#`; quoted values may span lines; CR and CRLF read as LF.
- Substitutions on double-quoted and bare values: variables (`$NAME`, `${NAME}`, `$1`; `\\$` gives `$`;
  `$(` is never one; the name is looked up in the lines read so far, then the process environment, else
  empty) and commands (Kamal replaces dotenv's with its own: `$(...)` with balanced parentheses and
  backslash escapes inside, `\\$(...)` left as `$(...)`; the command's variables substituted first; a
  `kamal secrets ...` command runs inside Kamal, anything else as Ruby's backticks run it: in `sh` when
  it needs a shell, else started directly, an unknown program raising; one trailing line break dropped).
  dotenv 3.2 substitutes commands first and then variables over the whole result, a command's output
  included; dotenv 3.1 substitutes variables first, so a command's output is kept as it is.
- Kamal: `.kamal/secrets-common` then `.kamal/secrets.<destination>`, each read on its own (later files
  win); `kamal secrets extract NAME JSON` (the JSON's NAME, or a key ending in `/NAME`; else an error);
  `kamal secrets print` (`NAME=value` lines); the env file it hands to `docker run --env-file` and the
  double-quoted shell words of `docker login` (each ASCII run written with String#dump, `\\"` and `\\#`
  unescaped in the env file; in the shell word backticks escaped and `$` escaped unless it begins `${...}`).

Real Ruby where Ruby is the real thing: Shellwords.shellsplit and JSON.parse inside `extract` and
String#dump run in a Ruby process (`ruby`, Debian's 3.1), which also serves ERB and Psych to the tests.
"""

from __future__ import annotations

import atexit
import itertools
import json
import re
import shutil
import string
import subprocess
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, NamedTuple

RUBY = shutil.which("ruby")

Dotenv = Literal["3.1", "3.2"]
DOTENV_VERSIONS: tuple[Dotenv, ...] = ("3.2", "3.1")

# --- real Ruby: one long-lived process answering shellsplit / JSON.parse / dump requests ---------------

_RUBY_SERVER = r"""
require "json"
require "shellwords"
STDOUT.sync = true
STDIN.each_line do |line|
  request = JSON.parse(line)
  text = request["text"]
  begin
    answer = case request["op"]
             when "shellsplit" then Shellwords.shellsplit(text)
             when "json" then JSON.parse(text)
             when "dump" then text.dump
             end
    STDOUT.puts(JSON.generate({ "ok" => answer }))
  rescue StandardError => e
    STDOUT.puts(JSON.generate({ "error" => e.class.name }))
  end
end
"""


class RubyError(Exception):
    """Ruby raised (the exception class name only: the message could hold a value)."""


class _Ruby:
    def __init__(self) -> None:
        self._proc: subprocess.Popen[str] | None = None

    def ask(self, op: str, text: str) -> Any:
        if self._proc is None:
            assert RUBY is not None, "ruby is not installed"
            self._proc = subprocess.Popen(
                [RUBY, "-e", _RUBY_SERVER],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                encoding="utf-8",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
            )
            atexit.register(self.close)
        assert self._proc.stdin is not None and self._proc.stdout is not None
        self._proc.stdin.write(json.dumps({"op": op, "text": text}) + "\n")
        self._proc.stdin.flush()
        answer = json.loads(self._proc.stdout.readline())
        if "error" in answer:
            raise RubyError(answer["error"])
        return answer["ok"]

    def close(self) -> None:
        if self._proc is not None:
            assert self._proc.stdin is not None
            self._proc.stdin.close()
            self._proc.wait(timeout=30)
            self._proc = None


_ruby = _Ruby()


def ruby_shellsplit(text: str) -> list[str]:
    """Ruby's Shellwords.shellsplit."""
    return list(_ruby.ask("shellsplit", text))


def ruby_json_parse(text: str) -> Any:
    """Ruby's JSON.parse."""
    return _ruby.ask("json", text)


def ruby_dump(text: str) -> str:
    """Ruby's String#dump (quotes included)."""
    return str(_ruby.ask("dump", text))


# --- dotenv: the line grammar --------------------------------------------------------------------------
#
# A scanner of our own for the grammar dotenv 3.1.5+ reads (its README's forms, and what the released
# versions do with the odd cases, checked by running them). What it does, from each line start:
# - white space (Ruby's \s: ASCII only, line breaks included, so blank lines are passed over);
# - `export` and white space, optionally; if nothing after it reads as a line, `export` is the key;
# - the key, a run of [A-Za-z0-9_.];
# - then `=` (white space, line breaks too, may come before it) or `:` and at least one white space;
# - then the value: white space and a single- or double-quoted text (a backslash before the quote keeps
#   it inside, unless only the shorter text lets the line end there), else everything up to `#` or the
#   line end; a line may also end without a value, or without `=`;
# - then white space and a `#` comment, up to the end of a line (the longest such stretch: blank and
#   comment lines after a value are passed over with it).

_WHITE = " \t\n\v\f\r"  # Ruby's \s
_KEY_CHARS = frozenset(string.ascii_letters + string.digits + "_.")
_RUBY_STRIP = _WHITE + "\x00"  # String#strip also drops NUL


class _Line(NamedTuple):
    export: bool
    key: str
    value: str | None  # None: no value at all (not even an empty one)
    text: str  # what the line spans, for dotenv's error message
    end: int


def _skip_white(text: str, at: int) -> int:
    while at < len(text) and text[at] in _WHITE:
        at += 1
    return at


def _line_end(text: str, at: int) -> int | None:
    """Where a line may end after `at`: over white space and a `#` comment to a line break, else None."""
    stop = _skip_white(text, at)
    # The longest stretch first: give white space back until a line break, a `#` or the end follows.
    for end in range(stop, at - 1, -1):
        if end == len(text) or text[end] == "\n":
            return end
        if text[end] == "#":
            newline = text.find("\n", end)
            return len(text) if newline < 0 else newline
    return None


def _quoted(text: str, at: int) -> tuple[str, int] | None:
    """A quoted value starting at `at` (after any white space) and where its line ends, or None."""
    start = _skip_white(text, at)
    if start >= len(text) or text[start] not in "'\"":
        return None
    quote = text[start]
    closings: list[int] = []  # where the text may close: each escaped quote, then the first bare one
    i = start + 1
    while i < len(text):
        if text[i] == "\\" and text.startswith(quote, i + 1):
            closings.append(i + 1)
            i += 2
        elif text[i] == quote:
            closings.append(i)
            break
        else:
            i += 1
    for close in reversed(closings):  # the longest text whose line can end first
        end = _line_end(text, close + 1)
        if end is not None:
            return text[at : close + 1], end
    return None


def _value_at(text: str, at: int) -> tuple[str | None, int]:
    """The value after a separator: quoted, else bare up to `#` or the line end, else none at all."""
    quoted = _quoted(text, at)
    if quoted is not None:
        return quoted
    stop = at
    while stop < len(text) and text[stop] not in "#\n":
        stop += 1
    if stop > at:
        end = _line_end(text, stop)
        assert end is not None  # a `#`, a line break or the end follows the bare text
        return text[at:stop], end
    end = _line_end(text, at)
    assert end is not None
    return None, end


def _line_at(text: str, start: int, *, export: bool) -> _Line | None:
    at = _skip_white(text, start)
    if export:
        if not text.startswith("export", at) or at + 6 >= len(text) or text[at + 6] not in _WHITE:
            return None
        at = _skip_white(text, at + 6)
    key_start = at
    while at < len(text) and text[at] in _KEY_CHARS:
        at += 1
    if at == key_start:
        return None
    key = text[key_start:at]
    equals = _skip_white(text, at)
    if equals < len(text) and text[equals] == "=":
        value, end = _value_at(text, equals + 1)
    elif text.startswith(":", at) and at + 1 < len(text) and text[at + 1] in _WHITE:
        value, end = _value_at(text, at + 2)
    else:
        value = None
        found = _line_end(text, at)
        if found is None:
            return None
        end = found
    return _Line(export, key, value, text[start:end], end)


def _lines(text: str) -> Iterator[_Line]:
    start = 0
    while start <= len(text):
        line = _line_at(text, start, export=True) or _line_at(text, start, export=False)
        if line is not None:
            yield line
            if line.end == 0 or text[line.end - 1] == "\n":
                start = line.end  # it ended at a line start: look for the next line from there
                continue
        newline = text.find("\n", start if line is None else line.end)
        if newline < 0:
            return
        start = newline + 1


def _unquote(value: str) -> tuple[str | None, str]:
    """The quote that wraps the whole (stripped) value, if one does, and the text inside it."""
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0]:
        return value[0], value[1:-1]
    return None, value


def _unescape(value: str) -> str:
    """A backslash before any character but `$` is dropped (a line break too); `\\$` is left for later."""
    out: list[str] = []
    i = 0
    while i < len(value):
        if value[i] == "\\" and i + 1 < len(value) and value[i + 1] != "$":
            out.append(value[i + 1])
            i += 2
        else:
            out.append(value[i])
            i += 1
    return "".join(out)


class DotenvError(Exception):
    """What dotenv raises for a file it cannot read (an `export NAME` of an unset name)."""


# --- dotenv: variable substitution -----------------------------------------------------------------------

# Letters (either case), digits and "_"; Ruby's case-insensitive match also takes the Kelvin sign and the
# long s, which fold to "k" and "s".
_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_\u212a\u017f")


def substitute_variables(value: str, seen: Mapping[str, str], environ: Mapping[str, str]) -> str:
    """dotenv's variable substitution: `$NAME`/`${NAME}` from `seen`, else `environ`, else ""; `\\$` -> `$`."""
    out: list[str] = []
    at = 0
    while at < len(value):
        escaped = value.startswith("\\$", at)
        dollar = at + 1 if escaped else at
        if value[dollar] != "$" or value.startswith("(", dollar + 1):
            out.append(value[at])  # not a variable; "$(" never is, escaped or not
            at += 1
            continue
        # "$", then "{", a name and "}", each optional on its own: "${A" and "$A}" are variables too.
        name_start = dollar + 2 if value.startswith("{", dollar + 1) else dollar + 1
        end = name_start
        while end < len(value) and value[end] in _NAME_CHARS:
            end += 1
        name = value[name_start:end]
        if value.startswith("}", end):
            end += 1
        if escaped or not name:
            out.append(value[dollar:end])
        else:
            out.append(seen[name] if name in seen else environ.get(name, ""))
        at = end
    return "".join(out)


# --- Kamal's command substitution ----------------------------------------------------------------------


def _group_end(text: str, start: int) -> int | None:
    """Index after the `)` closing the group opened at text[start], or None when it does not close."""
    counts = [0]  # items inside each open group; an empty group never matches
    at = start + 1
    while at < len(text):
        char = text[at]
        if char == ")":
            if counts.pop() == 0:
                return None
            at += 1
            if not counts:
                return at
            counts[-1] += 1
            continue
        if char == "(":
            counts.append(0)
            at += 1
            continue
        if char == "\\":
            if at + 1 >= len(text) or text[at + 1] == "\n":
                return None  # a backslash escapes one character, never a line break
            at += 2
        else:
            at += 1
        counts[-1] += 1
    return None


def chomp(text: str) -> str:
    """Ruby's String#chomp: one trailing "\\r\\n", "\\n" or "\\r" dropped."""
    for ending in ("\r\n", "\n", "\r"):
        if text.endswith(ending):
            return text[: -len(ending)]
    return text


_KAMAL_SECRETS = re.compile(r"\A[ \t\n\v\f\r]*kamal[ \t\n\v\f\r]*secrets[ \t\n\v\f\r]+")


def kamal_secrets_extract(name: str, secrets: str) -> str:
    """`kamal secrets extract NAME SECRETS`: JSON.parse (real Ruby), NAME or a key ending in /NAME, else fail."""
    parsed = ruby_json_parse(secrets)
    if not isinstance(parsed, dict):
        raise DotenvError("extract: the secrets are not a JSON object")
    value = parsed.get(name)
    if value is None:
        value = next((v for k, v in parsed.items() if k.endswith(f"/{name}")), None)
    if value is None:
        raise DotenvError(f"Could not find secret {name}")
    if not isinstance(value, str):
        raise DotenvError("extract: the secret is not a string")
    return value


def _kamal_inline(command: str) -> str:
    words = ruby_shellsplit(command)[1:]
    if words[:2] != ["secrets", "extract"] or len(words) != 4:
        raise DotenvError("only `kamal secrets extract NAME SECRETS` is emulated")
    return kamal_secrets_extract(words[2], words[3])


Runner = Callable[[str], str]


def substitute_commands(value: str, seen: Mapping[str, str], environ: Mapping[str, str], run: Runner) -> str:
    """Kamal's `$(...)` substitution: variables in the command first, `kamal secrets` inline, else `run`."""
    out: list[str] = []
    done = 0
    search = 0
    while (dollar := value.find("$(", search)) >= 0:
        end = _group_end(value, dollar + 1)
        if end is None:
            search = dollar + 1
            continue
        escaped = dollar > done and value[dollar - 1] == "\\"
        begin = dollar - 1 if escaped else dollar
        out.append(value[done:begin])
        if escaped:
            out.append(value[dollar:end])
        else:
            command = substitute_variables(value[dollar + 2 : end - 1], seen, environ)
            output = _kamal_inline(command) if _KAMAL_SECRETS.match(command) else run(command)
            out.append(chomp(output))
        done = search = end
    out.append(value[done:])
    return "".join(out)


# --- dotenv: a file ----------------------------------------------------------------------------------------


# Ruby's backticks hand a command to `sh -c` only when the shell is needed: one of these characters, an
# assignment as the first word, or a first word that is a shell keyword or special built-in. Otherwise
# they split it at spaces and tabs and start the program themselves, so an unknown program (or an empty
# command) raises Errno::ENOENT, which stops Kamal, where `sh` would print an error and give "".
_SHELL_CHARS = frozenset("*?{}[]<>()~&|\\$;'`\"\n#")
_SHELL_WORDS = frozenset({
    "!", ".", ":", "break", "case", "continue", "do", "done", "elif", "else", "esac", "eval", "exec", "exit",
    "export", "fi", "for", "if", "in", "readonly", "return", "set", "shift", "then", "times", "trap", "unset",
    "until", "while",
})  # fmt: skip


def _needs_shell(command: str) -> bool:
    words = command.replace("\t", " ").split(" ")
    first = next((w for w in words if w), "")
    return bool(_SHELL_CHARS & set(command)) or "=" in first or first in _SHELL_WORDS


def shell_runner(*, env: Mapping[str, str], cwd: Path) -> Runner:
    """Run a command the way Ruby's backticks do (stdout captured, exit status ignored, ENOENT raised)."""

    def run(command: str) -> str:
        if _needs_shell(command):
            argv = ["/bin/sh", "-c", command]
        else:
            argv = [w for w in command.replace("\t", " ").split(" ") if w]
        if not argv:
            raise DotenvError("Errno::ENOENT: an empty command")
        try:
            done = subprocess.run(
                argv, env=dict(env), cwd=cwd, stdout=subprocess.PIPE, timeout=120, check=False
            )
        except (FileNotFoundError, PermissionError) as exc:
            raise DotenvError(
                f"Errno::{'ENOENT' if isinstance(exc, FileNotFoundError) else 'EACCES'}"
            ) from None
        return done.stdout.decode("utf-8", errors="surrogateescape")

    return run


def _value(raw: str, seen: Mapping[str, str], environ: Mapping[str, str], run: Runner, dotenv: Dotenv) -> str:
    quote, value = _unquote(raw.strip(_RUBY_STRIP))
    if quote == "'":
        return value
    if quote == '"':
        value = value.replace("\\n", "\\\\n").replace("\\r", "\\\\r")  # survive the unescaping below
    value = _unescape(value)
    if dotenv == "3.2":
        value = substitute_commands(value, seen, environ, run)
        return substitute_variables(value, seen, environ)
    value = substitute_variables(value, seen, environ)
    return substitute_commands(value, seen, environ, run)


def parse(text: str, *, dotenv: Dotenv = "3.2", environ: Mapping[str, str], run: Runner) -> dict[str, str]:
    """What Dotenv.parse(file, overwrite: true) returns with Kamal's command substitution installed."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    seen: dict[str, str] = {}
    for line in _lines(text):
        if line.export and line.value is None:
            if line.key not in seen:
                raise DotenvError(f"Line {line.text!r} has an unset variable")
            continue
        seen[line.key] = _value(line.value or "", seen, environ, run, dotenv)
    return seen


# --- Kamal ---------------------------------------------------------------------------------------------------


def read_secrets(
    directory: Path, destination: str, *, env: Mapping[str, str], cwd: Path, dotenv: Dotenv = "3.2"
) -> dict[str, str]:
    """Kamal's secrets: `.kamal/secrets-common` then `.kamal/secrets.<destination>`, each parsed alone."""
    secrets: dict[str, str] = {}
    for path in (directory / "secrets-common", directory / f"secrets.{destination}"):
        if path.exists():
            text = path.read_bytes().decode("utf-8")
            secrets.update(parse(text, dotenv=dotenv, environ=env, run=shell_runner(env=env, cwd=cwd)))
    return secrets


def secrets_print(secrets: Mapping[str, str]) -> str:
    """`kamal secrets print`: one `NAME=value` line each (Ruby's puts adds no second line break)."""
    return "".join(f"{k}={v}" + ("" if v.endswith("\n") else "\n") for k, v in secrets.items())


def _ascii_escaped(value: str, escape: Callable[[str], str]) -> str:
    """`value` with each stretch of ASCII characters passed through `escape`, the rest kept as it is."""
    return "".join(
        escape(text) if ascii_ else text
        for ascii_, chars in itertools.groupby(value, key=str.isascii)
        for text in ["".join(chars)]
    )


def env_file(env: Mapping[str, str]) -> str:
    """Kamal's env file for `docker run --env-file`: ASCII stretches String#dump'ed, then `\\"` and `\\#` unescaped."""

    def escape(text: str) -> str:
        return ruby_dump(text)[1:-1].replace('\\"', '"').replace("\\#", "#")

    return "".join(f"{k}={_ascii_escaped(v, escape)}\n" for k, v in env.items()) or "\n"


def _shell_dollars(text: str) -> str:
    # Each `$` gets a backslash, except one that opens `${...}` (a `{` next and a `}` somewhere after it),
    # which Kamal leaves for the remote shell to expand.
    out: list[str] = []
    for at, char in enumerate(text):
        kept = char == "$" and text.startswith("{", at + 1) and text.find("}", at + 2) >= 0
        out.append("\\$" if char == "$" and not kept else char)
    return "".join(out)


def shell_word(value: str) -> str:
    """Kamal's double-quoted shell word (docker login, clear values): String#dump, then ` and lone $ escaped."""
    return _ascii_escaped(value, lambda text: _shell_dollars(ruby_dump(text).replace("`", "\\`")))


def sh_word(word: str) -> str:
    """What `sh` makes of one shell word (it runs printf with it, nothing else)."""
    done = subprocess.run(
        ["sh", "-c", f"printf %s {word}"],
        capture_output=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8", errors="surrogateescape")
