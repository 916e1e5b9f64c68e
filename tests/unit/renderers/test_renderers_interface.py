"""The renderer interface: redacted reprs, error sentences, the registry, options, names, problems."""

from __future__ import annotations

import pytest

from broker.errors import Invalid
from broker.renderers.base import Entry, RenderedFile, RenderError, RenderOptions, find_problems
from broker.renderers.checks import shown
from broker.renderers.registry import TARGETS, get_renderer
from tests.unit.renderers.values import OPTIONS

MINE = ("dotenv", "dotenv-export", "env-file", "compose", "json", "yaml", "k8s", "systemd")


def test_entry_and_file_reprs_never_show_values() -> None:
    entry = Entry("DB_PASSWORD", "hunter2-canary", sensitive=True)
    clear = Entry("RAILS_ENV", "production-canary", sensitive=False)
    file = RenderedFile(path="production.env", content=b"DB_PASSWORD='hunter2-canary'\n", holds_values=True)
    for text in (repr(entry), str(entry), repr(clear), repr(file), str(file), repr([entry, file])):
        assert "canary" not in text
    assert "DB_PASSWORD" in repr(entry) and "[REDACTED]" in repr(entry)
    assert "production.env" in repr(file) and "0o600" in repr(file)


def test_render_error_is_an_invalid_sentence_without_the_value() -> None:
    exc = RenderError(
        key="DB_PASSWORD",
        target="env-file",
        reason="value has a newline",
        alternative="use the dotenv target or a file mount",
    )
    assert isinstance(exc, Invalid)
    assert exc.message == (
        "DB_PASSWORD: value has a newline; the env-file target cannot carry it (use the dotenv target or a file mount)"
    )
    assert exc.field == "DB_PASSWORD" and exc.key == "DB_PASSWORD" and exc.target == "env-file"


def test_registry_lists_every_target_and_refuses_unknown_ones() -> None:
    assert set(MINE) <= set(TARGETS) and "kamal" in TARGETS
    for name in TARGETS:
        assert get_renderer(name).name == name
    with pytest.raises(Invalid, match="unknown target 'nope'"):
        get_renderer("nope")


@pytest.mark.parametrize("target", MINE)
def test_output_is_sorted_0600_and_names_its_file(target: str) -> None:
    entries = [Entry("ZED", "last", sensitive=True), Entry("ALPHA", "first", sensitive=False)]
    (file,) = get_renderer(target).render(entries, options=OPTIONS)
    assert file.mode == 0o600 and file.holds_values and "/" not in file.path and "production" in file.path
    text = file.content.decode()
    assert text.endswith("\n") and text.index("ALPHA") < text.index("ZED")
    (named,) = get_renderer(target).render(
        entries, options=RenderOptions("production", "myapp", basename="out.txt")
    )
    assert named.path == "out.txt" and named.content == file.content


@pytest.mark.parametrize("target", MINE)
def test_duplicate_names_are_refused(target: str) -> None:
    entries = [Entry("SAME", "one", sensitive=True), Entry("SAME", "two", sensitive=True)]
    with pytest.raises(RenderError, match="SAME: the name is given twice"):
        get_renderer(target).render(entries, options=OPTIONS)


@pytest.mark.parametrize("target", MINE)
@pytest.mark.parametrize(
    ("options", "key"),
    [
        (RenderOptions("prod\nX=1", "myapp"), "options/environment"),
        (RenderOptions("production", "../etc"), "options/service"),
        (RenderOptions("production", "myapp", basename="../escape.env"), "options/basename"),
        (RenderOptions("production", "myapp", basename="a\nb"), "options/basename"),
    ],
)
def test_options_that_could_inject_are_refused(target: str, options: RenderOptions, key: str) -> None:
    with pytest.raises(RenderError) as caught:
        get_renderer(target).render([Entry("A", "b", sensitive=False)], options=options)
    assert caught.value.key == key


@pytest.mark.parametrize("target", [t for t in MINE if t not in ("json", "yaml", "k8s")])
@pytest.mark.parametrize("name", ["", "1ABC", "WITH SPACE", "A-B", "A=B", "#A", "A\nB", "ÜBER"])
def test_env_targets_refuse_names_that_are_not_variable_names(target: str, name: str) -> None:
    with pytest.raises(RenderError, match="not an environment variable name") as caught:
        get_renderer(target).render([Entry(name, "v", sensitive=True)], options=OPTIONS)
    assert caught.value.key == shown(name) and "\n" not in caught.value.message


def test_find_problems_reports_every_bad_entry() -> None:
    entries = [
        Entry("OK", "fine", sensitive=True),
        Entry("MULTI", "a\nb", sensitive=True),
        Entry("NUL", "a\x00b", sensitive=True),
    ]
    problems = find_problems(get_renderer("env-file"), entries, options=OPTIONS)
    assert [(p.key, p.reason) for p in problems] == [
        ("MULTI", "value has a newline"),
        ("NUL", "value has a NUL character"),
    ]
    assert find_problems(get_renderer("json"), entries, options=OPTIONS) == []
    dupes = [Entry("A", "1", sensitive=True), Entry("A", "2", sensitive=True)]
    assert [p.reason for p in find_problems(get_renderer("json"), dupes, options=OPTIONS)] == [
        "the name is given twice"
    ]


def test_lone_surrogates_are_refused_by_every_target() -> None:
    for target in MINE:
        with pytest.raises(RenderError, match="lone surrogate"):
            get_renderer(target).render([Entry("BROKEN", "a\ud800b", sensitive=True)], options=OPTIONS)


def test_find_problems_reports_an_options_error_once() -> None:
    entries = [Entry("A", "1", sensitive=True), Entry("B", "2", sensitive=True)]
    problems = find_problems(get_renderer("json"), entries, options=RenderOptions("bad env", "myapp"))
    assert [p.key for p in problems] == ["options/environment"]
