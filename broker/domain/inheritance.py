"""Environment inheritance: which stored value an environment sees for each name. Pure, no I/O.

An environment sees its own values and, for every name it does not hold, its parent's, then the
grandparent's: the nearest environment holding a readable value wins. The walk follows parents from the
requested environment, at most MAX_DEPTH environments, each once (a cycle, which only a direct database
edit can make, ends the walk instead of looping). Every use case that serves values through inheritance
(resolve, export, compile, check, read by name, diff, the deploy bundle, upstream backends) decides here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Generic, NamedTuple, Protocol, TypeVar

MAX_DEPTH = 16
"""The most environments a walk visits (the requested one included); deeper parents are refused on write."""

Tree = Mapping[int, tuple[str, int | None]]
"""Environment id -> (slug, parent id): the part of a project's environment tree a walk may visit."""


class Candidate(Protocol):
    """A value some environment holds: where, under which name, and whether it can be served at all."""

    @property
    def environment_id(self) -> int: ...

    @property
    def name(self) -> str: ...

    @property
    def readable(self) -> bool: ...


C = TypeVar("C", bound=Candidate)


class StoredRow(NamedTuple):
    """A secret's current version as the database holds it (the ciphertext stays sealed)."""

    environment_id: int
    name: str
    sensitive: bool
    version: int
    ciphertext: bytes | None
    wrapped_dek: bytes | None
    kek_id: str | None
    secret_id: int
    binding: bytes | None
    deleted: bool
    destroyed: bool

    @property
    def readable(self) -> bool:
        """A live version whose sealed value is all there (deleted and destroyed ones do not shadow)."""
        return not (self.deleted or self.destroyed) and None not in (
            self.ciphertext,
            self.wrapped_dek,
            self.kek_id,
        )


class Seen(NamedTuple, Generic[C]):
    """The value an environment sees for a name, and the slug of the environment it comes from."""

    row: C
    environment: str


def chain(environment_id: int, tree: Tree) -> list[int]:
    """The environment then its parents, nearest first: at most MAX_DEPTH, each once, only ids in `tree`."""
    out: list[int] = []
    cursor: int | None = environment_id
    while cursor is not None and cursor in tree and cursor not in out and len(out) < MAX_DEPTH:
        out.append(cursor)
        cursor = tree[cursor][1]
    return out


def visible(environment_id: int, tree: Tree, candidates: Iterable[C]) -> dict[str, Seen[C]]:
    """Per name (sorted), the readable candidate of the nearest environment on the chain; the first
    given wins between two of the same environment. Candidates off the chain are ignored."""
    rank = {eid: i for i, eid in enumerate(chain(environment_id, tree))}
    best: dict[str, tuple[int, C]] = {}
    for candidate in candidates:
        place = rank.get(candidate.environment_id)
        if place is None or not candidate.readable:
            continue
        held = best.get(candidate.name)
        if held is None or place < held[0]:
            best[candidate.name] = (place, candidate)
    return {
        name: Seen(row, tree[row.environment_id][0])
        for name, (_place, row) in sorted(best.items(), key=lambda item: item[0])
    }
