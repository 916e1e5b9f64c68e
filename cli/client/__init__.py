"""The only way the CLI talks to the broker: stdlib http.client to the routes of docs/api.md, typed results.

`transport` holds the connection and its rules (URLs, TLS, errors), `types` the dataclasses answers become,
and one module per API area adds its calls to `BrokerClient`. Callers import everything from here.
"""

from __future__ import annotations

from cli.client.audit import AuditApi
from cli.client.compile import CompileApi
from cli.client.deploys import MAX_HOST_ERROR, DeploysApi, plan_from_json
from cli.client.identities import IdentitiesApi
from cli.client.projects import ProjectsApi
from cli.client.secrets import SecretsApi
from cli.client.tokens import TokensApi
from cli.client.transport import (
    IDLE_REUSE_SECONDS,
    MASK,
    MAX_RESPONSE_BYTES,
    REVEAL_HEADER,
    TIMEOUT_SECONDS,
    BrokerError,
    BrokerUrl,
    Progress,
    is_loopback,
    parse_broker_url,
)
from cli.client.types import (
    BundleHost,
    Checked,
    Compiled,
    CreatedDeploy,
    DeployBundle,
    DeployHostRecord,
    DeployInfo,
    DeployPlan,
    Environment,
    EnvironmentDiff,
    Fingerprint,
    Generated,
    HostStatus,
    IdentityInfo,
    IdentitySecret,
    ImportChange,
    ImportResult,
    KeyRead,
    KeyRef,
    LastDeploy,
    ListedToken,
    PlanBuilder,
    PlanHealthcheck,
    PlanHost,
    PlanRegistry,
    PlanRole,
    PlanSsh,
    Principal,
    Problem,
    Project,
    RenderedFile,
    Resolved,
    ResolvedValue,
    Rotated,
    Scope,
    Secret,
    SecretHistory,
    SecretMeta,
    SecretVersion,
    Token,
    TokenInfo,
)


class BrokerClient(TokensApi, IdentitiesApi, ProjectsApi, SecretsApi, CompileApi, AuditApi, DeploysApi):
    """A connection to one broker, optionally authenticated by one token, with every API area's calls."""


__all__ = [
    "IDLE_REUSE_SECONDS",
    "MASK",
    "MAX_HOST_ERROR",
    "MAX_RESPONSE_BYTES",
    "REVEAL_HEADER",
    "TIMEOUT_SECONDS",
    "BrokerClient",
    "BrokerError",
    "BrokerUrl",
    "BundleHost",
    "Checked",
    "Compiled",
    "CreatedDeploy",
    "DeployBundle",
    "DeployHostRecord",
    "DeployInfo",
    "DeployPlan",
    "Environment",
    "EnvironmentDiff",
    "Fingerprint",
    "Generated",
    "HostStatus",
    "IdentityInfo",
    "IdentitySecret",
    "ImportChange",
    "ImportResult",
    "KeyRead",
    "KeyRef",
    "LastDeploy",
    "ListedToken",
    "PlanBuilder",
    "PlanHealthcheck",
    "PlanHost",
    "PlanRegistry",
    "PlanRole",
    "PlanSsh",
    "Principal",
    "Problem",
    "Progress",
    "Project",
    "RenderedFile",
    "Resolved",
    "ResolvedValue",
    "Rotated",
    "Scope",
    "Secret",
    "SecretHistory",
    "SecretMeta",
    "SecretVersion",
    "Token",
    "TokenInfo",
    "is_loopback",
    "parse_broker_url",
    "plan_from_json",
]
