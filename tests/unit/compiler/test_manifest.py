"""Parsing strongroom.yml: every error names its path (and line); YAML never changes what was written."""

from __future__ import annotations

import textwrap

import pytest

from broker.compiler.parse import ManifestError, parse_manifest
from broker.compiler.yamlsource import MAX_MANIFEST_BYTES

MINIMAL = "service: microblog\n"


def problems(text: str) -> list[str]:
    with pytest.raises(ManifestError) as caught:
        parse_manifest(textwrap.dedent(text))
    return [p.text() for p in caught.value.problems]


def test_minimal_manifest() -> None:
    m = parse_manifest(MINIMAL)
    assert m.base.service == "microblog" and m.project is None and not m.environments
    assert m.for_environment("production") is m.base


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            """
            service: microblog
            roles:
              web:
                hosts: [192.0.2.10, "not a host"]
            """,
            "roles/web/hosts/1: must be a host name or address (line 5)",
        ),
        (
            """
            service: microblog
            roles:
              web:
                hosts:
                  - host: "-bad-"
            """,
            "roles/web/hosts/0/host: must be a host name or address (line 6)",
        ),
        (
            """
            service: microblog
            roles:
              web:
                hostz: [a]
            """,
            "roles/web/hostz: unknown key (expected one of: cmd, env, hosts, options, proxy) (line 5)",
        ),
        (
            """
            service: microblog
            roles:
              web:
                hosts: []
            """,
            "roles/web/hosts: must not be empty (line 5)",
        ),
        ("service: Micro Blog\n", "service: must be a service name"),
        (
            """
            service: microblog
            env:
              clear:
                bad-name: x
            """,
            "env/clear/bad-name: must be a variable name",
        ),
        (
            """
            service: microblog
            env:
              secret: [A, A]
            """,
            "env/secret: lists A twice (line 4)",
        ),
        (
            """
            service: microblog
            env:
              clear: {A: x}
              secret: [A]
            """,
            "env: A is both clear and secret; keep one",
        ),
        (
            """
            service: microblog
            ssh:
              port: 70000
            """,
            "ssh/port: must be less than or equal to 65535 (line 4)",
        ),
        (
            """
            service: microblog
            ssh:
              host_keys:
                192.0.2.10: [md5:aa]
            """,
            "ssh/host_keys/192.0.2.10/0: must be an SSH host key fingerprint",
        ),
        (
            """
            service: microblog
            proxy:
              ssl: true
            """,
            "proxy: ssl needs a host",
        ),
        (
            """
            service: microblog
            registry:
              username: acme
              password: not-a-name
            """,
            "registry/password: must be a variable name",
        ),
        (
            """
            service: microblog
            builder:
              arch: sparc
            """,
            "builder/arch: must be 'amd64' or 'arm64'",
        ),
        (
            """
            service: microblog
            accessories:
              db:
                image: postgres:16
                roles: [web]
            """,
            "accessories/db/roles/0: role web is not defined under roles (line 6)",
        ),
        (
            """
            service: microblog
            accessories:
              db:
                image: postgres:16
            """,
            "accessories/db: needs exactly one of host, hosts or roles",
        ),
        (
            """
            service: microblog
            roles:
              web:
                hosts: [192.0.2.10]
            env:
              tags:
                monitoring: {clear: {A: x}}
            """,
            "env/tags/monitoring: no host under roles carries this tag",
        ),
        (
            """
            service: microblog
            env:
              clear:
                PRICE: costs $5
            """,
            "env/clear/PRICE: a lone $ at character 7: write $$ for a literal dollar sign",
        ),
        (
            """
            service: microblog
            env:
              clear:
                URL: ${HOST:-localhost}
            """,
            "env/clear/URL: the reference at character 1 must be ${NAME} or ${environment.NAME}",
        ),
        ("image: x\n", "service: is required"),
        ("- a\n- b\n", "strongroom.yml: must be a mapping with at least a service key"),
    ],
)
def test_errors_name_the_path(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_unknown_top_level_key_lists_the_known_ones() -> None:
    (found,) = problems("service: microblog\nimagez: acme/app\n")
    assert found.startswith(
        "imagez: unknown key (expected one of: accessories, builder, deploy, env, healthcheck, image"
    )


def test_every_problem_is_reported_at_once() -> None:
    found = problems(
        """
        service: microblog
        image: "UPPER/case"
        roles:
          web:
            hosts: ["a b"]
        ssh: {port: 0}
        """
    )
    assert len(found) == 3, found


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "service: a\nservice: b\n",
            "service: duplicate key (YAML would silently keep the last one) (line 2)",
        ),
        ("service: &s microblog\nimage: *s\n", "image: YAML aliases (*name) are not allowed"),
        ("service: !ruby/object:Gem::Installer x\n", "service: YAML tags are not allowed"),
        ("service: !!python/object:os.system x\n", "service: YAML tags are not allowed"),
        ("service: [unclosed\n", "strongroom.yml: not valid YAML"),
        ("service: a\n---\nservice: b\n", "strongroom.yml: not valid YAML"),
    ],
)
def test_yaml_that_could_mislead_is_refused(text: str, expected: str) -> None:
    found = problems(text)
    assert any(p.startswith(expected) for p in found), found


def test_merge_key_is_an_unknown_key_not_a_merge() -> None:
    found = problems("service: microblog\nenv:\n  clear:\n    <<: {A: b}\n")
    # `<<` is not a plain name, so the error says where it is rather than echoing it.
    assert any(
        p.startswith("env/clear/(key 1 of 1, its name not shown): must be a variable name") for p in found
    )


def test_size_limit() -> None:
    found = problems("service: microblog\n# " + "x" * MAX_MANIFEST_BYTES + "\n")
    assert found == ["strongroom.yml: the manifest is larger than 256 KiB"]


def test_scalars_stay_exactly_as_written() -> None:
    m = parse_manifest(
        textwrap.dedent(
            """
            service: microblog
            env:
              clear:
                ENABLED: yes
                NOTHING: ~
                VERSION: 1.10
                MODE: 0755
                WHEN: 2024-01-01
                NO: no
                EMPTY: ""
            """
        )
    )
    assert m.base.env.clear == {
        "ENABLED": "yes",
        "NOTHING": "~",
        "VERSION": "1.10",
        "MODE": "0755",
        "WHEN": "2024-01-01",
        "NO": "no",
        "EMPTY": "",
    }


def test_typed_fields_are_converted() -> None:
    m = parse_manifest("service: microblog\nproxy: {host: app.example.com, ssl: true, app_port: 3000}\n")
    assert m.base.proxy is not None and m.base.proxy.ssl is True and m.base.proxy.app_port == 3000


def test_host_forms() -> None:
    m = parse_manifest(
        textwrap.dedent(
            """
            service: microblog
            roles:
              web:
                hosts:
                  - 192.0.2.10
                  - 2001:db8::1
                  - web3.example.com
                  - host: 192.0.2.11
                    tags: [monitoring]
                  - 192.0.2.12: [monitoring, canary]
            """
        )
    )
    hosts = m.base.roles["web"].hosts
    assert [h.host for h in hosts] == [
        "192.0.2.10",
        "2001:db8::1",
        "web3.example.com",
        "192.0.2.11",
        "192.0.2.12",
    ]
    assert hosts[4].tags == ["monitoring", "canary"]


ENVIRONMENTS = """
    service: microblog
    roles:
      web:
        hosts: [192.0.2.10]
    env:
      clear:
        RAILS_ENV: production
        A: one
      secret: [SECRET_KEY_BASE]
    environments:
      staging:
        roles:
          web:
            hosts: [192.0.2.30]
        env:
          clear:
            RAILS_ENV: staging
"""


def test_environment_overrides_merge_like_kamal_destinations() -> None:
    m = parse_manifest(textwrap.dedent(ENVIRONMENTS))
    staging = m.for_environment("staging")
    assert staging.env.clear == {"RAILS_ENV": "staging", "A": "one"}  # mappings merge
    assert staging.env.secret == ["SECRET_KEY_BASE"]
    assert [h.host for h in staging.roles["web"].hosts] == ["192.0.2.30"]  # lists are replaced
    assert m.for_environment("production") is m.base


def test_override_errors_are_reported_under_the_environment() -> None:
    found = problems(
        ENVIRONMENTS
        + """
      production:
        roles:
          web:
            hosts: ["bad host"]
        project: other
        nonsense: 1
      Bad_Name: {}
"""
    )
    assert any(
        p.startswith("environments/production/roles/web/hosts/0: must be a host name or address")
        for p in found
    )
    assert any(p.startswith("environments/production/project: cannot be set per environment") for p in found)
    assert any(p.startswith("environments/production/nonsense: unknown key") for p in found)
    assert any(p.startswith("environments/Bad_Name: must be lower-case letters") for p in found)


def test_override_combining_badly_with_the_base() -> None:
    found = problems(
        """
        service: microblog
        env:
          clear: {A: x}
        environments:
          production:
            env:
              secret: [A]
        """
    )
    assert any(
        p.startswith("environments/production/env: A is both clear and secret; keep one") for p in found
    ), found


def test_base_problem_is_reported_once_not_per_environment() -> None:
    found = problems(
        """
        service: microblog
        env:
          clear: {PRICE: $5}
        environments:
          production: {image: acme/app}
          staging: {image: acme/app}
        """
    )
    assert len(found) == 1 and found[0].startswith("env/clear/PRICE"), found


def test_secret_names_collects_every_use() -> None:
    m = parse_manifest(
        textwrap.dedent(
            """
            service: microblog
            registry: {username: acme, password: REG}
            builder: {secrets: [BUILD]}
            roles:
              web:
                hosts: [{host: 192.0.2.1, tags: [t]}]
                env: {secret: [ROLE]}
            env:
              secret: [APP]
              tags:
                t: {secret: [TAGGED]}
            accessories:
              db: {image: postgres:16, host: 192.0.2.2, env: {secret: [DB]}}
            """
        )
    )
    assert m.base.secret_names() == ["APP", "BUILD", "DB", "REG", "ROLE", "TAGGED"]


def test_keys_that_are_not_plain_names_are_described_by_position() -> None:
    """Catalogue 62: a key over 64 characters, with control characters or JSON is never echoed."""
    long = "CANARY" + "x" * 80
    found = problems(
        f"""\
        service: app
        image: acme/app
        roles:
          web:
            hosts: [h1.example.com]
            "{long}": 1
        environments:
          production:
            "\\e[31m{{\\"a\\": 1}}": 1
          "{long}": {{}}
        """
    )
    text = "\n".join(found)
    assert "CANARY" not in text and "\x1b" not in text and '"a"' not in text
    assert "roles/web/(key 2 of 2, its name not shown): unknown key" in text
    assert "environments/production/(key 1 of 1, its name not shown): unknown key" in text
    assert "environments/(key 2 of 2, its name not shown): must be lower-case letters" in text


def test_health_interval_takes_a_fraction_of_a_second_and_keeps_whole_ones_whole() -> None:
    """Issue 17: a sub-second probe for `strongroom deploy`; `interval: 1` still renders as 1 for Kamal."""
    whole = parse_manifest("service: microblog\nhealthcheck: {interval: 2}\n").base.healthcheck
    assert whole is not None and whole.interval == 2 and isinstance(whole.interval, int)
    fast = parse_manifest("service: microblog\nhealthcheck: {interval: 0.25}\n").base.healthcheck
    assert fast is not None and fast.interval == 0.25
    (problem,) = problems("service: microblog\nhealthcheck: {interval: 0.05}\n")
    assert problem.startswith("healthcheck/interval: must be greater than or equal to 0.1")
