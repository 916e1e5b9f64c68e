"""How Kamal 2 reads what the kamal target writes, as test oracles.

Real where it runs here: Ruby (Debian's ruby 3.1) with Ruby dotenv (Debian's ruby-dotenv 2.4, whose
Parser applies the same Variable-then-Command substitutions as dotenv 3.x, which Kamal 2 uses), Ruby's
JSON, Shellwords and String#dump, and PyYAML's safe loader. Ported, because the Kamal gem cannot be
installed here (no network to rubygems.org): the few lines of Kamal that sit between those libraries,
copied from basecamp/kamal:
- lib/kamal/secrets/dotenv/inline_command_substitution.rb (replaces dotenv's command substitution;
  `kamal secrets ...` commands run in-process after Shellwords.shellsplit, anything else with backticks),
- lib/kamal/cli/secrets.rb `extract` (JSON.parse, exact name or a `/NAME` suffix, `.chomp` by the caller),
- lib/kamal/secrets.rb (secrets-common, then secrets.<destination>, each parsed alone, merged),
- lib/kamal/env_file.rb (Kamal >= 2.3: String#dump, then `\\"` and `\\#` unescaped),
- lib/kamal/utils.rb escape_shell_value (String#dump, backticks escaped, `$` escaped unless `${...}`).
`kamal_secrets_extract` is the same `extract` in Python, for reading `strongroom kamal fetch` output directly.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

RUBY = shutil.which("ruby")

_SECRETS_RB = r"""
require "dotenv"
require "json"
require "shellwords"
require "English"

# Kamal::Secrets::Dotenv::InlineCommandSubstitution, with dotenv 2.x's call signature accepted too.
module KamalInline
  def self.call(value, _env, *_rest, **_kw)
    value.gsub(Dotenv::Substitutions::Command.singleton_class::INTERPOLATED_SHELL_COMMAND) do |*|
      command = $LAST_MATCH_INFO[:cmd][1..-2]
      if $LAST_MATCH_INFO[:backslash]
        $LAST_MATCH_INFO[0][1..]
      elsif command =~ /\A\s*kamal\s*secrets\s+/
        extract(command.shellsplit[1..]).chomp
      else
        `#{command}`.chomp
      end
    end
  end

  # Kamal::Cli::Secrets#extract (run inline, as Kamal::Cli::Main.start(... + ["--inline"]) does).
  def self.extract(argv)
    raise "only `kamal secrets extract` is emulated" unless argv[0..1] == ["secrets", "extract"]
    name, secrets = argv[2], argv[3]
    parsed = JSON.parse(secrets)
    value = parsed[name] || parsed.find { |k, _v| k.end_with?("/#{name}") }&.last
    raise "Could not find secret #{name}" if value.nil?
    value
  end
end

Dotenv::Parser.substitutions.map! { |s| s == Dotenv::Substitutions::Command ? KamalInline : s }
result = {}
ARGV.each { |f| result.merge!(Dotenv::Parser.call(File.read(f))) if File.exist?(f) }
STDOUT.write(JSON.generate(result))
"""

_ESCAPES_RB = r"""
require "json"

# Kamal::EnvFile#escape_docker_env_file_value (Kamal >= 2.3)
def env_file(value)
  value.to_s.scan(/[\x00-\x7F]+|[^\x00-\x7F]+/).map do |part|
    part.ascii_only? ? part.dump[1..-2].gsub(/\\"/, "\"").gsub(/\\#/, "#") : part
  end.join
end

# Kamal::Utils.escape_shell_value
def shell(value)
  value.to_s.scan(/[\x00-\x7F]+|[^\x00-\x7F]+/).map do |part|
    part.ascii_only? ? part.dump.gsub(/`/, '\\\\`').gsub(/\$(?!{[^\}]*\})/, '\$') : part
  end.join
end

values = JSON.parse(STDIN.read)
STDOUT.write(JSON.generate(values.map { |v| { "env_file" => env_file(v), "shell" => shell(v) } }))
"""


def ruby_read_secrets(files: Sequence[Path], *, env: Mapping[str, str], cwd: Path) -> dict[str, str]:
    """The secrets Kamal would read from these `.kamal/secrets*` files, in order (later files win)."""
    assert RUBY is not None
    script = cwd / "kamal_secrets_oracle.rb"
    script.write_text(_SECRETS_RB)
    done = subprocess.run(
        [RUBY, str(script), *map(str, files)],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return dict(json.loads(done.stdout))


def ruby_escapes(values: Sequence[str]) -> list[dict[str, str]]:
    """For each value, what Kamal's env file and Kamal's shell quoting make of it (real String#dump)."""
    assert RUBY is not None
    done = subprocess.run(
        [RUBY, "-e", _ESCAPES_RB],
        input=json.dumps(list(values)).encode(),
        capture_output=True,
        timeout=120,
        check=False,
        env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")
    return list(json.loads(done.stdout))


def sh_double_quoted(escaped: str) -> str:
    """What `sh` makes of an argument Kamal built with escape_shell_value (it runs printf, nothing else)."""
    done = subprocess.run(
        ["sh", "-c", f"printf %s {escaped}"],
        capture_output=True,
        timeout=30,
        check=False,
        env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.decode("utf-8", errors="surrogateescape")


def kamal_secrets_extract(name: str, secrets: str) -> str:
    """Kamal::Cli::Secrets#extract: parse the JSON, take NAME (or a key ending in /NAME), else fail."""
    parsed = json.loads(secrets)
    if not isinstance(parsed, dict):
        raise ValueError("not a JSON object")
    value = parsed.get(name)
    if value is None:
        value = next((v for k, v in parsed.items() if k.endswith(f"/{name}")), None)
    if value is None:
        raise KeyError(f"Could not find secret {name}")
    return str(value)


def shellsplit(line: str) -> list[str]:
    """Ruby's Shellwords.shellsplit, which POSIX shlex matches for the words Kamal splits."""
    return shlex.split(line, posix=True)
