"""Profiles: several brokers and identities in one config file, each with its own 0600 session cache.

The broker is a stand-in (tests/unit/cli/standin_broker.py) used only for CLI unit tests; end-to-end tests
against the real broker live in tests/e2e.
"""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
from cli_test_support import CLIENT_ID, Invoke, canary
from standin_broker import StandinBroker

from cli import profiles
from cli.credentials import Credential
from cli.errors import CliError


@pytest.fixture
def config_file(isolated_home: Path) -> Path:
    return isolated_home / "strongroom" / "config.toml"


@pytest.fixture
def other(client_secret: str) -> StandinBroker:
    """A second broker with the same identity and a project `blog`."""
    standin = StandinBroker()
    standin.add_client(CLIENT_ID, client_secret, name="alice-at-work")
    standin.add_project("blog")
    standin.add_environment("blog", "production")
    standin.start()
    yield standin  # type: ignore[misc]
    standin.stop()


def write_config(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_a_named_profile_has_its_own_0600_cache_and_is_recorded_in_the_config_file(
    broker: StandinBroker, other: StandinBroker, cli: Invoke, secret_file: Path, config_file: Path
) -> None:
    assert (
        cli(
            "login", "--url", broker.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file)
        ).exit_code
        == 0
    )
    result = cli(
        "--profile",
        "work",
        "login",
        "--url",
        other.url,
        "--client-id",
        CLIENT_ID,
        "--secret-file",
        str(secret_file),
    )

    assert result.exit_code == 0, result.output
    directory = config_file.parent
    for name in ("credentials.json", "credentials.work.json", "config.toml"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    assert json.loads((directory / "credentials.work.json").read_text())["url"] == other.url
    assert json.loads((directory / "credentials.json").read_text())["url"] == broker.url
    # Only the named profile is written to the file (the default one needs no file).
    assert config_file.read_text() == f'[profiles.work]\nurl = "{other.url}"\nclient_id = "{CLIENT_ID}"\n'
    # Each profile talks to its own broker with its own token.
    assert cli("--profile", "work", "projects", "list").stdout.split()[3] == "blog"
    assert "shop" in cli("projects", "list").stdout
    assert cli("projects", "list", env={"STRONGROOM_PROFILE": "work"}).stdout.split()[3] == "blog"


def test_login_again_needs_neither_url_nor_client_id(
    broker: StandinBroker, other: StandinBroker, cli: Invoke, secret_file: Path
) -> None:
    args = ("--url", other.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file))
    assert cli("--profile", "work", "login", *args).exit_code == 0
    assert (
        cli(
            "login", "--url", broker.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file)
        ).exit_code
        == 0
    )
    other.requests.clear()
    broker.requests.clear()

    work = cli("--profile", "work", "login", "--secret-file", str(secret_file))
    default = cli("login", "--secret-file", str(secret_file))  # from the cached session: no config file

    assert work.exit_code == 0, work.output
    assert default.exit_code == 0, default.output
    assert len(other.calls("POST", "/v1/auth/token")) == 1
    assert len(broker.calls("POST", "/v1/auth/token")) == 1


def test_the_config_file_gives_url_project_and_default_profile(
    other: StandinBroker, cli: Invoke, secret_file: Path, config_file: Path
) -> None:
    write_config(
        config_file,
        f'# my brokers\ndefault_profile = "work"\n\n[profiles.work]\nurl = "{other.url}"\n'
        f'client_id = "{CLIENT_ID}"\nproject = "blog"\n',
    )

    assert cli("login", "--secret-file", str(secret_file)).exit_code == 0
    result = cli("envs", "list")

    assert result.exit_code == 0, result.output
    assert other.calls("GET")[0].target == "/v1/projects/blog/environments"
    assert (config_file.parent / "credentials.work.json").exists()
    assert config_file.read_text().startswith("# my brokers\n")  # the file is left as it was


def test_strongroom_url_overrides_the_profile_and_the_cached_token_is_not_sent_elsewhere(
    broker: StandinBroker, other: StandinBroker, cli: Invoke, logged_in: Credential
) -> None:
    result = cli("projects", "list", env={"STRONGROOM_URL": other.url})

    assert result.exit_code == 1
    assert f"the cached session is for {broker.url}, not {other.url}" in result.stderr
    assert other.calls() == []


def test_strongroom_token_with_a_profile_url_needs_no_login(
    other: StandinBroker, cli: Invoke, config_file: Path
) -> None:
    write_config(config_file, f'[profiles.ci]\nurl = "{other.url}"\n')
    token = other.issue(CLIENT_ID)

    result = cli("--profile", "ci", "projects", "list", env={"STRONGROOM_TOKEN": token})

    assert result.exit_code == 0, result.output
    assert other.calls()[0].authorization == f"Bearer {token}"


def test_login_to_another_url_than_the_profiles_is_a_usage_error(
    broker: StandinBroker, other: StandinBroker, cli: Invoke, secret_file: Path, config_file: Path
) -> None:
    write_config(config_file, f'[profiles.work]\nurl = "{other.url}"\n')

    result = cli(
        "--profile",
        "work",
        "login",
        "--url",
        broker.url,
        "--client-id",
        CLIENT_ID,
        "--secret-file",
        str(secret_file),
    )

    assert result.exit_code == 2
    assert result.stderr == (
        f"Error: profile work is for {other.url}, not {broker.url}: pick another --profile or edit {config_file}\n"
    )
    assert broker.calls() == []


def test_login_without_any_client_id_is_a_usage_error_before_reading_the_secret(
    broker: StandinBroker, cli: Invoke
) -> None:
    secret = canary()

    result = cli("login", "--url", broker.url, input=secret)

    assert result.exit_code == 2
    assert result.stderr == "Error: no client ID: pass --client-id\n"
    assert secret not in result.output


def test_a_profile_nobody_logged_in_to_says_how_to(cli: Invoke) -> None:
    result = cli("--profile", "staging", "projects", "list")

    assert result.exit_code == 1
    assert result.stderr == (
        "Error: not logged in: run strongroom --profile staging login --url URL --client-id ID\n"
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("url = 3\n", "url: unknown key (known: default_profile, profiles)"),
        (
            "[profiles.work]\nurll = 'x'\n",
            "profiles.work.urll: unknown key (known: url, client_id, project, ca_file, insecure)",
        ),
        ("[profiles.work]\ninsecure = 'yes'\n", "profiles.work.insecure: must be true or false"),
        ("[profiles.Work]\n", "profiles.Work: the profile name must be lower-case"),
        ("default_profile = '../x'\n", "default_profile: must be lower-case"),
        ("[profiles\n", "is not valid TOML"),
    ],
)
def test_a_broken_config_file_is_one_sentence_naming_the_key(
    cli: Invoke, config_file: Path, text: str, message: str
) -> None:
    write_config(config_file, text)

    result = cli("projects", "list")

    assert result.exit_code == 1
    assert result.stderr.startswith("Error: ")
    assert message in result.stderr
    assert result.stderr.count("\n") == 1


def test_an_invalid_profile_name_is_a_usage_error(cli: Invoke) -> None:
    result = cli("--profile", "../../etc", "projects", "list")

    assert result.exit_code == 2
    assert "the profile name '../../etc' must be lower-case" in result.stderr


def test_profiles_list_and_use(
    broker: StandinBroker,
    other: StandinBroker,
    cli: Invoke,
    secret_file: Path,
    config_file: Path,
    clock: list[float],
) -> None:
    args = ("--url", other.url, "--client-id", CLIENT_ID, "--secret-file", str(secret_file))
    assert cli("--profile", "work", "login", *args).exit_code == 0
    write_config(config_file, "# keep me\n" + config_file.read_text())

    listed = cli("profiles", "list")
    used = cli("profiles", "use", "work")
    after = cli("profiles", "list", "--json")

    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert lines[1].split()[:2] == ["*", "default"] and "not logged in" in lines[1]
    assert lines[2].split()[0] == "work" and "logged in as alice-at-work, 15 minutes left" in lines[2]
    assert used.exit_code == 0 and used.stdout == "The default profile is now work.\n"
    assert config_file.read_text().startswith('default_profile = "work"\n\n# keep me\n')
    data = json.loads(after.stdout)
    assert [p["name"] for p in data["profiles"] if p["selected"]] == ["work"]
    assert cli("profiles", "use", "default").exit_code == 0
    assert config_file.read_text().startswith('default_profile = "default"\n\n# keep me\n')
    missing = cli("profiles", "use", "nope")
    assert missing.exit_code == 2 and "no profile nope in" in missing.stderr


def test_toml_strings_are_escaped_when_written(tmp_path: Path) -> None:
    config = profiles.Config(path=tmp_path / "config.toml", exists=False, private_dir=False)
    profiles.add_profile(config, profiles.Profile(name="odd", url='https://h/"\\\x7f', client_id="a\nb"))

    loaded = profiles.load({"STRONGROOM_CONFIG": str(config.path)})

    assert loaded.profiles["odd"].url == 'https://h/"\\\x7f'
    assert loaded.profiles["odd"].client_id == "a\nb"


def test_selected_profile_order() -> None:
    config = profiles.Config(path=Path("x"), exists=True, default_profile="work")
    assert profiles.selected("ci", config) == "ci"
    assert profiles.selected(None, config) == "work"
    assert profiles.selected(None, profiles.Config(path=Path("x"), exists=False)) == "default"
    with pytest.raises(CliError):
        profiles.selected("A B", config)
