"""`k8s`: a ConfigMap for the clear values and a Secret (base64 `data`) for the sensitive ones.

One file, two YAML documents written by the serializer in jsonyaml.py, for `kubectl apply -f`:

- object names `<service>-<environment>-config` and `<service>-<environment>-secrets`, lower-cased
  with `_` written `-` (an RFC 1123 subdomain, at most 253 characters; otherwise refused);
- labels `app.kubernetes.io/name`, `app.kubernetes.io/instance`, `app.kubernetes.io/managed-by`
  and `strongroom/environment` (label values at most 63 characters; otherwise refused);
- keys must be valid ConfigMap/Secret keys (`[-._a-zA-Z0-9]+`, at most 253, not `.`/`..`);
- Secret values are the base64 of their UTF-8 bytes, so any text is carried, multi-line PEM keys
  and NUL included; ConfigMap values are quoted YAML strings and refuse NUL (no container can
  receive it as an environment variable: mark the variable sensitive, or use a file mount);
- each object's data is at most 1,000,000 bytes (the API server refuses objects over 1 MiB).
"""

from __future__ import annotations

import binascii
import re
from collections.abc import Sequence
from typing import Any

from broker.renderers import checks
from broker.renderers.base import Entry, RenderedFile, RenderError, RenderOptions
from broker.renderers.jsonyaml import dump_yaml

_KEY = re.compile(r"[-._a-zA-Z0-9]{1,253}")
_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_LABEL_VALUE = re.compile(r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?")
DATA_MAX_BYTES = 1_000_000
TARGET = "k8s"


def object_base_name(options: RenderOptions) -> str:
    """`<service>-<environment>`, lower-cased, `_` -> `-`: the stem of both object names."""
    return f"{options.service}-{options.environment}".lower().replace("_", "-")


def _labels(options: RenderOptions, base: str) -> dict[str, str]:
    labels = {
        "app.kubernetes.io/name": options.service,
        "app.kubernetes.io/instance": base,
        "app.kubernetes.io/managed-by": "strongroom",
        "strongroom/environment": options.environment,
    }
    for key, value in labels.items():
        if len(value) > 63 or not _LABEL_VALUE.fullmatch(value):
            raise RenderError(
                key=f"options/labels/{key}",
                target=TARGET,
                reason="a label value must be at most 63 letters, digits, '-', '_' or '.'",
                alternative="shorten the service or environment name",
            )
    return labels


def _metadata(name: str, options: RenderOptions, labels: dict[str, str]) -> dict[str, Any]:
    if len(name) > 253 or not _SUBDOMAIN.fullmatch(name):
        raise RenderError(
            key="options/service",
            target=TARGET,
            reason=f"object name {name!r} is not an RFC 1123 subdomain",
            alternative="use letters, digits and '-' in the service and environment names",
        )
    metadata: dict[str, Any] = {"name": name}
    if options.namespace is not None:
        if (
            len(options.namespace) > 63
            or not _SUBDOMAIN.fullmatch(options.namespace)
            or "." in options.namespace
        ):
            raise RenderError(
                key="options/namespace",
                target=TARGET,
                reason="a namespace must be an RFC 1123 label (lower-case letters, digits, '-'; at most 63)",
                alternative="fix the namespace",
            )
        metadata["namespace"] = options.namespace
    metadata["labels"] = dict(labels)
    return metadata


def _check_key(entry: Entry) -> None:
    if not _KEY.fullmatch(entry.name) or entry.name in (".", "..") or entry.name.startswith(".."):
        raise checks.refuse(
            entry,
            TARGET,
            "the name is not a valid ConfigMap/Secret key ([-._a-zA-Z0-9]+, at most 253)",
            "rename the variable",
        )


class KubernetesRenderer:
    """A v1 ConfigMap (clear values) and a v1 Secret of type Opaque (sensitive values) in one file."""

    name = TARGET

    def render(self, entries: Sequence[Entry], *, options: RenderOptions) -> list[RenderedFile]:
        """Split the entries into a ConfigMap and a Secret, base64 the secrets, or refuse."""
        checks.check_options(options, self.name)
        path = checks.output_path(options, f"{options.environment}.k8s.yaml", self.name)
        base = object_base_name(options)
        labels = _labels(options, base)
        config: dict[str, str] = {}
        secret: dict[str, str] = {}
        sizes = {"config": 0, "secret": 0}
        for entry in checks.unique_sorted(entries, self.name):
            # The key and NUL checks inline for the common case; the helpers build the refusal.
            name = entry.name
            if _KEY.fullmatch(name) is None or name == "." or name.startswith(".."):
                _check_key(entry)
            data = checks.utf8(entry, self.name)
            kind = "secret" if entry.sensitive else "config"
            if kind == "config":
                if "\x00" in entry.value:
                    checks.refuse_chars(
                        entry,
                        self.name,
                        "\x00",
                        "mark it sensitive (Secret data is base64) or use a file mount",
                    )
                config[name] = entry.value
            else:
                secret[name] = binascii.b2a_base64(data, newline=False).decode("ascii")
            sizes[kind] += len(name) + len(data)
            if sizes[kind] > DATA_MAX_BYTES:
                raise checks.refuse(
                    entry,
                    self.name,
                    f"the {'Secret' if kind == 'secret' else 'ConfigMap'} data passes {DATA_MAX_BYTES} bytes "
                    "(the API server refuses objects over 1 MiB)",
                    checks.FILE_MOUNT,
                )
        documents = [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": _metadata(f"{base}-config", options, labels),
                "data": config,
            },
            {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": _metadata(f"{base}-secrets", options, labels),
                "type": "Opaque",
                "data": secret,
            },
        ]
        header = f"# Kubernetes ConfigMap and Secret for {options.service} ({options.environment}), rendered by Strongroom\n"
        return [
            RenderedFile(
                path=path, content=(header + dump_yaml(documents, documents=True)).encode(), holds_values=True
            )
        ]
