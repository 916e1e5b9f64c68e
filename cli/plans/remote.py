"""The POSIX sh scripts a deploy runs on a host, one ssh round trip each; no secret is ever in them.

Pure: functions return script text. Secrets reach the deploy script on its stdin only (the registry
password as the first line, then the env file), so they are in no argv, local or remote, and in no file
but the 0600 env file. Every value substituted into a script is validated first (names, image
references, labels) and then shell-quoted with `shlex.quote`; role options and the command become quoted
words. Scripts print machine-readable lines (`STRONGROOM-RESULT {json}`, `STRONGROOM-CONTAINER {json}`,
`STRONGROOM-PREFLIGHT {json}`) that `cli.deploy.remote` parses; those lines carry ids, names, digests and
a reason, never a value.

The deploy script, in order: umask 077; `${STRONGROOM_REMOTE_DIR:-$HOME/.strongroom}/<service>` made
0700; the password line read with `IFS= read -r` and the env file copied from stdin into a temporary
file created exclusively (`set -C`), fsynced and renamed into place; `docker login --password-stdin`
fed by the builtin printf (no process has the password in its argv) and pull, both with a throwaway
DOCKER_CONFIG (0700, in the service directory, removed right after the pull: the host's own docker
config and its stored credentials are never touched, and no registry credential is left behind); the new container started with labels, `--env-file`, the
role's options and a `--health-cmd`, without a restart policy; `docker inspect` polled until healthy,
unhealthy, exited or the timeout (without a restart policy an exit is final and its code is the
container's own), then the role's restart policy (`unless-stopped` unless its options say otherwise) set
with `docker update`. Healthy: the previous containers of the service and role are stopped and removed, the env file
becomes `<role>.env` and images of the service beyond `retain_images` are removed. Otherwise the new
container is removed, the previous one keeps running (or is started again, see `stop-first`) and the
result line says why (the last health check output or the container's last log line).

Strategy: `start-first` (the default) starts the new container next to the old one; a role that
publishes ports (`publish` in its options) cannot do that, since the port is taken, so it is deployed
`stop-first`: the old container is stopped (not removed) first and started again if the new one fails.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RESULT = "STRONGROOM-RESULT"
CONTAINER = "STRONGROOM-CONTAINER"
PREFLIGHT = "STRONGROOM-PREFLIGHT"

LABEL_SERVICE = "strongroom.service"
LABEL_ROLE = "strongroom.role"
LABEL_VERSION = "strongroom.version"
LABEL_FINGERPRINT = "strongroom.env-fingerprint"
LABEL_DEPLOY = "strongroom.deploy"

DEFAULT_RETAIN_IMAGES = 5
DEFAULT_STOP_TIMEOUT = 30
DEFAULT_HEALTH_INTERVAL = 5
DEFAULT_HEALTH_TIMEOUT = 120
DEFAULT_APP_PORT = 80
# Without any health check (neither the plan's nor the image's), the new container must stay running this
# long before it counts as up (Kamal's readiness_delay); `deploy.readiness_delay` in the plan.
DEFAULT_READINESS_DELAY = 7
DEFAULT_RESTART_POLICY = "unless-stopped"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
_DEPLOY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}$")
_FINGERPRINT = re.compile(r"^[a-z0-9-]+:[A-Za-z0-9+/=_-]{8,200}$")
_REGISTRY = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?(?:/[a-z0-9._/-]+)?$")
_USERNAME = re.compile(r"^[^\s\x00-\x1f\x7f]{1,256}$")
_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE = re.compile(
    r"^(?P<repo>(?:(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,252})(?::[0-9]{1,5})?|\[[0-9a-fA-F:]+\](?::[0-9]{1,5})?)/)?"
    + _REPO_COMPONENT
    + r"(?:/"
    + _REPO_COMPONENT
    + r")*)"
    r"(?::(?P<tag>[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}))?"
    r"(?:@(?P<digest>sha256:[0-9a-f]{64}))?$"
)
_RESTART = re.compile(r"^(?:no|always|unless-stopped|on-failure(?::[0-9]{1,4})?)$")
_OPTION = re.compile(r"^[a-z][a-z0-9-]{0,62}$")
_HEALTH_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]{0,1023}$")
# Options the script sets itself, or that would put a value on a command line (`-e KEY=VALUE`).
_RESERVED_OPTIONS = frozenset(
    {"name", "env", "e", "env-file", "label-file", "rm", "detach", "d", "interactive", "i", "tty", "t"}
)
# The health options come from the plan's healthcheck, which they would silently contradict.
_HEALTH_OPTIONS = frozenset(
    {
        "health-cmd",
        "health-interval",
        "health-timeout",
        "health-retries",
        "health-start-period",
        "no-healthcheck",
    }
)


class ScriptError(ValueError):
    """A plan value that cannot go into a remote script; the message names the field."""


def check_name(value: object, field_name: str) -> str:
    """A service or role name usable in container names, labels and file names."""
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ScriptError(
            f"{field_name} {value!r}: letters, digits, '_', '.', '-' (up to 63), not first '.-_'"
        )
    return value


def check_version(value: object, field_name: str = "version") -> str:
    """A version usable as an image tag and in a container name."""
    if not isinstance(value, str) or not _TAG.fullmatch(value):
        raise ScriptError(f"{field_name} {value!r}: an image tag (letters, digits, '_', '.', '-', up to 128)")
    return value


def check_image(value: object, field_name: str = "image") -> str:
    """An image reference (`[registry/]repo[:tag][@sha256:…]`)."""
    if not isinstance(value, str) or not _IMAGE.fullmatch(value):
        raise ScriptError(f"{field_name} {value!r}: not an image reference ([registry/]name[:tag][@digest])")
    return value


def repository(image: str) -> str:
    """The repository part of an image reference (no tag, no digest)."""
    match = _IMAGE.fullmatch(check_image(image))
    assert match is not None
    return match.group("repo")


def _scalar(value: object, field_name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ScriptError(f"{field_name}: {value!r} is not a string or number")
    text = str(value)
    if "\x00" in text:
        raise ScriptError(f"{field_name}: contains a NUL character")
    return text


def run_options(options: Mapping[str, Any] | None, *, field_name: str = "options") -> list[str]:
    """`docker run` words from a role's options: `{"network": "host", "publish": ["80:80"]}`; bools are flags."""
    words: list[str] = []
    for key, value in (options or {}).items():
        name = f"{field_name}.{key}"
        if not isinstance(key, str) or not _OPTION.fullmatch(key):
            raise ScriptError(f"{name}: not a docker run option name")
        if key in _RESERVED_OPTIONS or key in _HEALTH_OPTIONS:
            raise ScriptError(
                f"{name}: set by Strongroom itself (values go in the env file, health in healthcheck)"
            )
        values = value if isinstance(value, list | tuple) else [value]
        for item in values:
            if item is None or item is False:
                continue
            if item is True:
                words.append(f"--{key}")
                continue
            text = _scalar(item, name)
            if key == "label" and text.startswith("strongroom."):
                raise ScriptError(f"{name}: labels under strongroom. are set by Strongroom itself")
            words += [f"--{key}", text]
    return words


def command_words(cmd: object, *, field_name: str = "cmd") -> list[str]:
    """The container command as words: a list as is, a string split like a shell would (no expansion)."""
    if cmd is None or (isinstance(cmd, str | list | tuple) and not cmd):
        return []
    if isinstance(cmd, str):
        try:
            return shlex.split(cmd)
        except ValueError as exc:
            raise ScriptError(f"{field_name}: {exc}") from None
    if isinstance(cmd, list | tuple):
        return [_scalar(word, f"{field_name}[{i}]") for i, word in enumerate(cmd)]
    raise ScriptError(f"{field_name}: a string or a list of strings")


def _interval(value: object) -> float:
    """healthcheck.interval: seconds from 0.1 to 300 (a whole number stays an int)."""
    if value is None:
        return DEFAULT_HEALTH_INTERVAL
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.1 <= value <= 300:
        raise ScriptError(f"healthcheck.interval {value!r}: a number of seconds from 0.1 to 300")
    return int(value) if float(value).is_integer() else float(value)


def _seconds(value: object, field_name: str, default: int, *, low: int = 1, high: int = 3600) -> int:
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise ScriptError(f"{field_name} {value!r}: a number of seconds from {low} to {high}")
    return int(value)


# The least time one health probe may take, in seconds (kamal-proxy checks with a 5 s timeout by default).
PROBE_TIMEOUT_MIN = 5


@dataclass(frozen=True)
class Health:
    """How the new container proves it works: a shell command inside it, probed every `interval` seconds."""

    cmd: str
    interval: float  # seconds; a fraction of one probes faster than docker's whole-second default
    timeout: int  # how long the deploy waits for "healthy"
    retries: int = 3

    @property
    def poll(self) -> str:
        """Seconds between the deploy script's looks at the container: its probe interval, 0.1 to 0.5."""
        return f"{max(0.1, min(self.interval, 0.5)):g}"

    @property
    def probe_timeout(self) -> int:
        """Whole seconds one probe may take (docker's unit): the interval, at least 5 s as kamal-proxy's
        default, at most 30 s. Not the interval itself: a healthy app whose check is slow on a loaded
        host would count as failing, and three such probes would end the deploy."""
        return max(PROBE_TIMEOUT_MIN, min(math.ceil(self.interval), 30))

    def options(self) -> list[str]:
        """The `docker run` health options; docker ignores failed checks during the start period."""
        return [
            "--health-cmd",
            self.cmd,
            "--health-interval",
            f"{self.interval:g}s",
            "--health-timeout",
            f"{self.probe_timeout}s",
            "--health-retries",
            str(self.retries),
            # An app may take all of the timeout to boot: its failed checks until then do not count.
            "--health-start-period",
            f"{self.timeout}s",
        ]


def health_from_plan(check: Mapping[str, Any] | None) -> Health | None:
    """The plan's healthcheck (`cmd`, or an HTTP GET of `path` on `port` with wget or curl) as a Health."""
    if not check:
        return None
    interval = _interval(check.get("interval"))
    timeout = _seconds(check.get("timeout"), "healthcheck.timeout", DEFAULT_HEALTH_TIMEOUT)
    cmd = check.get("cmd")
    if cmd:
        if not isinstance(cmd, str) or "\x00" in cmd:
            raise ScriptError("healthcheck.cmd: a shell command line")
        return Health(cmd, interval, timeout)
    path = check.get("path") or "/up"
    if not isinstance(path, str) or not _HEALTH_PATH.fullmatch(path):
        raise ScriptError(f"healthcheck.path {path!r}: an absolute URL path")
    port = check.get("port") or DEFAULT_APP_PORT
    if isinstance(port, bool) or not isinstance(port, int) or not 0 < port < 65536:
        raise ScriptError(f"healthcheck.port {port!r}: a TCP port")
    url = shlex.quote(f"http://127.0.0.1:{port}{path}")
    probe = f"wget -q -O /dev/null {url} || curl -fsS -o /dev/null {url}"
    return Health(probe, interval, timeout)


@dataclass(frozen=True)
class DeployScript:
    """Everything the deploy script for one role on one host depends on (no secret among it)."""

    service: str
    role: str
    version: str
    image: str
    deploy_id: str
    env_fingerprint: str = ""
    registry: str | None = None
    registry_username: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    cmd: object = None
    health: Health | None = None
    retain_images: int = DEFAULT_RETAIN_IMAGES
    stop_timeout: int = DEFAULT_STOP_TIMEOUT
    readiness_delay: int = DEFAULT_READINESS_DELAY
    # Without a registry the image must already be on the host (loaded out of band): pull only if missing.
    pull: str = "always"

    def validate(self) -> None:
        """Raise ScriptError naming the first field that cannot go into the script."""
        check_name(self.service, "service")
        check_name(self.role, "role")
        check_version(self.version)
        check_image(self.image)
        check_name(container_name(self.service, self.role, self.version), "container name")
        if not isinstance(self.deploy_id, str) or not _DEPLOY_ID.fullmatch(self.deploy_id):
            raise ScriptError(f"deploy id {self.deploy_id!r}: not an id")
        if self.env_fingerprint and not _FINGERPRINT.fullmatch(self.env_fingerprint):
            raise ScriptError("env_fingerprint: not a fingerprint (scheme:base64)")
        if self.registry is not None and self.registry_username is None:
            raise ScriptError("registry.username: needed to log in to the registry")
        if self.registry is not None and not _REGISTRY.fullmatch(self.registry):
            raise ScriptError(f"registry.server {self.registry!r}: not a registry host[:port]")
        if self.registry_username is not None and not _USERNAME.fullmatch(self.registry_username):
            raise ScriptError("registry.username: no spaces or control characters, up to 256")
        if isinstance(self.retain_images, bool) or not isinstance(self.retain_images, int):
            raise ScriptError("retain_images: a whole number")
        if not 1 <= self.retain_images <= 100:
            raise ScriptError(f"retain_images {self.retain_images}: from 1 to 100")
        _seconds(self.stop_timeout, "stop_timeout", DEFAULT_STOP_TIMEOUT, low=0)
        _seconds(self.readiness_delay, "deploy.readiness_delay", DEFAULT_READINESS_DELAY, low=0, high=600)
        if self.pull not in ("always", "missing"):
            raise ScriptError(f"pull {self.pull!r}: always or missing")
        run_options(self.run_options, field_name=f"roles.{self.role}.options")
        _ = self.restart_policy
        command_words(self.cmd, field_name=f"roles.{self.role}.cmd")

    @property
    def strategy(self) -> str:
        """`stop-first` when the role publishes ports (the new container could not bind them), else `start-first`."""
        keys = set(self.options or {})
        return "stop-first" if keys & {"publish", "p", "publish-all", "P"} else "start-first"

    @property
    def restart_policy(self) -> str:
        """The role's `restart` option (docker's policy once the container is up), `unless-stopped` if unset."""
        value = (self.options or {}).get("restart")
        if value is None:
            return DEFAULT_RESTART_POLICY
        if not isinstance(value, str) or not _RESTART.fullmatch(value):
            raise ScriptError(
                f"roles.{self.role}.options.restart {value!r}: no, always, unless-stopped or on-failure[:N]"
            )
        return value

    @property
    def run_options(self) -> dict[str, Any]:
        """The role's options for `docker run`: all but `restart`, which is set once the container is up."""
        return {key: value for key, value in (self.options or {}).items() if key != "restart"}

    @property
    def wait_seconds(self) -> int:
        """How long the script waits for the new container to be up before it gives up and removes it."""
        if self.health is not None:
            return self.health.timeout
        return max(DEFAULT_HEALTH_TIMEOUT, self.readiness_delay + 10)

    @property
    def login(self) -> bool:
        """Whether the script reads a password line and logs in (to Docker Hub when there is no server)."""
        return self.registry_username is not None


def container_name(service: str, role: str, version: str) -> str:
    """`<service>-<role>-<version>`."""
    return f"{service}-{role}-{version}"


def stdin_for(script: DeployScript, env_file: bytes, registry_password: str | None) -> bytes:
    """The deploy script's stdin: the password line (when it logs in), then the env file."""
    if script.login:
        if not registry_password:
            raise ScriptError("registry_password: the bundle has none, but the plan has a registry")
        if any(ch in registry_password for ch in "\r\n\x00"):
            raise ScriptError(
                "registry_password: contains a line break or NUL, which docker login cannot take"
            )
        return registry_password.encode() + b"\n" + env_file
    if b"\x00" in env_file:
        raise ScriptError("env_file: contains a NUL byte")
    return env_file


def _assign(name: str, value: str) -> str:
    return f"{name}={shlex.quote(value)}\n"


def _words(words: Sequence[str]) -> str:
    return " ".join(shlex.quote(word) for word in words)


# Shared shell helpers: a JSON string of any text, a trimmed last line, the service dir.
# jstr escapes control characters rather than dropping them: the local side must parse the exact text
# (a value with a TAB or a line break in it is then found and masked by the redactor), and it escapes
# them the way Python's json.dumps does (\t, \n, else \u00XX), a form the redactor also knows. A shell
# string cannot hold NUL, so awk never sees one; the added newline makes a trailing one in $1 survive.
_PRELUDE = r"""
umask 077
LC_ALL=C
export LC_ALL
jstr() {
  printf '%s\n' "$1" | awk '
    BEGIN {
      for (i = 1; i < 32; i++) esc[sprintf("%c", i)] = sprintf("\\u%04x", i)
      esc["\b"] = "\\b"; esc["\t"] = "\\t"; esc["\f"] = "\\f"; esc["\r"] = "\\r"
      esc["\\"] = "\\\\"; esc["\""] = "\\\""
      printf "\""
    }
    NR > 1 { printf "\\n" }
    {
      n = length($0)
      for (i = 1; i <= n; i++) {
        c = substr($0, i, 1)
        if (c in esc) printf "%s", esc[c]; else printf "%s", c
      }
    }
    END { printf "\"" }'
}
# The whole last line, bounded only against a runaway: cutting it short here could split a value, which
# the redactor could then not recognise; the local side cuts it after masking.
lastline() {
  printf '%s\n' "$1" | sed '/^[[:space:]]*$/d' | tail -n 1 | cut -c 1-65536
}
sr_base="${STRONGROOM_REMOTE_DIR:-$HOME/.strongroom}"
sr_dir="$sr_base/$service"
# G42: the base holds every service's env files, so it is 0700 too: made so (umask 077), and the default
# one made so if it is ours (an older one may be 0755). An explicit STRONGROOM_REMOTE_DIR that already
# exists is the operator's to set: it may be shared, and only the service directories below it are ours.
sr_private_base() {
  if [ ! -d "$sr_base" ]; then
    mkdir -p "$sr_base" 2>/dev/null && chmod 700 "$sr_base"
  elif [ -z "${STRONGROOM_REMOTE_DIR:-}" ] && [ -O "$sr_base" ]; then
    chmod 700 "$sr_base"
  fi
}
"""

_DEPLOY_BODY = r"""
cid=''
moved=''
timings=''
# Seconds since the script started, per phase (GNU and busybox date know %N; elsewhere whole seconds).
sr_t0=$(date +%s.%N 2>/dev/null)
mark() {
  timings="$timings $1=$(awk -v a="$sr_t0" -v b="$(date +%s.%N 2>/dev/null)" 'BEGIN { printf "%.2f", b - a }')"
}
stopped=''
result() {
  printf '%s {"outcome":%s,"step":%s,"container":%s,"name":%s,"image":%s,"image_id":%s,"image_digest":%s,"replaced":%s,"pruned":%s,"strategy":%s,"timings":%s,"reason":%s}\n' \
    STRONGROOM-RESULT "$(jstr "$1")" "$(jstr "$2")" "$(jstr "$cid")" "$(jstr "$name")" "$(jstr "$image")" \
    "$(jstr "${image_id:-}")" "$(jstr "${image_digest:-}")" "$(jstr "${replaced:-}")" "${pruned:-0}" \
    "$(jstr "$strategy")" "$(jstr "${timings# }")" "$(jstr "$3")"
}
fail() {
  step=$1
  reason=$2
  if [ -n "$cid" ]; then
    docker rm -f "$cid" >/dev/null 2>&1
  fi
  if [ -n "$moved" ]; then
    docker rename "$moved" "$name" >/dev/null 2>&1
  fi
  for id in $stopped; do
    docker start "$id" >/dev/null 2>&1
  done
  sr_forget_login
  if [ -n "$sr_locked" ]; then
    rm -f "$sr_dir/.$role.env.$$" "$sr_dir/$role.env.next"
    rmdir "$sr_lock" 2>/dev/null
  fi
  cid=''
  result failed "$step" "$reason"
  exit 1
}

sr_locked=''
sr_lock="$sr_dir/.deploy-$role.lock"
# The registry login lives in a docker config of its own, never the host's: `docker login` there would
# replace (and a logout delete) the operator's own credential for the registry, or land in a
# shared credential store, and race with other services' deploys. Only the current context is carried
# over (and the contexts it names), so login and pull reach the same engine as every other docker call.
sr_dc=''
sr_forget_login() {
  if [ -n "$sr_dc" ]; then
    rm -rf "$sr_dc"
    sr_dc=''
  fi
}
trap 'sr_forget_login' EXIT
trap 'exit 1' HUP INT TERM
sr_private_login() {
  sr_dc="$sr_dir/.docker-$role"
  rm -rf "$sr_dc"
  mkdir -m 700 "$sr_dc" || return 1
  sr_host_dc="${DOCKER_CONFIG:-$HOME/.docker}"
  sr_ctx=$(sed -n 's/.*"currentContext"[[:space:]]*:[[:space:]]*"\([^"\\]*\)".*/\1/p' "$sr_host_dc/config.json" 2>/dev/null | head -n 1)
  if [ -n "$sr_ctx" ]; then
    printf '{"currentContext":%s}\n' "$(jstr "$sr_ctx")" > "$sr_dc/config.json" || return 1
    if [ -d "$sr_host_dc/contexts" ]; then ln -s "$sr_host_dc/contexts" "$sr_dc/contexts" || return 1; fi
  else
    printf '{}\n' > "$sr_dc/config.json" || return 1
  fi
}
{ sr_private_base && mkdir -p "$sr_dir" && chmod 700 "$sr_dir"; } 2>/dev/null || fail prepare "cannot create $sr_dir"
# One deploy of a service's role at a time on a host. A lock older than 90 minutes outlived its deploy
# (no deploy waits that long): it is taken over.
if ! mkdir "$sr_lock" 2>/dev/null; then
  if [ -n "$(find "$sr_lock" -maxdepth 0 -mmin +90 2>/dev/null)" ] && rmdir "$sr_lock" 2>/dev/null \
    && mkdir "$sr_lock" 2>/dev/null; then
    :
  else
    fail prepare "another deploy of $service ($role) is running on this host (lock $sr_lock: remove it if that deploy died)"
  fi
fi
sr_locked=1
sr_pw=''
if [ "$login" = 1 ]; then
  IFS= read -r sr_pw || fail prepare "no registry password on stdin"
fi
sr_tmp="$sr_dir/.$role.env.$$"
rm -f "$sr_tmp"
( set -C; cat > "$sr_tmp" ) || fail prepare "cannot write $sr_tmp"
chmod 600 "$sr_tmp"
sync "$sr_tmp" 2>/dev/null || sync
mv -f "$sr_tmp" "$sr_dir/$role.env.next" || fail prepare "cannot rename the env file into $sr_dir"
sr_env="$sr_dir/$role.env.next"
mark env

command -v docker >/dev/null 2>&1 || fail prepare "docker is not installed on this host"
if [ "$login" = 1 ]; then
  sr_private_login || { sr_pw=''; fail login "cannot make a private docker config in $sr_dir"; }
  out=$(printf '%s\n' "$sr_pw" | DOCKER_CONFIG="$sr_dc" docker login --username "$registry_user" --password-stdin ${registry:+"$registry"} 2>&1) \
    || { sr_pw=''; fail login "docker login to ${registry:-Docker Hub} failed: $(lastline "$out")"; }
fi
sr_pw=''
unset sr_pw
mark login
if [ "$pull" = always ] || ! docker image inspect "$image" >/dev/null 2>&1; then
  if [ -n "$sr_dc" ]; then
    out=$(DOCKER_CONFIG="$sr_dc" docker pull -q "$image" 2>&1)
  else
    out=$(docker pull -q "$image" 2>&1)
  fi
  pulled=$?
  sr_forget_login
  [ "$pulled" = 0 ] || fail pull "docker pull $image failed: $(lastline "$out")"
fi
sr_forget_login
mark pull
image_info=$(docker image inspect --format '{{.Id}}{{range .RepoDigests}} {{.}}{{end}}' "$image" 2>/dev/null)
image_id=${image_info%% *}
image_digest=''
for digest in $image_info; do
  case "$digest" in "$repo@"*) image_digest=$digest; break ;; esac
done

# One listing gives the previous containers of this service and role and whether one has the new name.
old_list=$(docker ps -a --no-trunc --filter "label=strongroom.service=$service" --filter "label=strongroom.role=$role" \
  --format '{{.ID}} {{.Names}}')
old=$(printf '%s\n' "$old_list" | cut -d ' ' -f 1)
case " $(printf '%s\n' "$old_list" | cut -d ' ' -f 2 | tr '\n' ' ') " in
  *" $name "*)
    moved="$name-replaced-$$"
    docker rename "$name" "$moved" >/dev/null 2>&1 || { moved=''; fail run "a container named $name exists and cannot be renamed"; }
    ;;
esac
if [ "$strategy" = stop-first ]; then
  for id in $old; do
    if [ "$(docker inspect --format '{{.State.Running}}' "$id" 2>/dev/null)" = true ]; then
      docker stop -t "$stop_timeout" "$id" >/dev/null 2>&1 && stopped="$stopped $id"
    fi
  done
fi
# No restart policy while it proves itself: an exit then is final, so the state and exit code read below
# are its own. (Restarted, docker resets the exit code to 0, and its "restarting" state lasts a fraction
# of a second, which a poll on a loaded host misses.) The role's policy is set once it is up.
out=$(docker run -d --name "$name" --restart no \
  --label "strongroom.service=$service" --label "strongroom.role=$role" --label "strongroom.version=$version" \
  --label "strongroom.env-fingerprint=$env_fingerprint" --label "strongroom.deploy=$deploy_id" \
  --env-file "$sr_env" @HEALTH@ @OPTIONS@ "$image" @CMD@ 2>&1) || fail run "docker run failed: $(lastline "$out")"
cid=$(printf '%s\n' "$out" | tail -n 1)
mark run

sr_run_at=$(date +%s)
deadline=$(( sr_run_at + wait_seconds ))
# Failed checks during docker's start period do not count, so "unhealthy" is final only after it.
unhealthy_from=$(( sr_run_at + start_period ))
# No health check at all: up once it has stayed running readiness_delay whole seconds (date +%s is whole
# seconds, hence the +1); without a restart policy yet, any exit before then ends it.
ready_at=$(( sr_run_at + readiness_delay ))
[ "$readiness_delay" = 0 ] || ready_at=$(( ready_at + 1 ))
while :; do
  state=$(docker inspect --format '{{.State.Status}} {{if .State.Health}}{{.State.Health.Status}}{{else}}none{{end}} {{.State.ExitCode}}' "$cid" 2>&1) \
    || fail health "the new container vanished: $(lastline "$state")"
  now=$(date +%s)
  set -- $state
  case "$1 $2" in
    "running healthy")
      break ;;
    "running none")
      [ "$now" -lt "$ready_at" ] || break ;;
    *" unhealthy")
      if [ "$now" -ge "$unhealthy_from" ]; then
        log=$(docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{println}}{{end}}{{end}}' "$cid" 2>/dev/null)
        fail health "the new container is unhealthy; last check: $(lastline "$log")"
      fi ;;
    exited*|dead*|restarting*)
      log=$(docker logs --tail 5 "$cid" 2>&1)
      fail health "the new container exited with code $3; last log line: $(lastline "$log")" ;;
  esac
  if [ "$now" -ge "$deadline" ]; then
    log=$(docker inspect --format '{{if .State.Health}}{{range .State.Health.Log}}{{.Output}}{{println}}{{end}}{{end}}' "$cid" 2>/dev/null)
    # With a check, the start period lasts the whole wait: docker still says "starting", but no check passed.
    case "$2" in
      starting|unhealthy) verdict="unhealthy: no health check passed within ${wait_seconds}s" ;;
      *) verdict="not healthy after ${wait_seconds}s ($1 $2)" ;;
    esac
    fail health "the new container is $verdict; last check: $(lastline "$log")"
  fi
  sleep "$poll" 2>/dev/null || sleep 1
done
# From here docker restarts it by the role's policy. An exit since the last poll left it exited: not up.
docker update --restart "$restart_policy" "$cid" >/dev/null 2>&1 \
  || fail health "cannot set the restart policy $restart_policy on the new container"
state=$(docker inspect --format '{{.State.Status}} {{.State.ExitCode}}' "$cid" 2>&1) \
  || fail health "the new container vanished: $(lastline "$state")"
set -- $state
case "$1" in
  exited|dead)
    log=$(docker logs --tail 5 "$cid" 2>&1)
    fail health "the new container exited with code $2; last log line: $(lastline "$log")" ;;
esac

mark healthy
replaced=''
for id in $old; do
  [ "$id" = "$cid" ] && continue
  docker stop -t "$stop_timeout" "$id" >/dev/null 2>&1
  docker rm -f "$id" >/dev/null 2>&1 && replaced="$replaced $id"
done
replaced=${replaced# }
mv -f "$sr_env" "$sr_dir/$role.env"
pruned=$(docker image ls --format '{{.ID}} {{.Repository}}:{{.Tag}}' "$repo" 2>/dev/null | {
  n=0
  gone=0
  while read -r iid ref; do
    # The running image is one of the retained whatever its place in the list (images created in the
    # same second come in either order): keep it, then the newest retain_images - 1 of the others.
    case "$image_id" in *"$iid"*) continue ;; esac
    n=$((n + 1))
    [ "$n" -lt "$retain_images" ] && continue
    case "$ref" in *:'<none>') ref=$iid ;; esac
    docker rmi "$ref" >/dev/null 2>&1 && gone=$((gone + 1))
  done
  echo "$gone"
})
rmdir "$sr_lock" 2>/dev/null
mark done
result deployed done ''
"""


def deploy(script: DeployScript) -> str:
    """The script that writes the env file, logs in, pulls, starts, waits for health and cleans up."""
    script.validate()
    header = "".join(
        (
            _assign("service", script.service),
            _assign("role", script.role),
            _assign("version", script.version),
            _assign("image", script.image),
            _assign("repo", repository(script.image)),
            _assign("name", container_name(script.service, script.role, script.version)),
            _assign("deploy_id", script.deploy_id),
            _assign("env_fingerprint", script.env_fingerprint),
            _assign("registry", script.registry or ""),
            _assign("registry_user", script.registry_username or ""),
            _assign("login", "1" if script.login else "0"),
            _assign("pull", script.pull),
            _assign("strategy", script.strategy),
            _assign("retain_images", str(script.retain_images)),
            _assign("stop_timeout", str(script.stop_timeout)),
            # Without a plan health check an image's own HEALTHCHECK may still report "starting" for a while.
            _assign("wait_seconds", str(script.wait_seconds)),
            _assign("start_period", str(script.health.timeout if script.health else 0)),
            _assign("readiness_delay", str(script.readiness_delay)),
            _assign("poll", script.health.poll if script.health else "0.5"),
            _assign("restart_policy", script.restart_policy),
        )
    )
    body = (
        _DEPLOY_BODY.replace("@HEALTH@", _words(script.health.options()) if script.health else "")
        .replace(
            "@OPTIONS@", _words(run_options(script.run_options, field_name=f"roles.{script.role}.options"))
        )
        .replace("@CMD@", _words(command_words(script.cmd, field_name=f"roles.{script.role}.cmd")))
    )
    return header + _PRELUDE + body


def preflight() -> str:
    """Checks the host can deploy: docker reachable, the remote directory writable; prints one PREFLIGHT line."""
    return (
        _assign("service", "preflight")
        + _PRELUDE
        + r"""
docker_version=''
problem=''
if ! command -v docker >/dev/null 2>&1; then
  problem='docker is not installed on this host'
elif ! docker_version=$(docker version --format '{{.Server.Version}}' 2>&1); then
  problem="the docker engine does not answer: $(lastline "$docker_version")"
  docker_version=''
fi
if ! sr_private_base 2>/dev/null || [ ! -w "$sr_base" ]; then
  problem="${problem:+$problem; }cannot write $sr_base"
fi
printf '%s {"docker":%s,"user":%s,"remote_dir":%s,"problem":%s}\n' STRONGROOM-PREFLIGHT \
  "$(jstr "$docker_version")" "$(jstr "$(id -un 2>/dev/null)")" "$(jstr "$sr_base")" "$(jstr "$problem")"
"""
    )


_INSPECT_FORMAT = (
    '{"id":{{json .Id}},"name":{{json .Name}},"status":{{json .State.Status}},'
    '"health":{{if .State.Health}}{{json .State.Health.Status}}{{else}}null{{end}},'
    '"image":{{json .Config.Image}},"image_id":{{json .Image}},"created":{{json .Created}},'
    '"started_at":{{json .State.StartedAt}},"labels":{{json .Config.Labels}}}'
)


def _filters(role: str | None) -> str:
    words = '--filter "label=strongroom.service=$service"'
    if role is not None:
        words += ' --filter "label=strongroom.role=$role"'
    return words


def status(service: str, role: str | None = None) -> str:
    """Lists the containers of the service (and role) with version, image, digests and env fingerprint labels.

    One `STRONGROOM-CONTAINER {"container": {...}, "repo_digests": [...]}` line per container. Only
    chosen fields are printed: `docker inspect` in full would include the container's environment.
    """
    check_name(service, "service")
    header = _assign("service", service) + (_assign("role", check_name(role, "role")) if role else "")
    return (
        header
        + _PRELUDE
        + _assign("fmt", _INSPECT_FORMAT)
        + f"""
command -v docker >/dev/null 2>&1 || {{ echo 'docker is not installed on this host' >&2; exit 3; }}
ids=$(docker ps -a -q --no-trunc {_filters(role)}) || exit 3
for id in $ids; do
  info=$(docker inspect --format "$fmt" "$id" 2>/dev/null) || continue
  img=$(docker inspect --format '{{{{.Image}}}}' "$id" 2>/dev/null)
  digests=$(docker image inspect --format '{{{{json .RepoDigests}}}}' "$img" 2>/dev/null) || digests=null
  [ -n "$digests" ] || digests=null
  printf '%s {{"container":%s,"repo_digests":%s}}\\n' STRONGROOM-CONTAINER "$info" "$digests"
done
"""
    )


def _running(role: str | None) -> str:
    # The newest running container of the service (and role): the one `app exec/logs` mean.
    return f"cid=$(docker ps -q --no-trunc {_filters(role)} --filter status=running | head -n 1)\n"


def logs(service: str, role: str | None = None, *, tail: int | None = 100, since: str | None = None) -> str:
    """`docker logs` of the running container of the service (and role)."""
    check_name(service, "service")
    words = ["--timestamps"]
    if tail is not None:
        if isinstance(tail, bool) or not isinstance(tail, int) or tail < 0:
            raise ScriptError(f"tail {tail!r}: a whole number")
        words += ["--tail", str(tail)]
    if since is not None:
        if not re.fullmatch(r"[0-9A-Za-z:.+-]{1,40}", since):
            raise ScriptError(f"since {since!r}: a duration (10m) or timestamp")
        words += ["--since", since]
    return _app(service, role, f'docker logs {_words(words)} "$cid"\n')


def exec_running(service: str, role: str | None, argv: Sequence[str], *, interactive: bool = False) -> str:
    """`docker exec` of `argv` in the running container of the service (and role)."""
    check_name(service, "service")
    if not argv:
        raise ScriptError("exec: a command is needed")
    flags = "-i " if interactive else ""
    return _app(service, role, f'exec docker exec {flags}"$cid" {_words(command_words(list(argv)))}\n')


def exec_new(
    service: str,
    role: str,
    argv: Sequence[str],
    *,
    options: Mapping[str, Any] | None = None,
    interactive: bool = False,
    entrypoint: str | None = None,
) -> str:
    """`docker run --rm --env-file <the deployed env file>` of the running container's image (Kamal #1180)."""
    check_name(service, "service")
    check_name(role, "role")
    if not argv:
        raise ScriptError("exec: a command is needed")
    flags = "-i " if interactive else ""
    if entrypoint is not None:
        flags += f"--entrypoint {shlex.quote(_scalar(entrypoint, 'entrypoint'))} "
    body = (
        f'[ -f "$sr_dir/$role.env" ] || {{ echo "no deployed env file for $service/$role on this host" >&2; exit 3; }}\n'
        "img=$(docker inspect --format '{{.Config.Image}}' \"$cid\")\n"
        f'exec docker run --rm {flags}--env-file "$sr_dir/$role.env" '
        f'{_words(run_options(options, field_name=f"roles.{role}.options"))} "$img" '
        f"{_words(command_words(list(argv)))}\n"
    )
    return _app(service, role, body)


def stop(service: str, role: str | None = None, *, stop_timeout: int = DEFAULT_STOP_TIMEOUT) -> str:
    """Stops the running containers of the service (and role)."""
    check_name(service, "service")
    _seconds(stop_timeout, "stop_timeout", DEFAULT_STOP_TIMEOUT, low=0)
    return _each(service, role, f'docker stop -t {int(stop_timeout)} "$id"', running=True)


def start(service: str, role: str | None = None) -> str:
    """Starts the newest stopped container of the service (and role)."""
    check_name(service, "service")
    header = _assign("service", service) + (_assign("role", check_name(role, "role")) if role else "")
    return (
        header
        + _PRELUDE
        + f"""
cid=$(docker ps -a -q --no-trunc {_filters(role)} | head -n 1)
[ -n "$cid" ] || {{ echo "no container of $service on this host" >&2; exit 3; }}
docker start "$cid" >/dev/null && printf '%s {{"outcome":"started","container":%s}}\\n' STRONGROOM-RESULT "$(jstr "$cid")"
"""
    )


def remove(service: str, role: str | None = None) -> str:
    """Removes every container of the service (and role) and the env files Strongroom wrote for it."""
    check_name(service, "service")
    files = '"$sr_dir/$role.env" "$sr_dir/$role.env.next"' if role else '"$sr_dir"'
    return _each(service, role, 'docker rm -f "$id"', running=False, after=f"rm -rf {files}\n")


def _app(service: str, role: str | None, body: str) -> str:
    header = _assign("service", service) + (_assign("role", check_name(role, "role")) if role else "")
    return (
        header
        + _PRELUDE
        + _running(role)
        + '[ -n "$cid" ] || { echo "no running container of $service on this host" >&2; exit 3; }\n'
        + body
    )


def _each(service: str, role: str | None, action: str, *, running: bool, after: str = "") -> str:
    header = _assign("service", service) + (_assign("role", check_name(role, "role")) if role else "")
    which = " --filter status=running" if running else " -a"
    return (
        header
        + _PRELUDE
        + f"""
done_ids=''
for id in $(docker ps -q --no-trunc{which} {_filters(role)}); do
  {action} >/dev/null && done_ids="$done_ids $id"
done
{after}printf '%s {{"outcome":"done","containers":%s}}\\n' STRONGROOM-RESULT "$(jstr "${{done_ids# }}")"
"""
    )
