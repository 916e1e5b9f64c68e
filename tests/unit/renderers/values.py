"""Values and entries for the renderer tests: the tricky characters and strings every target must survive."""

from __future__ import annotations

import os
from pathlib import Path

from hypothesis import strategies as st

from broker.renderers.base import Entry, RenderOptions

OPTIONS = RenderOptions(environment="production", service="myapp")

# Characters that break naive encoders: shell and dotenv syntax, quotes, escapes, line ends,
# whitespace, NUL and other controls, BOM, bidi overrides, Unicode line separators, astral.
TRICKY_CHARS = (
    "$",
    "{",
    "}",
    "(",
    ")",
    "`",
    "'",
    '"',
    "#",
    "\\",
    "=",
    ":",
    " ",
    "\t",
    "\n",
    "\r",
    "\x00",
    "\x0b",
    "\x0c",
    "\x1b",
    "\x7f",
    "\x85",
    "\xa0",
    "\ufeff",
    "\u202e",
    "\u2066",
    "\u2028",
    "\u2029",
    "é",
    "😀",
    "a",
    "Z",
    "0",
    "-",
    "!",
    "*",
    "%",
    ";",
    "&",
    "|",
    "<",
    ">",
    "~",
    "0",
    "n",
    "r",
)

# One directory per process: an xdist worker's test that plants the file on purpose (to prove an oracle
# runs commands) never meets another worker's check that it is absent, nor another checkout's run. The
# path is kept out of test ids (conftest.pytest_make_parametrize_id), which every worker must agree on.
SENTINEL_DIR = Path(f"/tmp/strongroom-render-sentinel-{os.getpid()}")
SENTINEL = SENTINEL_DIR / "pwned"

TRICKY_VALUES = (
    "",
    " ",
    "${HOME}",
    "$HOME",
    "$(id)",
    "`id`",
    f"$(touch {SENTINEL})",
    f"`touch {SENTINEL}`",
    f"${{X:-$(touch {SENTINEL})}}",
    "p@ss$word#1",
    "pa$$word",
    "'single'",
    '"double"',
    "it's",
    'say "hi"',
    "back\\slash",
    "ends with \\",
    "\\n is not a newline",
    "  both ends  ",
    "# not a comment",
    "a #comment",
    "line1\nline2",
    "crlf\r\n",
    "nul\x00byte",
    "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA\n-----END PRIVATE KEY-----\n",
    "\u202eevil\u202c",
    "x\nAWS_SECRET_ACCESS_KEY",
    "=",
    "KEY=VALUE",
    "yes",
    "0o17",
    "null",
    "<%= `id` %>",
    "!ruby/object:Gem::Installer",
    "&a *a",
    "{a: 1}",
)

values = st.one_of(
    st.text(alphabet=st.sampled_from(TRICKY_CHARS), max_size=40),
    st.text(alphabet=st.characters(exclude_categories=()), max_size=30),  # every code point, surrogates too
    st.sampled_from(TRICKY_VALUES),
    st.tuples(st.sampled_from(TRICKY_VALUES), st.sampled_from(TRICKY_VALUES)).map("".join),
    st.tuples(st.integers(60_000, 140_000), st.sampled_from(TRICKY_CHARS)).map(lambda t: "x" * t[0] + t[1]),
)
names = st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True)
entry_lists = st.lists(
    st.builds(Entry, name=names, value=values, sensitive=st.booleans()),
    max_size=4,
    unique_by=lambda e: e.name,
)
