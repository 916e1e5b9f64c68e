"""The kamal target refuses what Kamal 2.12's loader would refuse: a manifest that compiles must load in Kamal.

Each refusal is checked three ways: `check` (target_problems) names the manifest path in one sentence, the
compile raises that same sentence (so nothing is written), and the deploy.yml the renderer would have written
is refused by the Kamal 2.12.0 loader emulation (tests/support/kamal_loader.py) with Kamal's own message.
Every manifest that compiles is loaded by the same emulation.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.compiler.compile import compile_environment, kamal_config_problems, render, target_problems
from broker.compiler.parse import parse_manifest
from broker.compiler.references import StoredValue
from broker.domain.manifest import deep_merge
from broker.errors import Invalid
from broker.renderers.kamal import KamalRenderer, proxied_roles
from tests.support import kamal_loader

CERT = "-----BEGIN CERTIFICATE-----\nMIIBszCCAVmgAwIBAgIUcanary-cert\n-----END CERTIFICATE-----\n"
KEY = "-----BEGIN PRIVATE KEY-----\nMIGHAgEAMBMGcanary-key\n-----END PRIVATE KEY-----\n"
VALUES = {
    "REGISTRY_PASSWORD": "reg-canary",
    "DATABASE_URL": "postgres://db/app",
    "TLS_CERT": CERT,
    "TLS_KEY": KEY,
}

BASE: dict[str, Any] = {
    "service": "app",
    "image": "ghcr.io/acme/app",
    "registry": {"server": "ghcr.io", "username": "acme", "password": "REGISTRY_PASSWORD"},
    "builder": {"arch": "amd64"},
    "roles": {"web": {"hosts": ["192.0.2.10"]}},
    "proxy": {"ssl": "true", "host": "app.example.com"},
    "env": {"secret": ["DATABASE_URL"]},
}


def lookup(environment: str, name: str) -> StoredValue | None:
    return StoredValue(VALUES[name], True, 1, environment) if name in VALUES else None


def with_(**changes: Any) -> dict[str, Any]:
    """BASE with top-level keys replaced (None removes one)."""
    body = {**BASE, **changes}
    return {k: v for k, v in body.items() if v is not None}


def manifest_of(body: dict[str, Any]) -> Any:
    return parse_manifest(yaml.safe_dump(body, sort_keys=False))


def compiled_of(body: dict[str, Any]) -> Any:
    manifest = manifest_of(body)
    compiled = compile_environment(manifest, "production", lookup)
    assert not compiled.errors, compiled.errors
    return compiled


def kamal_reads(compiled: Any) -> dict[str, Any]:
    """The configuration Kamal would read (`-d production`) from the files the renderer alone writes."""
    files = KamalRenderer(compiled.kamal_plan()).render(compiled.secret_entries(), options=compiled.options())
    texts = {f.path: f.content.decode() for f in files}
    return deep_merge(
        yaml.safe_load(texts["config/deploy.yml"]),
        yaml.safe_load(texts["config/deploy.production.yml"]) or {},
    )


REFUSED = [
    pytest.param(with_(builder=None), "builder/arch", "builder: Builder arch not set", id="no-builder"),
    pytest.param(
        with_(builder={"secrets": ["DATABASE_URL"]}),
        "builder/arch",
        "builder: Builder arch not set",
        id="builder-without-arch",
    ),
    pytest.param(with_(registry=None), "registry", "registry/username: is required", id="no-registry"),
    pytest.param(with_(image=None), "image", "Missing required configuration for image", id="no-image"),
    pytest.param(with_(roles=None), "roles", "No servers or accessories specified", id="no-servers"),
    pytest.param(
        with_(roles={"app": {"hosts": ["192.0.2.10"]}}),
        "roles/web",
        "The primary_role web isn't defined",
        id="no-web-role",
    ),
    pytest.param(
        with_(roles={"web": {"hosts": ["192.0.2.10", "192.0.2.11"]}}),
        "roles/web/hosts",
        "SSL is only supported on a single server unless you provide custom certificates, "
        "found 2 servers for role web",
        id="ssl-on-two-web-hosts",
    ),
    pytest.param(
        with_(
            roles={
                "web": {"hosts": ["192.0.2.10"]},
                "api": {"hosts": ["192.0.2.12", "192.0.2.13"], "proxy": "true"},
            }
        ),
        "roles/api/hosts",
        "found 2 servers for role api",
        id="ssl-on-two-hosts-of-a-proxied-role",
    ),
    pytest.param(
        with_(roles={"web": {"hosts": ["192.0.2.10"]}, "api": {"hosts": ["192.0.2.12"], "proxy": "true"}}),
        "roles/api/proxy",
        "Different roles can't share the same host for SSL: app.example.com",
        id="two-roles-share-the-ssl-host",
    ),
    pytest.param(
        with_(roles={"web": {"hosts": ["192.0.2.10"], "options": {"restart": "sometimes"}}}),
        "roles/web/options/restart",
        "should be no, always, unless-stopped, on-failure, or on-failure:N",
        id="role-restart-policy",
    ),
    pytest.param(
        with_(
            accessories={
                "db": {"image": "postgres:16", "host": "192.0.2.20", "options": {"restart": "on-failure:x"}}
            }
        ),
        "accessories/db/options/restart",
        "should be no, always, unless-stopped, on-failure, or on-failure:N",
        id="accessory-restart-policy",
    ),
]


@pytest.mark.parametrize(("body", "path", "kamal_says"), REFUSED)
def test_each_kamal_refusal_names_the_manifest_path(body: dict[str, Any], path: str, kamal_says: str) -> None:
    compiled = compiled_of(body)
    problems = target_problems(compiled, ["kamal"])
    assert {p.where for p in problems} == {"targets/kamal"}
    (message,) = [p.message for p in problems if p.message.startswith(f"{path}: ")]
    assert kamal_says in message and "Kamal 2.12" in message
    assert message.count(". ") == 0 and "\n" not in message  # one sentence
    with pytest.raises(Invalid) as caught:
        render(compiled, ["kamal"])
    # The compile stops on a refusal: no file is returned, so none is written.
    assert caught.value.message in [p.message for p in problems]
    # The renderer alone would have written a configuration that Kamal itself refuses for the same reason.
    assert any(kamal_says in refusal for refusal in kamal_loader.refusals(kamal_reads(compiled)))
    for value in VALUES.values():
        assert value not in message


ACCEPTED = [
    pytest.param(BASE, id="the-base"),
    pytest.param(
        with_(roles={"web": {"hosts": ["192.0.2.10", "192.0.2.11"]}}, proxy={"host": "app.example.com"}),
        id="two-hosts-without-ssl",
    ),
    pytest.param(
        with_(
            roles={"web": {"hosts": ["192.0.2.10", "192.0.2.11"]}},
            proxy={
                "host": "app.example.com",
                "ssl": {"certificate_pem": "TLS_CERT", "private_key_pem": "TLS_KEY"},
            },
        ),
        id="two-hosts-with-own-certificate",
    ),
    pytest.param(
        with_(roles={"web": {"hosts": ["192.0.2.10", "192.0.2.11"], "proxy": "false"}}),
        id="two-hosts-without-the-proxy",
    ),
    pytest.param(
        with_(
            roles={"web": {"hosts": ["192.0.2.10"]}, "job": {"hosts": ["192.0.2.12", "192.0.2.13"]}},
            builder={"arch": ["amd64", "arm64"]},
        ),
        id="a-second-role-without-proxy-and-two-arches",
    ),
    pytest.param(
        with_(
            registry={"server": "localhost:5000", "username": "acme", "password": "REGISTRY_PASSWORD"},
            image=None,
        ),
        id="local-registry-without-image",
    ),
    pytest.param(
        with_(
            roles={"web": {"hosts": ["192.0.2.10"], "options": {"restart": "on-failure:3"}}},
            accessories={"db": {"image": "postgres:16", "roles": ["web"], "options": {"restart": "no"}}},
        ),
        id="restart-policies",
    ),
    pytest.param(
        with_(roles=None, accessories={"db": {"image": "postgres:16", "host": "192.0.2.20"}}, proxy=None),
        id="accessories-only",
    ),
]


@pytest.mark.parametrize("body", ACCEPTED)
def test_what_compiles_loads_in_kamal(body: dict[str, Any]) -> None:
    compiled = compiled_of(body)
    assert target_problems(compiled, ["kamal"]) == []
    render(compiled, ["kamal"])
    assert kamal_loader.refusals(kamal_reads(compiled)) == []


def test_own_certificate_goes_by_secret_name_to_deploy_yml_and_secrets() -> None:
    body = with_(
        roles={"web": {"hosts": ["192.0.2.10", "192.0.2.11"]}},
        proxy={
            "host": "app.example.com",
            "ssl": {"certificate_pem": "TLS_CERT", "private_key_pem": "TLS_KEY"},
        },
    )
    compiled = compiled_of(body)
    files = {f.path: f.content.decode() for f in render(compiled, ["kamal"])}
    config = kamal_reads(compiled)
    assert config["proxy"]["ssl"] == {"certificate_pem": "TLS_CERT", "private_key_pem": "TLS_KEY"}
    secrets = files[".kamal/secrets.production"]
    assert "TLS_CERT=$(kamal secrets extract TLS_CERT" in secrets
    assert "TLS_KEY=$(kamal secrets extract TLS_KEY" in secrets
    assert {("production", "TLS_CERT"), ("production", "TLS_KEY")} <= compiled.reads
    everything = "".join(files.values())
    assert "canary" not in everything


@pytest.mark.parametrize(
    ("swap", "path"),
    [
        ({"TLS_CERT": KEY}, "proxy/ssl/certificate_pem"),
        ({"TLS_KEY": CERT}, "proxy/ssl/private_key_pem"),
        ({"TLS_KEY": "-----BEGIN ENCRYPTED PRIVATE KEY-----\ncanary\n"}, "proxy/ssl/private_key_pem"),
    ],
)
def test_certificate_secrets_must_hold_pem_of_their_kind(
    swap: dict[str, str], path: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in swap.items():
        monkeypatch.setitem(VALUES, name, value)
    compiled = compiled_of(
        with_(
            proxy={
                "host": "app.example.com",
                "ssl": {"certificate_pem": "TLS_CERT", "private_key_pem": "TLS_KEY"},
            }
        )
    )
    (problem,) = target_problems(compiled, ["kamal"])
    assert problem.message.startswith(f"{path}: the secret ") and "canary" not in problem.message
    with pytest.raises(Invalid, match=path):
        render(compiled, ["kamal"])


def test_missing_certificate_secret_is_named_at_its_path() -> None:
    manifest = manifest_of(
        with_(
            proxy={
                "host": "a.example.com",
                "ssl": {"certificate_pem": "NO_CERT", "private_key_pem": "TLS_KEY"},
            }
        )
    )
    compiled = compile_environment(manifest, "production", lookup)
    assert [p.where for p in compiled.errors] == ["proxy/ssl/certificate_pem"]


@pytest.mark.parametrize(
    ("ssl", "error"),
    [
        ({"certificate_pem": "TLS_CERT"}, "proxy/ssl/private_key_pem: is required"),
        ({"private_key_pem": "TLS_KEY"}, "proxy/ssl/certificate_pem: is required"),
        ({"certificate_pem": "X", "private_key_pem": "X"}, "must name two different secrets"),
        (
            {"certificate_pem": "TLS-CERT", "private_key_pem": "K"},
            "proxy/ssl/certificate_pem: must be a variable",
        ),
        (
            {"certificate_pem": "C", "private_key_pem": "K", "pem": "x"},
            "proxy/ssl/pem: unknown key (expected one of: certificate_pem, private_key_pem)",
        ),
        ("maybe", "proxy/ssl: must be true, false, or certificate_pem and private_key_pem"),
    ],
)
def test_ssl_mapping_is_validated_by_the_manifest(ssl: Any, error: str) -> None:
    from broker.compiler.parse import ManifestError

    with pytest.raises(ManifestError) as caught:
        manifest_of(with_(proxy={"host": "app.example.com", "ssl": ssl}))
    assert error in caught.value.message


def test_proxied_roles_follow_kamal() -> None:
    body = manifest_of(
        with_(
            roles={
                "web": {"hosts": ["192.0.2.1"]},
                "job": {"hosts": ["192.0.2.2"]},
                "api": {"hosts": ["192.0.2.3"], "proxy": "true"},
                "off": {"hosts": ["192.0.2.4"], "proxy": "false"},
            }
        )
    ).base
    assert proxied_roles(body) == ["web", "api"]
    body = manifest_of(with_(roles={"web": {"hosts": ["192.0.2.1"], "proxy": "false"}})).base
    assert proxied_roles(body) == []


# --- the oracle's own rules, one test each -----------------------------------------------------------------


def _loadable() -> dict[str, Any]:
    return {
        "service": "app",
        "image": "acme/app",
        "servers": {"web": ["192.0.2.1"]},
        "registry": {"username": "acme", "password": ["P"]},
        "builder": {"arch": "amd64"},
        "proxy": {"ssl": True, "host": "app.example.com"},
    }


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"builder": {}}, "builder: Builder arch not set"),
        ({"registry": None}, "registry/username: is required"),
        ({"image": None}, "Missing required configuration for image"),
        ({"servers": None}, "No servers or accessories specified"),
        ({"servers": {"app": ["192.0.2.1"]}}, "The primary_role web isn't defined"),
        ({"servers": {"web": ["192.0.2.1", "192.0.2.2"]}}, "found 2 servers for role web"),
        (
            {"servers": {"web": ["192.0.2.1"], "api": {"hosts": ["192.0.2.2"], "proxy": True}}},
            "Different roles can't share the same host for SSL: app.example.com",
        ),
        ({"proxy": {"ssl": True}}, "proxy: Must set a host to enable automatic SSL"),
        (
            {"proxy": {"host": "a.example.com", "ssl": {"certificate_pem": "C"}}},
            "Missing private_key_pem setting",
        ),
        ({"servers": {"web": {"hosts": ["192.0.2.1"], "options": {"restart": "x"}}}}, "on-failure:N"),
        ({"registry": {"username": "acme"}}, "registry/password: is required"),
        ({"labelz": {}}, "unknown key: labelz"),
        ({"service": "my app"}, "Service name can only include"),
    ],
)
def test_loader_emulation_refuses(change: dict[str, Any], message: str) -> None:
    config = {k: v for k, v in {**_loadable(), **change}.items() if v is not None}
    assert any(message in refusal for refusal in kamal_loader.refusals(config))


def test_loader_emulation_accepts_a_plain_configuration() -> None:
    assert kamal_loader.refusals(_loadable()) == []
    local = {**_loadable(), "registry": {"server": "localhost:5555"}}
    local.pop("image")
    assert kamal_loader.refusals(local) == []
    custom = {
        **_loadable(),
        "servers": {"web": ["192.0.2.1", "192.0.2.2"]},
        "proxy": {"host": "a.example.com", "ssl": {"certificate_pem": "C", "private_key_pem": "K"}},
    }
    assert kamal_loader.refusals(custom) == []


# --- the rules and the loader emulation agree on any manifest of this shape ---------------------------------

_HOSTS = st.lists(st.sampled_from(["192.0.2.1", "192.0.2.2", "192.0.2.3"]), min_size=1, max_size=3)
_ROLE = st.fixed_dictionaries(
    {"hosts": _HOSTS},
    optional={
        "proxy": st.sampled_from(["true", "false"]),
        "options": st.fixed_dictionaries(
            {"restart": st.sampled_from(["no", "always", "on-failure:2", "often"])}
        ),
    },
)
_SSL = st.one_of(
    st.sampled_from(["true", "false"]),
    st.just({"certificate_pem": "TLS_CERT", "private_key_pem": "TLS_KEY"}),
)


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    body: dict[str, Any] = {"service": "app", "env": {"secret": ["DATABASE_URL"]}}
    if draw(st.booleans()):
        body["image"] = "ghcr.io/acme/app"
    if draw(st.booleans()):
        server = draw(st.sampled_from(["ghcr.io", "localhost:5000"]))
        body["registry"] = {"server": server, "username": "acme", "password": "REGISTRY_PASSWORD"}
    if draw(st.booleans()):
        body["builder"] = draw(
            st.sampled_from([{"arch": "amd64"}, {"arch": ["amd64", "arm64"]}, {"args": {}}])
        )
    roles = draw(st.dictionaries(st.sampled_from(["web", "job", "api"]), _ROLE, max_size=3))
    if roles:
        body["roles"] = roles
    if draw(st.booleans()):
        body["accessories"] = {"db": {"image": "postgres:16", "host": "192.0.2.20"}}
    if draw(st.booleans()):
        body["proxy"] = {"host": "app.example.com", "ssl": draw(_SSL)}
    return body


@settings(max_examples=300, deadline=None)
@given(_bodies())
def test_kamal_rules_agree_with_the_loader_emulation(body: dict[str, Any]) -> None:
    compiled = compiled_of(body)
    # Each refusal quotes Kamal's message between backticks: the same messages, no more and no fewer.
    quoted = [
        m.group(1) for e in kamal_config_problems(compiled) if (m := re.search(r"`([^`]+)`", e.message))
    ]
    loader = kamal_loader.refusals(kamal_reads(compiled))
    assert all(any(q in said for said in loader) for q in quoted), (quoted, loader)
    assert all(any(q in said for q in quoted) for said in loader), (quoted, loader)
