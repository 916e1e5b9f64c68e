"""Target name -> renderer: the one list of what `strongroom compile --target` accepts."""

from __future__ import annotations

from collections.abc import Callable

from broker.errors import Invalid
from broker.renderers.base import Renderer
from broker.renderers.compose import ComposeRenderer
from broker.renderers.dotenv import DotenvExportRenderer, DotenvRenderer
from broker.renderers.envfile import EnvFileRenderer
from broker.renderers.jsonyaml import JsonRenderer, YamlRenderer
from broker.renderers.kamal import KamalRenderer
from broker.renderers.kubernetes import KubernetesRenderer
from broker.renderers.systemd import SystemdRenderer

_FACTORIES: dict[str, Callable[[], Renderer]] = {
    "dotenv": DotenvRenderer,
    "dotenv-export": DotenvExportRenderer,
    "env-file": EnvFileRenderer,
    "compose": ComposeRenderer,
    "json": JsonRenderer,
    "yaml": YamlRenderer,
    "k8s": KubernetesRenderer,
    "systemd": SystemdRenderer,
    "kamal": KamalRenderer,
}

TARGETS: tuple[str, ...] = tuple(_FACTORIES)


def get_renderer(name: str) -> Renderer:
    """The renderer for a target name, or Invalid naming the known targets."""
    factory = _FACTORIES.get(name)
    if factory is None:
        raise Invalid(f"target: unknown target {name!r} (known: {', '.join(TARGETS)})", field="target")
    return factory()
