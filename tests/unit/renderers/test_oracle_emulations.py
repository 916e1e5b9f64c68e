"""The emulations of tests/support/render_oracles.py, one behaviour per test.

docker, podman and Compose: each case of tests/unit/renderers/emulation_cases.py was measured with the
real program, and the integration tests run the same files through it. systemd: no manager runs here,
so each case below is a rule of systemd.exec(5) (EnvironmentFile= and Environment=), quoted in its id.
"""

from __future__ import annotations

import pytest

from tests.support import render_oracles as oracles
from tests.unit.renderers.emulation_cases import (
    COMPOSE_CASES,
    HOST,
    INVALID_UTF8,
    LINE_CASES,
    REFUSED,
    UNMODELLED,
)


@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_docker_env_file(case: str) -> None:
    data, want, _podman = LINE_CASES[case]
    if want == REFUSED:
        with pytest.raises(oracles.ParseError):
            oracles.docker_env_file(data, lookup=HOST.get)
    else:
        assert dict(oracles.docker_env_file(data, lookup=HOST.get)) == want


@pytest.mark.parametrize("case", sorted(LINE_CASES))
def test_podman_env_file(case: str) -> None:
    data, _docker, want = LINE_CASES[case]
    if want == REFUSED:
        with pytest.raises(oracles.ParseError):
            oracles.podman_env_file(data, lookup=HOST.get, environ=HOST)
    else:
        assert oracles.podman_env_file(data, lookup=HOST.get, environ=HOST) == want


def test_docker_refuses_a_file_that_is_not_utf8() -> None:
    with pytest.raises(oracles.ParseError, match="invalid utf8 bytes at line 1"):
        oracles.docker_env_file(INVALID_UTF8)


def test_podman_takes_bytes_that_are_not_utf8() -> None:
    assert oracles.podman_env_file(INVALID_UTF8) == {"L": "\udcff"}


def test_podman_prefix_import_needs_the_host_environment() -> None:
    with pytest.raises(oracles.ParseError, match="pass environ"):
        oracles.podman_env_file(b"PREFIX_*\n")


def test_docker_keeps_every_assignment_in_file_order() -> None:
    assert oracles.docker_env_file(b"Q=1\nR=2\nQ=3\n") == [("Q", "1"), ("R", "2"), ("Q", "3")]


@pytest.mark.parametrize(
    ("value", "trimmed"),
    [("'a'", "a"), ('"a"', "a"), ("'a\"", "'a\""), ("'", "'"), ("a'", "a'"), ("''", "")],
)
def test_docker_quote_trimming_of_the_docker_cli_3630_proposal(value: str, trimmed: str) -> None:
    data = f"A={value}\n".encode()
    assert oracles.docker_env_file(data) == [("A", value)]
    assert oracles.docker_env_file(data, trim_quotes=True) == [("A", trimmed)]


@pytest.mark.parametrize("case", sorted(COMPOSE_CASES))
def test_compose_env_file(case: str) -> None:
    data, want = COMPOSE_CASES[case]
    if want in (REFUSED, UNMODELLED):
        with pytest.raises(oracles.ParseError):
            oracles.compose_env_file(data, lookup=HOST.get)
    else:
        assert oracles.compose_env_file(data, lookup=HOST.get) == want


def test_compose_says_it_does_not_model_interpolation() -> None:
    with pytest.raises(oracles.ParseError, match="no environment"):
        oracles.compose_env_file(b'A="${X:-d}"\n')


SYSTEMD_CASES: dict[str, tuple[bytes, dict[str, str]]] = {
    "empty lines and lines starting with ; or # are ignored": (b"\n# A=1\n; B=1\n  # C=1\nD=1\n", {"D": "1"}),
    "lines without an = separator are ignored": (b"JUSTANAME\nE=1\n", {"E": "1"}),
    "leading and trailing whitespace of an unquoted value is discarded": (b"F= \t a b \t \r\n", {"F": "a b"}),
    "interior whitespace and quotes after the first character are preserved": (
        b"G=a  'b'  \"c\"\n",
        {"G": "a  'b'  \"c\""},
    ),
    "an unquoted backslash keeps the next character": (b"H=\\\\a\\$b\\ \n", {"H": "\\a$b "}),
    "an unquoted backslash before a newline joins the lines": (b"I=a\\\n  b\n", {"I": "a  b"}),
    "a single-quoted value is verbatim and may span lines": (
        b"J='a \\n \"b\"\n$c'\n",
        {"J": 'a \\n "b"\n$c'},
    ),
    "whitespace outside the quotes is discarded": (
        b"K= \t'a b' \t\nL=  \" c \"  \n",
        {"K": "a b", "L": " c "},
    ),
    'in double quotes a backslash keeps one of "\\`$': (b'M="\\"\\\\\\`\\$"\n', {"M": '"\\`$'}),
    "in double quotes a backslash before a newline joins the lines": (b'N="a\\\nb"\n', {"N": "ab"}),
    "in double quotes any other backslash is kept with its character": (
        b'O="\\n\\a\\\'"\n',
        {"O": "\\n\\a\\'"},
    ),
    "a double-quoted value may span lines": (b'P="a\nb"\n', {"P": "a\nb"}),
    "dollars and backticks are not expanded": (b'Q="$HOME `id` ${X}"\n', {"Q": "$HOME `id` ${X}"}),
    "the later assignment of a name wins": (b"R=1\nR=2\n", {"R": "2"}),
    "an empty value is a value": (b"S=\nT=''\n", {"S": "", "T": ""}),
    "names are ASCII letters, digits and underscore": (b"A-B=1\nA.B=1\n\xc3\x89=1\n_u1=1\n", {"_u1": "1"}),
    "names cannot start with a digit": (b"1A=1\nA1=1\n", {"A1": "1"}),
    "non-printable characters make an assignment invalid (v239-v247)": (
        b'U="a\x1bb"\nV="a\x7f"\nW=a\x0cb\nX="tab\tand\nnewline"\n',
        {"X": "tab\tand\nnewline"},
    ),
    "whitespace around a name is discarded": (b"  Y \t= 1\n", {"Y": "1"}),
}


@pytest.mark.parametrize("rule", sorted(SYSTEMD_CASES))
def test_systemd_env_file(rule: str) -> None:
    data, want = SYSTEMD_CASES[rule]
    assert oracles.systemd_env_file(data) == want


@pytest.mark.parametrize(
    "data",
    [b'A="x" y\n', b"A='x\n", b'A="x\n', b"A=x\\", b"A=a\x00b\n", b"A=\xff\n"],
    ids=[
        "text after a closing quote",
        "unterminated single",
        "unterminated double",
        "lone final backslash",
        "NUL",
        "not UTF-8",
    ],
)
def test_systemd_refuses_what_the_docs_leave_open(data: bytes) -> None:
    with pytest.raises(oracles.ParseError):
        oracles.systemd_env_file(data)
