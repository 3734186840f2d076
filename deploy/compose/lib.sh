# shellcheck shell=bash disable=SC2034 # sourced: the scripts use these names
# Shared by deploy/compose/{up,load,check,down,smoke}; sourced, not run.
#
# Settings (environment variables; `up` records the ones it used in
# deploy/compose/.env, which the other scripts and compose then read, an
# explicitly set variable still winning):
#   VELOX_IMAGE         validator image                 localhost/velox:latest
#   VELOX_NET_PREFIX    first three octets of the testnet network   10.89.200
#   VELOX_PUBLISH_ADDR  host address the ports are published on     127.0.0.1
#   VELOX_CHAIN_ID      the testnet's chain id                      1337
#   VELOX_ACCOUNTS      funded development accounts                 1000
#   PROMETHEUS_IMAGE, GRAFANA_IMAGE   see compose.yaml
#   ENGINE              podman or docker                 podman if installed
#   VELOX_COMPOSE       the compose command              found (see compose_cmd)

COMPOSE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_DIR="$(cd "$COMPOSE_DIR/../.." && pwd)"
TESTNET_DIR="$COMPOSE_DIR/testnet"
ENV_FILE="$COMPOSE_DIR/.env"
COMPOSE_FILE="$COMPOSE_DIR/compose.yaml"
# compose.yaml's `name:` and its network's `name:`.
PROJECT=velox-testnet
NETWORK=velox-testnet
# The services validator0..validator3 of compose.yaml.
VALIDATORS=4
# The image's user (deploy/Dockerfile); it owns each validator's directory.
VELOX_UID=10001
# Ports inside each validator's container (the defaults of
# `velox node --print-default-config`), and where compose.yaml publishes
# validator i's on the host: ingress 7100+i/udp, API 7180+i/tcp.
INGRESS_PORT=7100
API_PORT=7180
PEER_PORT=7200
PROMETHEUS_PORT=9090
GRAFANA_PORT=3000
# The compose file pins podman-compose to at least this version: 1.0.3
# (Debian 12) ignores ipv4_address and ipam and always adds a bridge network.
PODMAN_COMPOSE_MIN=1.0.6

say() { echo "${SCRIPT_NAME:-compose}: $*" >&2; }
die() { echo "${SCRIPT_NAME:-compose}: error: $*" >&2; exit 1; }

# Reads .env: each KEY=VALUE sets KEY unless the environment already has it.
load_env_file() {
  [ -f "$ENV_FILE" ] || return 0
  local line key
  while IFS= read -r line || [ -n "$line" ]; do
    case "$line" in ''|'#'*) continue ;; esac
    key="${line%%=*}"
    [ -n "${!key+x}" ] || export "${key}=${line#*=}"
  done <"$ENV_FILE"
}
load_env_file

: "${VELOX_IMAGE:=localhost/velox:latest}"
: "${VELOX_NET_PREFIX:=10.89.200}"
: "${VELOX_PUBLISH_ADDR:=127.0.0.1}"
: "${VELOX_CHAIN_ID:=1337}"
: "${VELOX_ACCOUNTS:=1000}"
: "${PROMETHEUS_IMAGE:=docker.io/prom/prometheus:v2.53.2}"
: "${GRAFANA_IMAGE:=docker.io/grafana/grafana:10.4.5}"
export VELOX_IMAGE VELOX_NET_PREFIX VELOX_PUBLISH_ADDR VELOX_CHAIN_ID VELOX_ACCOUNTS PROMETHEUS_IMAGE GRAFANA_IMAGE

if [ -z "${ENGINE:-}" ]; then
  if command -v podman >/dev/null; then ENGINE=podman
  elif command -v docker >/dev/null; then ENGINE=docker
  else ENGINE=""
  fi
fi

need_engine() {
  if [ -z "$ENGINE" ] || ! command -v "$ENGINE" >/dev/null; then
    die "no container engine: install podman (apt-get install podman; see docs/deploy.md) or docker"
  fi
}

# Validator i's address on the testnet network, and its API and ingress as
# published on the host.
validator_ip() { echo "$VELOX_NET_PREFIX.$((10 + $1))"; }
api_addr() { echo "$VELOX_PUBLISH_ADDR:$((API_PORT + $1))"; }

# True if `a` >= `b` for dotted versions.
version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -1)" = "$2" ]; }

# Sets the array COMPOSE to the compose command: $VELOX_COMPOSE; for podman,
# the first podman-compose >= PODMAN_COMPOSE_MIN on PATH or in
# /opt/podman-compose (where deploy/setup-host installs it); for docker,
# `docker compose`.
compose_cmd() {
  if [ -n "${VELOX_COMPOSE:-}" ]; then
    read -r -a COMPOSE <<<"$VELOX_COMPOSE"
    return 0
  fi
  if [ "$ENGINE" = docker ]; then
    COMPOSE=(docker compose)
    return 0
  fi
  local c v seen=""
  for c in "$(command -v podman-compose || true)" /opt/podman-compose/bin/podman-compose; do
    if [ -z "$c" ] || [ ! -x "$c" ]; then continue; fi
    v="$("$c" version 2>/dev/null | sed -n 's/^podman-composer\{0,1\} version:\{0,1\} *\([0-9][0-9.]*\).*/\1/p' | head -1 || true)"
    if [ -n "$v" ] && version_ge "$v" "$PODMAN_COMPOSE_MIN"; then
      COMPOSE=("$c")
      return 0
    fi
    seen="$seen $c (${v:-version unknown})"
  done
  die "podman-compose >= $PODMAN_COMPOSE_MIN is needed (found:${seen:- none}); Debian 12's 1.0.3 cannot give containers fixed addresses. Install one: deploy/setup-host, or python3 -m venv /opt/podman-compose && /opt/podman-compose/bin/pip install podman-compose==$PODMAN_COMPOSE_MIN"
}

compose() { "${COMPOSE[@]}" -f "$COMPOSE_FILE" "$@"; }

image_present() {
  if [ "$ENGINE" = podman ]; then podman image exists "$1"
  else docker image inspect "$1" >/dev/null 2>&1
  fi
}

# Runs the validator image once with the given arguments (the velox CLI).
velox_run() { "$ENGINE" run --rm "$@"; }

# GET http://ADDR/PATH; prints the body, fails on an error or non-2xx answer.
http_get() { curl -fsS --max-time 5 "http://$1$2"; }

# Prints field $2 of the JSON object on stdin ('' if absent).
json_field() {
  python3 -c 'import json, sys
v = json.load(sys.stdin).get(sys.argv[1], "")
print("true" if v is True else "false" if v is False else v)' "$1"
}

# Validator i's commit index (0 if it does not answer).
commit_index() {
  local v
  v="$(http_get "$(api_addr "$1")" /status 2>/dev/null | json_field commit_index 2>/dev/null)" || v=0
  [[ "$v" =~ ^[0-9]+$ ]] || v=0
  echo "$v"
}

# Hints for the two failures this project met when podman first ran on a
# host (docs/deploy.md, "This machine"): the OCI runtime refusing its
# cgroups, and runc refused to set podman's default rlimits.
engine_hint() {
  case "$1" in
    *"setting rlimit"*|*"rlimit type"*)
      say "hint: the runtime may not raise these limits here; set default_ulimits in /etc/containers/containers.conf (docs/deploy.md, \"This machine\")" ;;
    *cgroup*|*crun*)
      say "hint: try runtime = \"runc\" under [engine] in /etc/containers/containers.conf (apt-get install runc; docs/deploy.md)" ;;
  esac
}

# Checks that a container can start at all, with a hint when it cannot.
probe_engine() {
  local out
  if ! out="$("$ENGINE" run --rm --entrypoint /usr/local/bin/velox "$VELOX_IMAGE" --version 2>&1)"; then
    echo "$out" >&2
    engine_hint "$out"
    die "$ENGINE cannot run a container of $VELOX_IMAGE"
  fi
}
