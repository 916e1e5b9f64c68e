"""Where a request's secrets live, chosen once per request: the database or an upstream (Vault, AWS).

`choose` is the one place that looks at the backends file. A request about one secret goes to the
upstream that maps it (the secret itself or its whole environment); a request about an environment (a
list, a resolve) goes to the upstream store when the project has any mapping, since its inheritance
chain may mix upstream values with database rows; everything else goes to the database store.
"""

from __future__ import annotations

from broker.services.runtime import Runtime
from broker.services.stores.base import SecretStore
from broker.services.stores.database import DatabaseStore
from broker.services.stores.upstream import UpstreamStore

__all__ = ["DatabaseStore", "SecretStore", "UpstreamStore", "choose"]


def choose(rt: Runtime, *, project: str, environment: str, name: str | None = None) -> SecretStore:
    """The store of one secret (`name`) or of an environment (`name` None)."""
    backends = rt.backends
    if backends is None or project not in backends.projects:
        return DatabaseStore()
    if name is None:
        return UpstreamStore(backends, None)
    route = backends.route(project, environment, name)
    return DatabaseStore() if route is None else UpstreamStore(backends, route)
