"""Compiling and checking manifests, named values, environment diffs (the manifest goes up as text; it holds no values)."""

from __future__ import annotations

import base64

from cli.client.reader import Reader, env_path, project_path, query_string, unexpected
from cli.client.transport import Transport
from cli.client.types import Checked, Compiled, EnvironmentDiff, Fingerprint, KeyRead, Problem, RenderedFile


class CompileApi(Transport):
    """Compile, check, values and diff."""

    def compile(
        self, *, project: str, environment: str, manifest: str, targets: list[str], role: str | None = None
    ) -> Compiled:
        """Render `targets` for an environment from `manifest` (`POST .../compile`)."""
        body = {"manifest": manifest, "targets": targets, "role": role}
        data = Reader(self._request("POST", f"{env_path(project, environment)}/compile", body), "compile")
        files = []
        for item in data.objects("files"):
            encoding = item.text("encoding")
            text = item.text("content")
            try:
                content = (
                    text.encode("utf-8") if encoding == "utf-8" else base64.b64decode(text, validate=True)
                )
            except ValueError:
                raise unexpected("compile.files", "has content that is not base64") from None
            files.append(
                RenderedFile(
                    path=item.text("path"),
                    content=content,
                    holds_values=item.flag("holds_values"),
                    mode=item.integer("mode"),
                )
            )
        return Compiled(files=tuple(files), warnings=_problems(data, "warnings"), keys=_keys_read(data))

    def check(
        self, *, project: str, environment: str, manifest: str, targets: list[str], role: str | None = None
    ) -> Checked:
        """Every problem a compile would meet, without any value (`POST .../check`)."""
        body = {"manifest": manifest, "targets": targets, "role": role}
        data = Reader(self._request("POST", f"{env_path(project, environment)}/check", body), "check")
        return Checked(ok=data.flag("ok"), problems=_problems(data, "problems"), keys=_keys_read(data))

    def values(self, *, project: str, environment: str, names: list[str]) -> dict[str, str]:
        """The named values as the environment sees them, all or an error (`POST .../values`)."""
        path = f"{env_path(project, environment)}/values"
        data = Reader(self._request("POST", path, {"names": names}), "values").child("values")
        out = {name: data.child(name).text("value") for name in data.keys()}  # noqa: SIM118 (a Reader)
        missing = [name for name in names if name not in out]
        if missing:
            raise unexpected("values", f"lacks {missing[0]}")
        return out

    def diff(self, *, project: str, a: str, b: str) -> EnvironmentDiff:
        """Two environments compared by fingerprint, never by value (`GET /v1/projects/{p}/diff`)."""
        path = f"{project_path(project)}/diff" + query_string({"a": a, "b": b})
        data = Reader(self._request("GET", path), "diff")

        def fingerprint(item: Reader) -> Fingerprint:
            return Fingerprint(item.text("fingerprint"), item.integer("version"), item.text("environment"))

        return EnvironmentDiff(
            a=data.text("a"),
            b=data.text("b"),
            only_in_a=data.texts("only_in_a"),
            only_in_b=data.texts("only_in_b"),
            different=tuple(
                (item.text("name"), fingerprint(item.child("a")), fingerprint(item.child("b")))
                for item in data.objects("different")
            ),
            same=data.texts("same"),
        )


def _problems(data: Reader, key: str) -> tuple[Problem, ...]:
    return tuple(
        Problem(
            path=item.text("path"),
            line=item.maybe_integer("line"),
            level=item.text("level"),
            message=item.text("message"),
        )
        for item in data.objects(key)
    )


def _keys_read(data: Reader) -> tuple[KeyRead, ...]:
    return tuple(
        KeyRead(name=item.text("name"), environment=item.text("environment"), version=item.integer("version"))
        for item in data.objects("keys")
    )
