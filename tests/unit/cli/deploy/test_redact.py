"""The deploy redactor: every seeded value, in every form a program may echo it, becomes [REDACTED]."""

from __future__ import annotations

import json
import shlex
import threading
from urllib.parse import quote

from hypothesis import given
from hypothesis import strategies as st

from cli.deploy.redact import MASK, MIN_LENGTH, Redactor, encodings

CANARY = "s3cr3t-canary-Ω-'quote'\"dq\" $(x)"


def test_plain_value_is_masked_everywhere_it_appears() -> None:
    redact = Redactor(["hunter2hunter2"])
    assert redact("login with hunter2hunter2 failed; hunter2hunter2") == f"login with {MASK} failed; {MASK}"


def test_each_line_of_a_multi_line_value_is_masked_on_its_own() -> None:
    key = "-----BEGIN KEY-----\nAAAAline-one\nBBBBline-two\n-----END KEY-----"
    redact = Redactor([key])
    out = redact("docker said: BBBBline-two at line 3")
    assert "BBBBline-two" not in out and MASK in out
    assert redact(key) == MASK


def test_json_shell_and_url_encodings_are_masked() -> None:
    redact = Redactor([CANARY])
    for form in (
        json.dumps(CANARY),
        json.dumps(CANARY, ensure_ascii=False),
        shlex.quote(CANARY),
        quote(CANARY, safe=""),
    ):
        assert CANARY not in redact(form)
        assert redact(f"before {form} after").startswith("before ")
    assert redact(json.dumps({"password": CANARY})) == json.dumps({"password": MASK})


def test_ruby_shellwords_form_is_masked() -> None:
    value = "pa ss;word"
    redact = Redactor([value])
    assert redact("kamal ran: echo pa\\ ss\\;word") == f"kamal ran: echo {MASK}"


def test_longest_value_wins_over_a_value_inside_it() -> None:
    redact = Redactor(["abcd", "xxabcdxx"])
    assert redact("xxabcdxx and abcd") == f"{MASK} and {MASK}"


def test_short_values_are_skipped_and_counted() -> None:
    redact = Redactor(["1", "on", "", "long-enough"])
    assert redact.skipped == 2
    assert redact("1 on long-enough") == f"1 on {MASK}"
    assert all(len(form) >= MIN_LENGTH for form in encodings("ab\ncdefgh"))


def test_env_file_values_are_seeded_but_names_are_not() -> None:
    redact = Redactor()
    redact.add_env_file("# comment\nDATABASE_URL=postgres://u:pw-value@db/app\n\nAPI_KEY=key=with=equals\n")
    out = redact("DATABASE_URL=postgres://u:pw-value@db/app API_KEY=key=with=equals")
    assert out == f"DATABASE_URL={MASK} API_KEY={MASK}"


def test_empty_redactor_returns_text_unchanged() -> None:
    assert Redactor()("nothing to hide") == "nothing to hide"
    assert len(Redactor()) == 0


def test_adding_from_threads_while_redacting_is_safe() -> None:
    redact = Redactor()
    values = [f"value-{i:04d}-secret" for i in range(200)]

    def add(chunk: list[str]) -> None:
        for value in chunk:
            redact.add(value)

    threads = [threading.Thread(target=add, args=(values[i::4],)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert redact(" ".join(values)) == " ".join([MASK] * len(values))


@given(st.text(min_size=MIN_LENGTH, max_size=40).filter(lambda v: v not in f"<{MASK}>"))
def test_any_value_disappears_from_text_that_contains_it(value: str) -> None:
    redact = Redactor([value])
    assert value not in redact(f"<{value}>")
