"""The one inheritance walk (broker.domain.inheritance): a table of trees, then a reference model."""

from __future__ import annotations

from typing import NamedTuple

import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker.domain.inheritance import MAX_DEPTH, Seen, StoredRow, Tree, chain, visible


def row(
    env: int,
    name: str,
    *,
    version: int = 1,
    deleted: bool = False,
    destroyed: bool = False,
    sealed: bool = True,
) -> StoredRow:
    """A current row of `name` in environment `env` (its version doubles as a tag to tell rows apart)."""
    return StoredRow(
        environment_id=env,
        name=name,
        sensitive=True,
        version=version,
        ciphertext=b"ct" if sealed else None,
        wrapped_dek=b"dek",
        kek_id="k1",
        secret_id=env * 1000 + version,
        binding=b"b",
        deleted=deleted,
        destroyed=destroyed,
    )


# common(1) <- production(2) <- prod-eu(3); staging(4) <- common; scratch(5) alone.
TREE: Tree = {
    1: ("common", None),
    2: ("production", 1),
    3: ("prod-eu", 2),
    4: ("staging", 1),
    5: ("scratch", None),
}


def shown(got: dict[str, Seen[StoredRow]]) -> dict[str, tuple[str, int]]:
    """name -> (environment slug it comes from, version) of what the walk picked."""
    return {name: (seen.environment, seen.row.version) for name, seen in got.items()}


CASES = [
    pytest.param(1, [row(1, "A")], {"A": ("common", 1)}, id="own value"),
    pytest.param(2, [row(1, "A")], {"A": ("common", 1)}, id="inherited from the parent"),
    pytest.param(3, [row(1, "A")], {"A": ("common", 1)}, id="inherited from the grandparent"),
    pytest.param(
        3,
        [row(1, "A", version=1), row(2, "A", version=2), row(3, "A", version=3)],
        {"A": ("prod-eu", 3)},
        id="nearest wins: own over parent over grandparent",
    ),
    pytest.param(
        3,
        [row(3, "A", version=3), row(1, "A", version=1), row(2, "A", version=2)],
        {"A": ("prod-eu", 3)},
        id="nearest wins whatever order the rows come in",
    ),
    pytest.param(
        3,
        [row(1, "A", version=1), row(2, "A", version=2), row(1, "B", version=7)],
        {"A": ("production", 2), "B": ("common", 7)},
        id="name shadowing is per name",
    ),
    pytest.param(
        2,
        [row(1, "A", version=1), row(2, "A", version=2, deleted=True)],
        {"A": ("common", 1)},
        id="a deleted override shows the parent's value",
    ),
    pytest.param(
        2,
        [row(1, "A", version=1), row(2, "A", version=2, destroyed=True)],
        {"A": ("common", 1)},
        id="a destroyed override shows the parent's value",
    ),
    pytest.param(
        2,
        [row(1, "A", version=1), row(2, "A", version=2, sealed=False)],
        {"A": ("common", 1)},
        id="a row without its ciphertext shows the parent's value",
    ),
    pytest.param(
        2,
        [row(2, "A", deleted=True), row(1, "A", destroyed=True)],
        {},
        id="only unreadable rows: not visible",
    ),
    pytest.param(1, [row(2, "A"), row(3, "B")], {}, id="a parent never sees its children"),
    pytest.param(4, [row(2, "A"), row(1, "B")], {"B": ("common", 1)}, id="a sibling's rows are ignored"),
    pytest.param(5, [row(1, "A"), row(5, "B")], {"B": ("scratch", 1)}, id="another tree's rows are ignored"),
    pytest.param(9, [row(1, "A")], {}, id="an environment missing from the tree sees nothing"),
    pytest.param(
        2,
        [row(2, "Z"), row(1, "M"), row(2, "A")],
        {"A": ("production", 1), "M": ("common", 1), "Z": ("production", 1)},
        id="sorted by name",
    ),
]


@pytest.mark.parametrize(("env", "rows", "expected"), CASES)
def test_table(env: int, rows: list[StoredRow], expected: dict[str, tuple[str, int]]) -> None:
    got = visible(env, TREE, rows)
    assert shown(got) == expected
    assert list(got) == sorted(got)
    for seen in got.values():
        assert seen.environment == TREE[seen.row.environment_id][0]


def test_chain_walks_parents_nearest_first() -> None:
    assert chain(3, TREE) == [3, 2, 1]
    assert chain(4, TREE) == [4, 1]
    assert chain(5, TREE) == [5]
    assert chain(42, TREE) == []


@pytest.mark.parametrize(
    ("tree", "start", "expected"),
    [
        pytest.param({1: ("a", 1)}, 1, [1], id="an environment its own parent"),
        pytest.param({1: ("a", 2), 2: ("b", 1)}, 1, [1, 2], id="two environments each other's parent"),
        pytest.param({1: ("a", 2), 2: ("b", 3), 3: ("c", 2)}, 1, [1, 2, 3], id="a cycle above the start"),
    ],
)
def test_cycles_end_the_walk_each_environment_once(tree: Tree, start: int, expected: list[int]) -> None:
    # Only a direct database edit makes a cycle (set_parent refuses one): the walk must still end.
    assert chain(start, tree) == expected


def test_a_cycle_still_ranks_nearest_first() -> None:
    tree: Tree = {1: ("a", 2), 2: ("b", 1)}
    rows = [row(2, "X", version=2), row(1, "X", version=1), row(2, "Y", version=2)]
    assert shown(visible(1, tree, rows)) == {"X": ("a", 1), "Y": ("b", 2)}
    assert shown(visible(2, tree, rows)) == {"X": ("b", 2), "Y": ("b", 2)}


def linear(depth: int) -> Tree:
    """e1 <- e2 <- ... <- e{depth}: environment i's parent is i - 1."""
    return {i: (f"e{i}", i - 1 if i > 1 else None) for i in range(1, depth + 1)}


def test_depth_limit_counts_the_requested_environment() -> None:
    tree = linear(MAX_DEPTH + 4)
    start = MAX_DEPTH + 4
    assert len(chain(start, tree)) == MAX_DEPTH
    assert chain(start, tree)[-1] == start - MAX_DEPTH + 1
    last_seen, first_unseen = start - MAX_DEPTH + 1, start - MAX_DEPTH
    got = visible(start, tree, [row(last_seen, "IN"), row(first_unseen, "OUT")])
    assert shown(got) == {"IN": (f"e{last_seen}", 1)}


def test_a_parent_cut_from_the_tree_ends_the_walk() -> None:
    # The database statement returns at most MAX_DEPTH environments: the last one's parent is absent.
    tree: Tree = {3: ("c", 2), 2: ("b", 1)}
    assert chain(3, tree) == [3, 2]
    assert shown(visible(3, tree, [row(1, "A"), row(2, "B")])) == {"B": ("b", 1)}


class Mapped(NamedTuple):
    """Another kind of candidate (a value kept upstream): the walk is not tied to database rows."""

    environment_id: int
    name: str
    tag: str
    readable: bool = True


def test_first_candidate_of_an_environment_wins_a_tie() -> None:
    # proxied.resolve gives upstream values first: within one environment they win over database rows.
    candidates: list[Mapped | StoredRow] = [Mapped(2, "A", "upstream"), row(2, "A"), row(1, "A")]
    got = visible(2, TREE, candidates)
    assert got["A"].row == Mapped(2, "A", "upstream")
    assert got["A"].environment == "production"
    assert (
        visible(2, TREE, [Mapped(1, "A", "far"), Mapped(2, "A", "near", readable=False)])["A"].row.tag
        == "far"
    )


# --- a reference model: walk environment by environment, take the first readable row of each name -------


def reference(start: int, tree: Tree, rows: list[StoredRow]) -> dict[str, tuple[str, int]]:
    walked: list[int] = []
    cursor: int | None = start
    while cursor is not None and cursor in tree and cursor not in walked and len(walked) < MAX_DEPTH:
        walked.append(cursor)
        cursor = tree[cursor][1]
    out: dict[str, tuple[str, int]] = {}
    for env in walked:
        for r in rows:
            live = not r.deleted and not r.destroyed and r.ciphertext is not None
            if r.environment_id == env and live and r.name not in out:
                out[r.name] = (tree[env][0], r.version)
    return dict(sorted(out.items()))


@st.composite
def worlds(draw: st.DrawFn) -> tuple[int, Tree, list[StoredRow]]:
    size = draw(st.integers(1, MAX_DEPTH + 3))
    ids = list(range(1, size + 1))
    tree: Tree = {i: (f"e{i}", draw(st.none() | st.sampled_from(ids))) for i in ids}
    rows = []
    for version, (env, name) in enumerate(
        draw(st.lists(st.tuples(st.sampled_from(ids), st.sampled_from("ABCD")), max_size=30, unique=True)), 1
    ):
        rows.append(
            row(env, name, version=version, deleted=draw(st.booleans()), destroyed=draw(st.booleans()))
        )
    return draw(st.sampled_from(ids)), tree, draw(st.permutations(rows))


@given(worlds())
def test_matches_the_reference_model(world: tuple[int, Tree, list[StoredRow]]) -> None:
    start, tree, rows = world
    assert shown(visible(start, tree, rows)) == reference(start, tree, rows)
