# shellcheck shell=bash
# Shared helpers for the `sam local` scripts in this directory. Source it; do not run it.
#
# Nothing here talks to anything but this machine: loopback, the local Docker engine, and the
# host's Docker bridge address (through which SAM's containers reach moto).

SAM_LOCAL_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SAM_LOCAL_DIR/../.." && pwd)"

# The image SAM builds its emulator image FROM for `provided.al2023` on x86_64. Nothing can be pulled
# here, so build-base-image.sh makes one locally under this tag.
BASE_IMAGE_TAG="${MIMIRY_SAM_BASE_IMAGE:-public.ecr.aws/lambda/provided:al2023-x86_64}"
# What SAM tags its own image (base + runtime interface emulator) as; stale once the base changes.
RAPID_IMAGE_TAG="${BASE_IMAGE_TAG%:*}:al2023-rapid-x86_64"

# No SAM CLI telemetry, ever.
export SAM_CLI_TELEMETRY=0

# shellcheck source=../apt.sh
source "$SAM_LOCAL_DIR/../apt.sh"

log() { printf '[sam-local %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

# SAM CLI checks PyPI for a newer version after most commands (start-api, build, validate, ...) once a
# week, whatever SAM_CLI_TELEMETRY says. Give SAM its own config directory whose last check lies in
# the future, so that it never looks. `__SAM_CLI_APP_DIR` is SAM's own override of ~/.aws-sam.
sam_offline_config() {
    local dir="$1"
    mkdir -p "$dir"
    cat >"$dir/metadata.json" <<'EOF'
{
    "telemetryEnabled": false,
    "lastVersionCheck": 32503680000.0
}
EOF
    export __SAM_CLI_APP_DIR="$dir"
}

# Put the repo's virtualenv on PATH (sam, cargo-lambda, zig via ziglang, moto_server). On a machine
# where it is missing, run the project's setup script if there is one.
ensure_python_tools() {
    if [[ ! -x "$REPO_ROOT/.venv/bin/sam" && -x "$REPO_ROOT/infra/setup.sh" ]]; then
        log "no .venv yet: running infra/setup.sh"
        timeout 1800 "$REPO_ROOT/infra/setup.sh" || die "infra/setup.sh failed"
    fi
    if [[ -d "$REPO_ROOT/.venv/bin" ]]; then
        export PATH="$REPO_ROOT/.venv/bin:$PATH"
    fi
    local tool missing=()
    for tool in sam cargo-lambda moto_server python3 cargo; do
        command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
    done
    if ((${#missing[@]})); then
        die "missing on PATH: ${missing[*]} (pip install 'moto[server]' aws-sam-cli cargo-lambda ziglang into $REPO_ROOT/.venv; cargo from rustup)"
    fi
    python3 -c 'import ziglang' 2>/dev/null || command -v zig >/dev/null 2>&1 ||
        die "zig not found (pip install ziglang into $REPO_ROOT/.venv)"
}

busybox_is_static() {
    local bb
    bb="$(command -v busybox 2>/dev/null)" || return 1
    local out
    out="$(LC_ALL=C ldd "$bb" 2>&1 || true)"
    [[ "$out" == *"not a dynamic executable"* ]]
}

# Debian packages the scripts need: the Docker engine (Debian's docker.io), a static busybox for the
# base image, curl for the checks, CA certificates for the base image, ssh-keygen for the smoke
# test's SSH key.
ensure_debian_packages() {
    local pkgs=()
    command -v dockerd >/dev/null 2>&1 || pkgs+=(docker.io)
    command -v docker >/dev/null 2>&1 || pkgs+=(docker.io)
    busybox_is_static || pkgs+=(busybox-static)
    command -v curl >/dev/null 2>&1 || pkgs+=(curl)
    [[ -f /etc/ssl/certs/ca-certificates.crt ]] || pkgs+=(ca-certificates)
    command -v ssh-keygen >/dev/null 2>&1 || pkgs+=(openssh-client)
    apt_install "${pkgs[@]}" || die "could not install ${pkgs[*]}"
}

docker_answers() { timeout 10 docker info >/dev/null 2>&1; }

# Start dockerd in the background if no engine answers. Sets STARTED_DOCKERD_PID when it started one.
# No iptables rules and no IP forwarding: SAM's containers can reach this host's bridge address and
# nothing beyond it.
STARTED_DOCKERD_PID=""
ensure_dockerd() {
    local work="$1"
    docker_answers && return 0
    [[ -z "${DOCKER_HOST:-}" ]] || die "DOCKER_HOST=$DOCKER_HOST does not answer"
    [[ "$(id -u)" == 0 ]] || die "no Docker engine answers, and starting dockerd needs root"
    log "starting dockerd (log: $work/dockerd.log)"
    dockerd --iptables=false --ip-forward=false --pidfile "$work/dockerd.pid" \
        >"$work/dockerd.log" 2>&1 &
    STARTED_DOCKERD_PID=$!
    local i
    for ((i = 0; i < 60; i++)); do
        docker_answers && return 0
        kill -0 "$STARTED_DOCKERD_PID" 2>/dev/null || { tail -20 "$work/dockerd.log" >&2; die "dockerd exited"; }
        sleep 1
    done
    tail -20 "$work/dockerd.log" >&2
    die "dockerd did not answer within 60 s"
}

stop_started_dockerd() {
    [[ -n "$STARTED_DOCKERD_PID" ]] || return 0
    log "stopping the dockerd this script started (pid $STARTED_DOCKERD_PID)"
    kill -TERM "$STARTED_DOCKERD_PID" 2>/dev/null || true
    wait_pid_gone "$STARTED_DOCKERD_PID" 30 || kill -KILL "$STARTED_DOCKERD_PID" 2>/dev/null || true
    STARTED_DOCKERD_PID=""
}

# wait_pid_gone PID SECONDS: true once PID has exited.
wait_pid_gone() {
    local pid="$1" secs="$2" i
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    return 1
}

# The host's address on Docker's default bridge (docker0): what SAM's containers use to reach moto.
bridge_ip() {
    local ifname
    ifname="$(timeout 30 docker network inspect bridge --format '{{index .Options "com.docker.network.bridge.name"}}' 2>/dev/null)"
    ifname="${ifname:-docker0}"
    python3 - "$ifname" <<'EOF'
import fcntl, socket, struct, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
SIOCGIFADDR = 0x8915
addr = fcntl.ioctl(s.fileno(), SIOCGIFADDR, struct.pack("256s", sys.argv[1].encode()[:15]))
print(socket.inet_ntoa(addr[20:24]))
EOF
}

# free_port HOST: a TCP port nobody listens on at HOST right now.
free_port() {
    python3 - "$1" <<'EOF'
import socket, sys
s = socket.socket()
s.bind((sys.argv[1], 0))
print(s.getsockname()[1])
s.close()
EOF
}

# wait_http URL SECONDS [PID]: true once URL answers any HTTP status; false on timeout or if PID exits.
wait_http() {
    local url="$1" secs="$2" pid="${3:-}" deadline=$((SECONDS + $2))
    while ((SECONDS < deadline)); do
        curl -s -o /dev/null --max-time 2 "$url" && return 0
        if [[ -n "$pid" ]] && ! kill -0 "$pid" 2>/dev/null; then
            return 1
        fi
        sleep 0.5
    done
    return 1
}
