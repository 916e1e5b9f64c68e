"""Each behaviour of the Kamal 2.12 / dotenv 3.2.x and 3.1.x emulation in tests/support/kamal_oracle.py.

The expected values are what Kamal 2.12.0 with dotenv 3.2.0 and with dotenv 3.1.8 give for the same file.
Commands run in the real `sh` (printf's octal escapes put `$` and `\\` into a command's output without
writing them where dotenv would substitute them); `extract` uses the real Ruby Shellwords and JSON.
"""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from tests.conftest import need
from tests.support import kamal_oracle
from tests.support.kamal_oracle import Dotenv, DotenvError

ENV = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "HOME": "/home/deployer", "FROM_ENV": "env-value"}
BOTH = pytest.mark.parametrize("dotenv", kamal_oracle.DOTENV_VERSIONS)


def need_ruby() -> None:
    if kamal_oracle.RUBY is None:
        need("ruby is not installed (apt-get install ruby)")


def read(text: str, dotenv: Dotenv = "3.2", environ: dict[str, str] | None = None) -> dict[str, str]:
    env = environ or ENV
    run = kamal_oracle.shell_runner(env=env, cwd=Path("/"))
    return kamal_oracle.parse(text, dotenv=dotenv, environ=env, run=run)


# --- the order of the two substitutions: what happens to a command's output ---------------------------------


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "pre-x-post"), ("3.1", "pre-$NAME-post")])
def test_dollar_name_in_a_commands_output(dotenv: Dotenv, want: str) -> None:
    # 3.2: command, then variables over its output; 3.1: variables first, the output is kept.
    got = read("NAME=x\nV=$(printf 'pre-\\\\044NAME-post')\n", dotenv)
    assert got["V"] == want


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "axb"), ("3.1", "a${NAME}b")])
def test_braced_name_in_a_commands_output(dotenv: Dotenv, want: str) -> None:
    assert read("NAME=x\nV=$(printf 'a\\\\044{NAME}b')\n", dotenv)["V"] == want


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "pa#x"), ("3.1", "pa$1wor$D#x")])
def test_positional_and_unset_names_in_a_commands_output(dotenv: Dotenv, want: str) -> None:
    assert read("V=$(printf 'pa\\\\0441wor\\\\044D\\\\043x')\n", dotenv)["V"] == want


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "a/home/deployer/b"), ("3.1", "a$HOME/b")])
def test_process_environment_in_a_commands_output(dotenv: Dotenv, want: str) -> None:
    assert read("V=$(printf 'a\\\\044HOME/b')\n", dotenv)["V"] == want


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "$HOME"), ("3.1", "\\$HOME")])
def test_backslash_dollar_in_a_commands_output(dotenv: Dotenv, want: str) -> None:
    assert read("V=$(printf '\\\\134\\\\044HOME')\n", dotenv)["V"] == want


@BOTH
def test_dollar_paren_in_a_commands_output_is_left_alone(dotenv: Dotenv) -> None:
    # Never run again: the command pattern has passed (3.2) and the variable pattern skips "$(".
    assert read("V=$(printf '\\\\044(id) \\\\134\\\\044(id)')\n", dotenv)["V"] == "$(id) \\$(id)"


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "a/home/deployer"), ("3.1", "a$HOME")])
def test_json_dollar_escape_is_restored_before_the_variable_pass(dotenv: Dotenv, want: str) -> None:
    need_ruby()
    text = 'J=\'\\{\\"K\\":\\"a\\\\u0024HOME\\"\\}\'\nK=$(kamal secrets extract K ${J})\n'
    assert read(text, dotenv)["K"] == want


@pytest.mark.parametrize(("dotenv", "want"), [("3.2", "x3y"), ("3.1", "x${A}y")])
def test_a_value_naming_an_earlier_line(dotenv: Dotenv, want: str) -> None:
    # The x${STRONGROOM_SECRETS}y case: under 3.2 one line's text lands inside another's value.
    assert read("A=3\nV=$(printf 'x\\\\044{A}y')\n", dotenv)["V"] == want


# --- variables in the line itself ---------------------------------------------------------------------------


@BOTH
def test_variables_in_a_line(dotenv: Dotenv) -> None:
    got = read("A=1\nB=$A ${A} $FROM_ENV $UNSET. $1 ${A\n", dotenv)
    assert got["B"] == "1 1 env-value .  1"  # the braces are optional one by one


@BOTH
def test_an_earlier_line_wins_over_the_environment(dotenv: Dotenv) -> None:
    assert read("HOME=mine\nB=$HOME\n", dotenv)["B"] == "mine"


@BOTH
def test_backslash_dollar_in_a_line_is_a_dollar(dotenv: Dotenv) -> None:
    assert read("A=\\$HOME \\${HOME} \\$\n", dotenv)["A"] == "$HOME ${HOME} $"


@BOTH
def test_lone_dollars_stay(dotenv: Dotenv) -> None:
    assert read("A='x'\nB=a$ $} $$ ${\n", dotenv)["B"] == "a$ $} $$ ${"


# --- commands in the line itself ----------------------------------------------------------------------------


@BOTH
def test_a_command_runs_with_its_variables_substituted_first(dotenv: Dotenv) -> None:
    assert read("A=word\nB=<$(printf '%s' $A)>\n", dotenv)["B"] == "<word>"


@BOTH
def test_an_escaped_command_is_left_without_its_backslash(dotenv: Dotenv) -> None:
    assert read("B=\\$(id)\n", dotenv)["B"] == "$(id)"


@BOTH
def test_parentheses_must_balance_and_groups_be_non_empty(dotenv: Dotenv) -> None:
    got = read("A=$(printf (\nB=$()\nC=$(printf '%s' '(x)')\n", dotenv)
    assert got == {"A": "$(printf (", "B": "$()", "C": "(x)"}


@BOTH
def test_one_trailing_line_break_is_dropped(dotenv: Dotenv) -> None:
    assert read("A=$(printf 'x\\\\n\\\\n')\nB=$(printf 'y\\\\r\\\\n')\n", dotenv) == {"A": "x\n", "B": "y"}


@BOTH
def test_kamal_secrets_runs_inside_kamal_not_in_a_shell(dotenv: Dotenv, tmp_path: Path) -> None:
    need_ruby()
    sentinel = tmp_path / "ran"
    fake = tmp_path / "kamal"
    fake.write_text(f"#!/bin/sh\ntouch {sentinel}\necho fake\n")
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    env = ENV | {"PATH": f"{tmp_path}:{ENV['PATH']}"}
    text = 'J=\'\\{\\"app/K\\":\\"v\\"\\}\'\nK=$(kamal secrets extract K ${J})\n'
    assert read(text, dotenv, env)["K"] == "v"  # a key ending in /K
    assert not sentinel.exists()


@BOTH
def test_a_command_that_needs_no_shell_is_started_directly_and_an_unknown_program_stops_kamal(
    dotenv: Dotenv,
) -> None:
    # Ruby's backticks: `strongroom kamal fetch ...` missing from PATH raises Errno::ENOENT, never "".
    for line in ("V=$(no-such-program-k11 -p app)\n", "V=$( )\n"):
        with pytest.raises(DotenvError, match="ENOENT"):
            read(line, dotenv)


def test_a_command_emptied_by_its_variables_stops_kamal_on_3_2_and_is_text_on_3_1() -> None:
    with pytest.raises(DotenvError, match="ENOENT"):
        read("V=$($EMPTY)\n", "3.2")  # the command's own variables first: `` with nothing to run
    assert read("V=$($EMPTY)\n", "3.1") == {"V": "$()"}  # variables first leave "$()", never a command


@BOTH
def test_a_command_that_needs_a_shell_runs_in_sh(dotenv: Dotenv) -> None:
    # A shell character, an assignment first or a special built-in: sh runs it and prints its own error.
    got = read("A=$(no-such-program-k11;)\nB=$(X=1 printf x)\nC=$(exit 3)\nD=$(printf %s y)\n", dotenv)
    assert got == {"A": "", "B": "x", "C": "", "D": "y"}


def test_extract_of_a_missing_name_fails() -> None:
    need_ruby()
    with pytest.raises(DotenvError, match="Could not find secret K"):
        read('J=\'\\{\\"KK\\":\\"v\\"\\}\'\nK=$(kamal secrets extract K ${J})\n')


def test_extract_of_nothing_fails() -> None:
    need_ruby()
    with pytest.raises(kamal_oracle.RubyError):
        read("K=$(kamal secrets extract K '')\n")


# --- the line grammar ---------------------------------------------------------------------------------------


@BOTH
def test_single_quotes_take_the_text_as_written(dotenv: Dotenv) -> None:
    assert read("A='$HOME $(id) \\n \\\\ # x \"'\n", dotenv)["A"] == '$HOME $(id) \\n \\\\ # x "'


@BOTH
def test_double_quotes(dotenv: Dotenv) -> None:
    got = read('A="a # b \\"q\\" \\n \\x"\nB="line1\nline2"\n', dotenv)
    assert got == {"A": 'a # b "q" \\n x', "B": "line1\nline2"}


@BOTH
def test_a_bare_value_ends_at_a_comment_and_is_stripped(dotenv: Dotenv) -> None:
    assert read("A=  abc # comment\nB=abc#x\n# C=1\nD=\n", dotenv) == {"A": "abc", "B": "abc", "D": ""}


@BOTH
def test_backslashes_in_a_bare_value(dotenv: Dotenv) -> None:
    # "\\#" does not protect the '#': the bare value ends there, and a backslash at its end stays.
    assert read("A=a\\bc \\\\ \\#\n", dotenv)["A"] == "abc \\ \\"


@BOTH
def test_export_and_colon_forms(dotenv: Dotenv) -> None:
    assert read("export A=1\nB: 2\nexport A\n", dotenv) == {"A": "1", "B": "2"}
    with pytest.raises(DotenvError, match="unset variable"):
        read("export C\n", dotenv)


@BOTH
def test_carriage_returns_read_as_line_breaks(dotenv: Dotenv) -> None:
    assert read("A=1\r\nB=2\rC=3", dotenv) == {"A": "1", "B": "2", "C": "3"}


@BOTH
@pytest.mark.parametrize(
    ("text", "want"),
    [
        # A backslash before the closing quote keeps it inside unless only the shorter text ends the line.
        ('A="a\\"', {"A": "a\\"}),
        ('A="a\\" b" # c', {"A": 'a" b'}),
        ("A='it\\'s'", {"A": "it\\'s"}),
        # Quoted text that cannot end its line is read bare, quotes and all.
        ("A='x' y", {"A": "'x' y"}),
        # A key alone is an empty value; `=` may follow a line break; `:` takes the next line as its value.
        ("A\nB=1", {"A": "", "B": "1"}),
        ("A\n=1", {"A": "1"}),
        ("A:\nB=1", {"A": "B=1"}),
        # `export` with nothing to export after it is a key; before a line break it exports the next line.
        ("export =1", {"export": "1"}),
        ("export\nA=1", {"A": "1"}),
        # Comment and blank lines after a value are passed over; quoted values span lines.
        ("A=1\n  # note\n\nB=2", {"A": "1", "B": "2"}),
        ("A='x\ny'\nB=2", {"A": "x\ny", "B": "2"}),
    ],
)
def test_odd_lines_read_as_the_released_versions_read_them(
    dotenv: Dotenv, text: str, want: dict[str, str]
) -> None:
    # Each expectation is what dotenv 3.2.0 and 3.1.8 gave for the same text, run by hand.
    assert read(text, dotenv) == want


# --- Kamal ----------------------------------------------------------------------------------------------------


def test_secrets_common_then_the_destination_each_read_alone(tmp_path: Path) -> None:
    (tmp_path / "secrets-common").write_text("A=common\nB=common\nX=from-common\n")
    (tmp_path / "secrets.production").write_text("B=prod\nC=${X}\n")
    got = kamal_oracle.read_secrets(tmp_path, "production", env=ENV, cwd=tmp_path)
    assert got == {"A": "common", "B": "prod", "X": "from-common", "C": ""}


def test_secrets_print() -> None:
    assert kamal_oracle.secrets_print({"A": "a=b", "B": "", "C": "x\n"}) == "A=a=b\nB=\nC=x\n"


def test_env_file_escaping() -> None:
    need_ruby()
    got = kamal_oracle.env_file({"A": 'q"#$', "B": "back\\slash", "C": "l1\nl2\t", "D": "ünï\n"})
    assert got == 'A=q"#$\nB=back\\\\slash\nC=l1\\nl2\\t\nD=ünï\\n\n'
    assert kamal_oracle.env_file({}) == "\n"


def test_shell_word_for_docker_login() -> None:
    need_ruby()
    word = kamal_oracle.shell_word('p$1 ${HOME} `id` "q"')
    assert word == '"p\\$1 ${HOME} \\`id\\` \\"q\\""'
    assert kamal_oracle.sh_word(word) == 'p$1  `id` "q"'  # sh expands ${HOME} (unset there)
