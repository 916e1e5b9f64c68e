"""Typed reading of the broker's JSON answers and the route paths; errors name a field, never its value."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cli.errors import CliError


def query_string(params: dict[str, str]) -> str:
    """A query string of the non-empty `params` (empty when none), each value quoted."""
    from urllib.parse import urlencode

    present = {k: v for k, v in params.items() if v is not None and v != ""}
    return "?" + urlencode(present, quote_via=quote) if present else ""


def json_object(data: object, where: str) -> dict[str, Any]:
    """`data` if it is a JSON object, else an error naming `where`."""
    if not isinstance(data, dict):
        raise unexpected(where, "is not an object")
    return data


def segment(value: str) -> str:
    """A name quoted into exactly one path segment."""
    # Names are validated before they get here; quoting is what guarantees one name is one path segment.
    return quote(value, safe="")


def project_path(project: str) -> str:
    """`/v1/projects/{project}`."""
    return f"/v1/projects/{segment(project)}"


def env_path(project: str, environment: str) -> str:
    """`/v1/projects/{project}/environments/{environment}`."""
    return f"{project_path(project)}/environments/{segment(environment)}"


def secret_path(project: str, environment: str, name: str) -> str:
    """The path of one secret of an environment."""
    return f"{env_path(project, environment)}/secrets/{segment(name)}"


def unexpected(where: str, problem: str) -> CliError:
    """The error for an answer of the wrong shape: where and what, never the value."""
    # Only paths and types, never the offending value: it may be a secret.
    return CliError(f"the broker sent an unexpected response: {where} {problem}")


class Reader:
    """Typed access to one JSON object of a response; errors name the field, never its value."""

    def __init__(self, data: object, where: str) -> None:
        if not isinstance(data, dict):
            raise unexpected(where, "is not an object")
        self._data: dict[str, object] = data
        self._where = where

    def _get(self, key: str) -> object:
        if key not in self._data:
            raise unexpected(f"{self._where}.{key}", "is missing")
        return self._data[key]

    def keys(self) -> list[str]:
        return list(self._data)

    def text(self, key: str) -> str:
        value = self._get(key)
        if not isinstance(value, str):
            raise unexpected(f"{self._where}.{key}", "is not a string")
        return value

    def maybe_text(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.text(key)

    def integer(self, key: str) -> int:
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, int):
            raise unexpected(f"{self._where}.{key}", "is not an integer")
        return value

    def maybe_integer(self, key: str) -> int | None:
        return None if self._data.get(key) is None else self.integer(key)

    def flag(self, key: str) -> bool:
        value = self._get(key)
        if not isinstance(value, bool):
            raise unexpected(f"{self._where}.{key}", "is not true or false")
        return value

    def maybe_flag(self, key: str) -> bool | None:
        return None if self._data.get(key) is None else self.flag(key)

    def child(self, key: str) -> Reader:
        return Reader(self._get(key), f"{self._where}.{key}")

    def _list(self, key: str) -> list[object]:
        value = self._get(key)
        if not isinstance(value, list):
            raise unexpected(f"{self._where}.{key}", "is not a list")
        return value

    def objects(self, key: str) -> list[Reader]:
        return [Reader(item, f"{self._where}.{key}[{i}]") for i, item in enumerate(self._list(key))]

    def maybe_object(self, key: str) -> bool:
        """Whether `key` holds an object (False when absent or null; an error when another type)."""
        value = self._data.get(key)
        if value is None:
            return False
        if not isinstance(value, dict):
            raise unexpected(f"{self._where}.{key}", "is not an object")
        return True

    def objects_or_none(self, key: str) -> list[Reader]:
        return self.objects(key) if self._data.get(key) is not None else []

    def ident(self, key: str) -> str:
        """An id the broker may send as a string or an integer, as text."""
        value = self._get(key)
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise unexpected(f"{self._where}.{key}", "is not an id")
        return str(value)

    def maybe_list(self, key: str) -> bool:
        return self._data.get(key) is not None

    def maybe_text_or_id(self, key: str) -> str | None:
        return None if self._data.get(key) is None else self.ident(key)

    def raw(self) -> dict[str, object]:
        return self._data

    def text_map(self, key: str) -> dict[str, str]:
        if self._data.get(key) is None:
            return {}
        child = self.child(key)
        return {name: child.text(name) for name in child.keys()}  # noqa: SIM118 (a Reader)

    def texts(self, key: str) -> tuple[str, ...]:
        items = self._list(key)
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise unexpected(f"{self._where}.{key}[{i}]", "is not a string")
        return tuple(str(item) for item in items)
