#!/usr/bin/env bash
# Smoke test of `sam local start-api` against moto, with nothing pulled and nothing leaving this machine.
#
#   infra/sam-local/smoke-test.sh
#
# 1. apt-get installs docker.io, busybox-static (and curl, ca-certificates) if missing (root only);
# 2. starts dockerd (--iptables=false --ip-forward=false) if no Docker engine answers;
# 3. builds the Lambda base image locally if its tag is missing (build-base-image.sh);
# 4. builds AccountFunction with `sam build` (rust-cargolambda, i.e. cargo-lambda + zig; debug);
# 5. starts moto on the Docker bridge address (what SAM's containers reach it through) on a free port;
# 6. `mimiry-admin bootstrap`, create-account, create-key, add-credits against moto;
# 7. `sam local start-api --skip-pull-image` on a free loopback port, with generated --env-vars;
# 8. checks GET /account: 200 + the account id with the key; 401 + "Invalid or missing API key" with a
#    well-formed bogus key and with no key.
# The last line is `sam-local: N passed, M failed`; the exit status is non-zero on any failure.
# On exit it stops only what it started (by PID): SAM, its containers, moto, and dockerd if it
# started it. Images and the cargo target directory are kept, so a second run is quick.
#
# Environment (all optional):
#   MIMIRY_SAM_TARGET_DIR   cargo target dir for the Lambda build (default: target/sam-local, apart
#                           from the workspace's own target dir so concurrent cargo runs don't block it)
#   SMOKE_BUILD_TIMEOUT     seconds allowed for each build step (default 3600)
#   SMOKE_KEEP_WORK=1       keep the work directory (logs, env-vars file, SAM build) after the run
#   SMOKE_WARM_CONTAINERS   sam --warm-containers mode (default LAZY; "" = a container per request)
set -uo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

PASSED=0
FAILED=0
WORK=""
MOTO_PID=""
SAM_PID=""
BUILD_TIMEOUT="${SMOKE_BUILD_TIMEOUT:-3600}"
TARGET_DIR="${MIMIRY_SAM_TARGET_DIR:-$REPO_ROOT/target/sam-local}"
WARM="${SMOKE_WARM_CONTAINERS-LAZY}"
declare -a TIMINGS=()

pass() { PASSED=$((PASSED + 1)); log "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL: $*"; }
# A setup step failed: count it, and stop here (the EXIT trap cleans up and prints the summary).
abort() { fail "$*"; exit 1; }
timing() { TIMINGS+=("$1: $2 s"); log "timing: $1: $2 s"; }

# The containers SAM started for this run: SAM prints `SAM_CONTAINER_ID: <id>` for each one.
sam_container_ids() {
    [[ -n "$WORK" && -f "$WORK/sam.log" ]] || return 0
    grep -o 'SAM_CONTAINER_ID: [0-9a-f]*' "$WORK/sam.log" | awk '{print $2}' | sort -u
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    if [[ -n "$SAM_PID" ]] && kill -0 "$SAM_PID" 2>/dev/null; then
        # SIGTERM: SAM stops and removes its warm containers itself.
        log "stopping sam local start-api (pid $SAM_PID)"
        kill -TERM "$SAM_PID" 2>/dev/null
        wait_pid_gone "$SAM_PID" 30 || { log "sam did not stop within 30 s: SIGKILL"; kill -KILL "$SAM_PID" 2>/dev/null; }
    fi
    local id
    for id in $(sam_container_ids); do
        if timeout 30 docker container inspect "$id" >/dev/null 2>&1; then
            log "removing container ${id:0:12}"
            timeout 60 docker rm -f "$id" >/dev/null 2>&1 || true
        fi
    done
    if [[ -n "$MOTO_PID" ]] && kill -0 "$MOTO_PID" 2>/dev/null; then
        log "stopping moto (pid $MOTO_PID)"
        kill -TERM "$MOTO_PID" 2>/dev/null
        wait_pid_gone "$MOTO_PID" 10 || kill -KILL "$MOTO_PID" 2>/dev/null
    fi
    stop_started_dockerd
    if ((FAILED)) && [[ -n "$WORK" ]]; then
        local f
        for f in sam-build.log admin.log moto.log sam.log; do
            [[ -s "$WORK/$f" ]] || continue
            printf '\n----- last lines of %s -----\n' "$f" >&2
            tail -40 "$WORK/$f" >&2
        done
    fi
    if [[ -n "$WORK" ]]; then
        if [[ "${SMOKE_KEEP_WORK:-0}" == 1 ]]; then
            log "work directory kept: $WORK"
        else
            rm -rf "$WORK"
        fi
    fi
    ((${#TIMINGS[@]})) && printf '  %s\n' "${TIMINGS[@]}" >&2
    if ((status != 0 && FAILED == 0)); then
        FAILED=1
    fi
    echo "sam-local: $PASSED passed, $FAILED failed"
    # An explicit status: a bare `exit` in a trap keeps the status from before the trap.
    if ((FAILED)); then exit 1; fi
    exit 0
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM

WORK="$(mktemp -d "${TMPDIR:-/tmp}/mimiry-sam-smoke.XXXXXX")"
log "work directory: $WORK"

# --- Tools -----------------------------------------------------------------------------------------
ensure_debian_packages || abort "installing Debian packages"
ensure_python_tools
sam_offline_config "$WORK/sam-config"
# Credentials for moto only; never a real profile, never the instance metadata service. SAM hands
# AWS_REGION and these keys to the function containers.
unset AWS_PROFILE AWS_SESSION_TOKEN AWS_SECURITY_TOKEN AWS_ENDPOINT_URL
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_EC2_METADATA_DISABLED=true

# --- Docker engine and base image ------------------------------------------------------------------
ensure_dockerd "$WORK"
t=$SECONDS
timeout 600 "$SAM_LOCAL_DIR/build-base-image.sh" || abort "building the base image"
timing "base image (build-base-image.sh)" $((SECONDS - t))

# --- Build: AccountFunction via sam build (cargo-lambda), and mimiry-admin --------------------------
log "sam build AccountFunction (cargo lambda, debug; target dir $TARGET_DIR)"
t=$SECONDS
(
    cd "$REPO_ROOT" &&
        CARGO_TARGET_DIR="$TARGET_DIR" SAM_BUILD_MODE=debug timeout "$BUILD_TIMEOUT" \
            sam build AccountFunction --template-file "$REPO_ROOT/template.yaml" \
            --build-dir "$WORK/build" --no-cached
) >"$WORK/sam-build.log" 2>&1 || abort "sam build AccountFunction (see sam-build.log)"
[[ -x "$WORK/build/AccountFunction/bootstrap" ]] || abort "sam build made no AccountFunction/bootstrap"
timing "sam build AccountFunction (cargo lambda, debug)" $((SECONDS - t))

log "cargo build -p mimiry-infra --bin mimiry-admin"
t=$SECONDS
(cd "$REPO_ROOT" && timeout "$BUILD_TIMEOUT" cargo build -q -p mimiry-infra --bin mimiry-admin) \
    >"$WORK/admin-build.log" 2>&1 || { cat "$WORK/admin-build.log" >&2; abort "building mimiry-admin"; }
host_target="$(cd "$REPO_ROOT" && timeout 300 cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
ADMIN="$host_target/debug/mimiry-admin"
[[ -x "$ADMIN" ]] || abort "no $ADMIN after the build"
timing "cargo build mimiry-admin (host)" $((SECONDS - t))

# --- moto on the bridge address ----------------------------------------------------------------------
BRIDGE_IP="$(bridge_ip)" || abort "finding the Docker bridge address"
MOTO_PORT="$(free_port "$BRIDGE_IP")"
MOTO_URL="http://$BRIDGE_IP:$MOTO_PORT"
log "moto on $MOTO_URL"
moto_server -H "$BRIDGE_IP" -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
wait_http "$MOTO_URL/moto-api/" 60 "$MOTO_PID" || abort "moto did not answer on $MOTO_URL within 60 s"

# --- Data: table, queues, secrets, an account with credits and a key ---------------------------------
export TABLE_NAME=mimiry PROVIDER_SECRET_ID=mimiry/provider/datacrunch REPORT_SECRET_ID=mimiry/report-signing-key
admin() { (cd "$REPO_ROOT" && AWS_ENDPOINT_URL="$MOTO_URL" timeout 60 "$ADMIN" "$@") 2>>"$WORK/admin.log" | tee -a "$WORK/admin.log" | tail -1; }
QUEUE_URL="$(admin bootstrap)" && [[ "$QUEUE_URL" == http* ]] || abort "mimiry-admin bootstrap"
ACCOUNT_ID="$(admin create-account --name sam-local-smoke)" && [[ -n "$ACCOUNT_ID" ]] || abort "mimiry-admin create-account"
API_KEY="$(admin create-key --account "$ACCOUNT_ID" --name sam-local-smoke --scopes jobs:read,jobs:write)" &&
    [[ "$API_KEY" == mky_* ]] || abort "mimiry-admin create-key"
admin add-credits --account "$ACCOUNT_ID" --amount 100 >/dev/null || abort "mimiry-admin add-credits"
log "account $ACCOUNT_ID, key ${API_KEY:0:8}…"
# Well-formed (mky_ + 43 base62) but unknown, so that the function looks it up and finds nothing.
BOGUS_KEY="$(python3 -c 'import secrets,string; a=string.digits+string.ascii_letters; print("mky_"+"".join(secrets.choice(a) for _ in range(43)))')"

# --- sam local start-api -----------------------------------------------------------------------------
SAM_PORT="$(free_port 127.0.0.1)"
# Substitute ${VAR}s in the template; a missing variable is an error. PROVIDER_BASE_URL points at a
# port on the bridge address where nothing listens: GET /account never calls the provider, and
# nothing here may ever call the real one.
AWS_ENDPOINT_URL="$MOTO_URL" JOBS_QUEUE_URL="$QUEUE_URL" RUST_LOG=info PRICE_MARKUP=1.10 \
    PROVIDER_BASE_URL="http://$BRIDGE_IP:9/v1" PUBLIC_BASE_URL="http://127.0.0.1:$SAM_PORT" \
    python3 -c 'import os,string,sys; sys.stdout.write(string.Template(open(sys.argv[1]).read()).substitute(os.environ))' \
    "$SAM_LOCAL_DIR/env-vars.template.json" >"$WORK/env-vars.json" || abort "writing env-vars.json"

warm_args=()
[[ -n "$WARM" ]] && warm_args=(--warm-containers "$WARM")
log "sam local start-api on 127.0.0.1:$SAM_PORT"
t=$SECONDS
(cd "$REPO_ROOT" && exec sam local start-api --skip-pull-image \
    --template "$WORK/build/template.yaml" --env-vars "$WORK/env-vars.json" \
    --host 127.0.0.1 --port "$SAM_PORT" ${warm_args[@]+"${warm_args[@]}"}) >"$WORK/sam.log" 2>&1 &
SAM_PID=$!
BASE="http://127.0.0.1:$SAM_PORT"
wait_http "$BASE/" 180 "$SAM_PID" || abort "sam local start-api did not listen on $BASE within 180 s"
timing "sam local start-api listening" $((SECONDS - t))

# request NAME KEY: sets CODE and BODY. KEY empty = no Authorization header.
request() {
    local key="$1" out
    local -a hdr=()
    [[ -n "$key" ]] && hdr=(-H "Authorization: Bearer $key")
    out="$(curl -s --max-time 180 -w '\n%{http_code}' ${hdr[@]+"${hdr[@]}"} "$BASE/account")" || out=$'\n000'
    CODE="${out##*$'\n'}"
    BODY="${out%$'\n'*}"
}

t=$SECONDS
request "$API_KEY"
timing "first GET /account answered (cold container)" $((SECONDS - t))
if [[ "$CODE" == 200 && "$BODY" == *"\"account_id\":\"$ACCOUNT_ID\""* ]]; then
    pass "GET /account with the key: 200, account $ACCOUNT_ID"
else
    fail "GET /account with the key: expected 200 and account $ACCOUNT_ID, got $CODE: $BODY"
fi

request "$BOGUS_KEY"
if [[ "$CODE" == 401 && "$BODY" == *"Invalid or missing API key"* ]]; then
    pass "GET /account with a bogus key: 401 Invalid or missing API key"
else
    fail "GET /account with a bogus key: expected 401 and 'Invalid or missing API key', got $CODE: $BODY"
fi

request ""
if [[ "$CODE" == 401 && "$BODY" == *"Invalid or missing API key"* ]]; then
    pass "GET /account with no key: 401 Invalid or missing API key"
else
    fail "GET /account with no key: expected 401 and 'Invalid or missing API key', got $CODE: $BODY"
fi
