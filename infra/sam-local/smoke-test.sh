#!/usr/bin/env bash
# Smoke test of every function under `sam local` against moto and the fake provider, with nothing
# pulled and nothing leaving this machine.
#
#   infra/sam-local/smoke-test.sh
#
# 1. apt-get installs docker.io, busybox-static (and curl, ca-certificates, openssh-client) if
#    missing (root only);
# 2. starts dockerd (--iptables=false --ip-forward=false) if no Docker engine answers;
# 3. builds the Lambda base image locally if its tag is missing (build-base-image.sh);
# 4. builds every function in one `sam build` (rust-cargolambda, i.e. cargo-lambda + zig; debug),
#    all into one cargo target directory, so the workspace compiles once and each further
#    function only links its binary; and mimiry-admin + fake-datacrunch for the host;
# 5. starts moto and the fake DataCrunch provider on the Docker bridge address (what SAM's
#    containers reach them through), each on a free port;
# 6. `mimiry-admin bootstrap` (table, queues, secrets incl. the fake provider's credentials, the
#    Cognito user pool and app client),
#    create-account, create-key, add-credits against moto;
# 7. `sam local start-api --skip-pull-image` on a free loopback port, with generated --env-vars;
# 8. checks one route of every HTTP function: GET /account (200 with the key; 401 with a bogus key
#    and with none), GET /dashboard/login (the sign-in page, its CSP and its cookie), GET /instances
#    (the fake's catalog), POST /ssh-keys then GET /ssh-keys, POST /jobs then GET /jobs/{id}
#    (queued), GET /account/ledger (the credits added) and POST /billing/stripe-webhook unsigned
#    (400 invalid_signature, after reading the Stripe secret);
# 9. takes the message POST /jobs sent from moto's queue, `sam local invoke WorkerFunction` with it
#    as an SQS event (sqs_event.py), and checks that the job moved on (GET /jobs/{id}: provisioning,
#    with the provider's instance id);
# 10. `sam local invoke ReconcilerFunction` with an EventBridge scheduled event (`sam local
#     generate-event`): exit 0, and it saw the job's instance running at the provider: one instance
#     alert, no errors, its log lines, and its look-now message for the job on the queue.
# The last line is `sam-local: N passed, M failed`; the exit status is non-zero on any failure.
# On exit it stops only what it started (by PID): SAM, its containers, the fake provider, moto,
# and dockerd if it started it. Images and the cargo target directory are kept, so a second run
# is quick.
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
FAKE_PID=""
SAM_PID=""
BUILD_TIMEOUT="${SMOKE_BUILD_TIMEOUT:-3600}"
TARGET_DIR="${MIMIRY_SAM_TARGET_DIR:-$REPO_ROOT/target/sam-local}"
WARM="${SMOKE_WARM_CONTAINERS-LAZY}"
# template.yaml's logical ids of the functions, in build order.
FUNCTIONS=(AccountFunction CatalogFunction SshKeysFunction JobsFunction BillingFunction DashboardFunction WorkerFunction ReconcilerFunction WebhooksFunction WebhooksSenderFunction SecretsFunction)
declare -a TIMINGS=()

pass() { PASSED=$((PASSED + 1)); log "PASS: $*"; }
fail() { FAILED=$((FAILED + 1)); log "FAIL: $*"; }
# A setup step failed: count it, and stop here (the EXIT trap cleans up and prints the summary).
abort() { fail "$*"; exit 1; }
timing() { TIMINGS+=("$1: $2 s"); log "timing: $1: $2 s"; }
# check CONDITION-STATUS WHAT: counts a check (0 = pass).
check() { if (($1 == 0)); then pass "$2"; else fail "$2"; fi; }

# The containers SAM started for this run: start-api and invoke print `SAM_CONTAINER_ID: <id>`.
sam_container_ids() {
    [[ -n "$WORK" && -d "$WORK" ]] || return 0
    cat "$WORK"/sam*.log 2>/dev/null | grep -o 'SAM_CONTAINER_ID: [0-9a-f]*' | awk '{print $2}' | sort -u
}

# stop_pid PID NAME SECONDS: SIGTERM, then SIGKILL after SECONDS.
stop_pid() {
    local pid="$1" name="$2" secs="$3"
    [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null || return 0
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null
    wait_pid_gone "$pid" "$secs" || { log "$name did not stop within $secs s: SIGKILL"; kill -KILL "$pid" 2>/dev/null; }
}

cleanup() {
    local status=$?
    trap - EXIT INT TERM
    # SIGTERM: SAM stops and removes its warm containers itself.
    stop_pid "$SAM_PID" "sam local start-api" 30
    local id
    for id in $(sam_container_ids); do
        if timeout 30 docker container inspect "$id" >/dev/null 2>&1; then
            log "removing container ${id:0:12}"
            timeout 60 docker rm -f "$id" >/dev/null 2>&1 || true
        fi
    done
    stop_pid "$FAKE_PID" "fake-datacrunch" 10
    stop_pid "$MOTO_PID" "moto" 10
    stop_started_dockerd
    if ((FAILED)) && [[ -n "$WORK" ]]; then
        local f
        for f in sam-build.log admin.log moto.log fake-datacrunch.log sam.log sqs.log sam-invoke-worker.log sam-invoke-reconciler.log; do
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

STARTED=$SECONDS
WORK="$(mktemp -d "${TMPDIR:-/tmp}/mimiry-sam-smoke.XXXXXX")"
log "work directory: $WORK"

# --- Tools -----------------------------------------------------------------------------------------
t=$SECONDS
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
timeout 600 "$SAM_LOCAL_DIR/build-base-image.sh" || abort "building the base image"
timing "tools, dockerd, base image" $((SECONDS - t))

# --- Build: every function in one sam build (cargo-lambda), mimiry-admin and the fake provider -------
# SAM runs one `cargo lambda build --bin <name>` per function, one after another (samconfig.toml:
# parallel = false). With one CARGO_TARGET_DIR for all of them (lambda-builders also honours it
# when it looks for the binary to copy), the first compiles the workspace and the others reuse it.
log "sam build, all functions (cargo lambda, debug; target dir $TARGET_DIR)"
t=$SECONDS
# Each line of SAM's output with the second it came, to time each function's build.
stamp() { local line; while IFS= read -r line; do printf '%(%s)T %s\n' -1 "$line"; done; }
(
    cd "$REPO_ROOT" &&
        CARGO_TARGET_DIR="$TARGET_DIR" SAM_BUILD_MODE=debug timeout "$BUILD_TIMEOUT" \
            sam build --template-file "$REPO_ROOT/template.yaml" \
            --build-dir "$WORK/build" --no-cached 2>&1
) | stamp >"$WORK/sam-build.log" || abort "sam build (see sam-build.log)"
for fn in "${FUNCTIONS[@]}"; do
    [[ -x "$WORK/build/$fn/bootstrap" ]] || abort "sam build made no $fn/bootstrap"
done
timing "sam build, ${#FUNCTIONS[@]} functions (cargo lambda, debug)" $((SECONDS - t))
# Per function: from its "Building codeuri" line to the next one (or to the end).
awk -v end="$(date +%s)" '
    /Building codeuri:.*functions:/ { if (fn != "") printf "%s %d\n", fn, $1 - at; fn = $NF; at = $1 }
    END { if (fn != "") printf "%s %d\n", fn, end - at }' "$WORK/sam-build.log" |
    while read -r fn secs; do log "timing:   $fn: $secs s"; done

log "cargo build -p mimiry-infra -p fake-datacrunch --bin mimiry-admin --bin fake-datacrunch"
t=$SECONDS
(cd "$REPO_ROOT" && timeout "$BUILD_TIMEOUT" cargo build -q -p mimiry-infra -p fake-datacrunch --bin mimiry-admin --bin fake-datacrunch) \
    >"$WORK/host-build.log" 2>&1 || { cat "$WORK/host-build.log" >&2; abort "building mimiry-admin and fake-datacrunch"; }
host_target="$(cd "$REPO_ROOT" && timeout 300 cargo metadata --format-version 1 --no-deps 2>/dev/null |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')"
ADMIN="$host_target/debug/mimiry-admin"
FAKE="$host_target/debug/fake-datacrunch"
[[ -x "$ADMIN" && -x "$FAKE" ]] || abort "no $ADMIN or $FAKE after the build"
timing "cargo build mimiry-admin, fake-datacrunch (host)" $((SECONDS - t))

# --- moto and the fake provider on the bridge address ------------------------------------------------
t=$SECONDS
BRIDGE_IP="$(bridge_ip)" || abort "finding the Docker bridge address"
MOTO_PORT="$(free_port "$BRIDGE_IP")"
MOTO_URL="http://$BRIDGE_IP:$MOTO_PORT"
log "moto on $MOTO_URL"
# DynamoDB requests serialised, as in the tests and `make run` (see infra/moto_server.py).
python3 "$REPO_ROOT/infra/moto_server.py" -H "$BRIDGE_IP" -p "$MOTO_PORT" >"$WORK/moto.log" 2>&1 &
MOTO_PID=$!
wait_http "$MOTO_URL/moto-api/" 60 "$MOTO_PID" || abort "moto did not answer on $MOTO_URL within 60 s"

FAKE_PORT="$(free_port "$BRIDGE_IP")"
FAKE_URL="http://$BRIDGE_IP:$FAKE_PORT"
log "fake-datacrunch on $FAKE_URL"
# Not in execute mode: nothing runs a job's startup script; instances only change state, booting
# to running in 2 s.
"$FAKE" --addr "$BRIDGE_IP:$FAKE_PORT" --provision-ms 2000 >"$WORK/fake-datacrunch.out" 2>"$WORK/fake-datacrunch.log" &
FAKE_PID=$!
wait_http "$FAKE_URL/" 30 "$FAKE_PID" || abort "fake-datacrunch did not answer on $FAKE_URL within 30 s"

# --- Data: table, queues, secrets, an account with credits and a key ---------------------------------
export TABLE_NAME=mimiry PROVIDER_SECRET_ID=mimiry/provider/datacrunch REPORT_SECRET_ID=mimiry/report-signing-key
export STRIPE_SECRET_ID=mimiry/stripe
admin() { (cd "$REPO_ROOT" && AWS_ENDPOINT_URL="$MOTO_URL" timeout 60 "$ADMIN" "$@") 2>>"$WORK/admin.log" | tee -a "$WORK/admin.log" | tail -1; }
# The provider secret holds fake-datacrunch's default client id and secret (bootstrap's defaults).
QUEUE_URL="$(admin bootstrap)" && [[ "$QUEUE_URL" == http* ]] || abort "mimiry-admin bootstrap"
ACCOUNT_ID="$(admin create-account --name sam-local-smoke)" && [[ -n "$ACCOUNT_ID" ]] || abort "mimiry-admin create-account"
API_KEY="$(admin create-key --account "$ACCOUNT_ID" --name sam-local-smoke --scopes all)" &&
    [[ "$API_KEY" == mky_* ]] || abort "mimiry-admin create-key"
admin add-credits --account "$ACCOUNT_ID" --amount 100 >/dev/null || abort "mimiry-admin add-credits"
log "account $ACCOUNT_ID, key ${API_KEY:0:8}…"
# The Cognito pool and app client bootstrap made in moto (their ids are random).
USER_POOL_ID="$(sed -n 's/^user pool: //p' "$WORK/admin.log" | tail -1)"
USER_POOL_CLIENT_ID="$(sed -n 's/^app client: //p' "$WORK/admin.log" | tail -1)"
[[ -n "$USER_POOL_ID" && -n "$USER_POOL_CLIENT_ID" ]] || abort "bootstrap made no user pool"
# Well-formed (mky_ + 43 base62) but unknown, so that the function looks it up and finds nothing.
BOGUS_KEY="$(python3 -c 'import secrets,string; a=string.digits+string.ascii_letters; print("mky_"+"".join(secrets.choice(a) for _ in range(43)))')"
timing "moto, fake-datacrunch, bootstrap" $((SECONDS - t))

# --- sam local start-api -----------------------------------------------------------------------------
SAM_PORT="$(free_port 127.0.0.1)"
# Substitute ${VAR}s in the template; a missing variable is an error. The provider is the fake, on
# the bridge address: nothing here may ever call the real one.
AWS_ENDPOINT_URL="$MOTO_URL" JOBS_QUEUE_URL="$QUEUE_URL" RUST_LOG=info PRICE_MARKUP=1.10 \
    COGNITO_USER_POOL_ID="$USER_POOL_ID" COGNITO_CLIENT_ID="$USER_POOL_CLIENT_ID" \
    SESSION_SECRET_ID=mimiry/dashboard-session-key SIGNUP_CREDIT=0 \
    WEBHOOKS_QUEUE_URL="" \
    PROVIDER_BASE_URL="$FAKE_URL/v1" PUBLIC_BASE_URL="http://127.0.0.1:$SAM_PORT" \
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

# request METHOD PATH KEY [JSON]: sets CODE and BODY. KEY empty = no Authorization header.
request() {
    local method="$1" path="$2" key="$3" out
    local -a args=(-X "$method")
    [[ -n "$key" ]] && args+=(-H "Authorization: Bearer $key")
    (($# > 3)) && args+=(-H "Content-Type: application/json" --data-binary "$4")
    out="$(curl -s --max-time 180 -w '\n%{http_code}' "${args[@]}" "$BASE$path")" || out=$'\n000'
    CODE="${out##*$'\n'}"
    BODY="${out%$'\n'*}"
}

# --- DashboardFunction: the sign-in page, its headers and its cookie ---------------------------------
# (before the API checks' helpers: plain curl with the headers)
dashboard_check() {
    local out
    out="$(curl -s --max-time 180 -D - "$BASE/dashboard/login")" || out=""
    [[ "$out" == "HTTP/1.1 200"* && "$out" == *'id="login-form"'* ]] &&
        grep -qi '^content-security-policy: .*frame-ancestors' <<<"$out" &&
        grep -qi '^set-cookie: mimiry_sid=.*HttpOnly; SameSite=Lax' <<<"$out"
}

# field PYTHON-EXPR: evaluates EXPR with `d` = BODY parsed as JSON; prints it, or nothing (status
# 1) when BODY is not JSON or EXPR fails.
field() {
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2], {"d": d}))' \
        "$BODY" "$1" 2>/dev/null
}

# --- HTTP functions: one route each (AccountFunction with three) -------------------------------------
t=$SECONDS
request GET /account "$API_KEY"
timing "first GET /account answered (cold container)" $((SECONDS - t))
[[ "$CODE" == 200 && "$(field 'd["account_id"]')" == "$ACCOUNT_ID" ]]
check $? "GET /account with the key: 200, account $ACCOUNT_ID (got $CODE)"

request GET /account "$BOGUS_KEY"
[[ "$CODE" == 401 && "$BODY" == *"Invalid or missing API key"* ]]
check $? "GET /account with a bogus key: 401 Invalid or missing API key (got $CODE: $BODY)"

request GET /account ""
[[ "$CODE" == 401 && "$BODY" == *"Invalid or missing API key"* ]]
check $? "GET /account with no key: 401 Invalid or missing API key (got $CODE: $BODY)"

t=$SECONDS
dashboard_check
check $? "GET /dashboard/login (DashboardFunction): 200, the sign-in form, a CSP with frame-ancestors, an HttpOnly SameSite=Lax mimiry_sid cookie"
timing "first GET /dashboard/login answered (cold container)" $((SECONDS - t))

t=$SECONDS
request GET /instances "$API_KEY"
timing "first GET /instances answered (cold container, provider token)" $((SECONDS - t))
# 1V100.6V is one of the fake provider's instance types.
[[ "$CODE" == 200 && "$(field '"1V100.6V" in [i["instance_type"] for i in d["instances"]] and not d["stale"]')" == True ]]
check $? "GET /instances (CatalogFunction): 200, the fake provider's 1V100.6V, not stale (got $CODE: ${BODY:0:200})"

ssh-keygen -q -t ed25519 -N '' -C sam-local-smoke -f "$WORK/id_ed25519" || abort "ssh-keygen"
PUBLIC_KEY="$(cat "$WORK/id_ed25519.pub")"
request POST /ssh-keys "$API_KEY" "$(python3 -c 'import json,sys; print(json.dumps({"name": "sam-local-smoke", "public_key": sys.argv[1]}))' "$PUBLIC_KEY")"
SSH_KEY_ID="$(field 'd["id"]')"
[[ "$CODE" == 201 && -n "$SSH_KEY_ID" && -n "$(field 'd["datacrunch_id"]')" ]]
check $? "POST /ssh-keys (SshKeysFunction): 201 with an id and the provider's id (got $CODE: $BODY)"

request GET /ssh-keys "$API_KEY"
[[ "$CODE" == 200 && -n "$SSH_KEY_ID" && "$(field "[k['id'] for k in d['ssh_keys']] == ['$SSH_KEY_ID']")" == True ]]
check $? "GET /ssh-keys: 200, lists exactly the key just added (got $CODE: $BODY)"

JOB_BODY="$(python3 -c 'import json,sys; print(json.dumps({
    "name": "sam-local-smoke", "instance_type": "1V100.6V", "image": "ubuntu-22.04-cuda-12.0",
    "location": "FIN-01", "ssh_key_ids": [sys.argv[1]], "startup_script": "#!/bin/bash\necho hello",
    "auto_shutdown": True}))' "$SSH_KEY_ID")"
request POST /jobs "$API_KEY" "$JOB_BODY"
JOB_ID="$(field 'd["id"]')"
[[ "$CODE" == 201 && -n "$JOB_ID" && "$(field 'd["status"]')" == queued ]]
check $? "POST /jobs (JobsFunction): 201, queued (got $CODE: $BODY)"
[[ -n "$JOB_ID" ]] || abort "no job to go on with"

request GET "/jobs/$JOB_ID" "$API_KEY"
[[ "$CODE" == 200 && "$(field 'd["id"], d["status"]')" == "('$JOB_ID', 'queued')" ]]
check $? "GET /jobs/{id}: 200, queued (got $CODE: $BODY)"

request GET /account/ledger "$API_KEY"
[[ "$CODE" == 200 && "$(field '[e["kind"] for e in d["entries"]][-1]')" == credit ]]
check $? "GET /account/ledger (BillingFunction): 200, oldest entry the credits added (got $CODE: ${BODY:0:300})"

request POST /billing/stripe-webhook "" '{"id": "evt_smoke", "type": "checkout.session.completed", "data": {"object": {}}}'
[[ "$CODE" == 400 && "$(field 'd["code"]')" == invalid_signature ]]
check $? "POST /billing/stripe-webhook unsigned: 400 invalid_signature (got $CODE: $BODY)"

# sam_invoke LOGICAL-ID EVENT-FILE NAME: `sam local invoke`; its response goes to $WORK/NAME.out and
# its log (SAM's and the function's) to $WORK/sam-invoke-NAME.log. Sets RC and BODY (the response).
sam_invoke() {
    local fn="$1" event="$2" name="$3"
    (cd "$REPO_ROOT" && exec timeout 300 sam local invoke "$fn" --skip-pull-image \
        --template "$WORK/build/template.yaml" --env-vars "$WORK/env-vars.json" --event "$event") \
        >"$WORK/$name.out" 2>"$WORK/sam-invoke-$name.log"
    RC=$?
    BODY="$(cat "$WORK/$name.out")"
}
# sqs_event receive|delete ARGS...: see sqs_event.py.
sqs_event() { timeout 60 python3 "$SAM_LOCAL_DIR/sqs_event.py" "$@" 2>>"$WORK/sqs.log"; }
# message_body EVENT-FILE: the body of the event's one record.
message_body() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["Records"][0]["body"])' "$1" 2>/dev/null; }

# --- WorkerFunction: the message POST /jobs sent, as the SQS event source would deliver it ------------
# Received from moto's queue (which then holds it invisible for the queue's visibility timeout, as
# SQS does while Lambda handles it), and deleted once the worker reported no failure, as the event
# source mapping does.
t=$SECONDS
RECEIPT="$(sqs_event receive "$QUEUE_URL" "$JOB_ID" "$WORK/worker-event.json")"
[[ -n "$RECEIPT" ]]
check $? "the jobs queue holds POST /jobs's message for the job ($(message_body "$WORK/worker-event.json"))"

if [[ -n "$RECEIPT" ]]; then
    sam_invoke WorkerFunction "$WORK/worker-event.json" worker
    [[ $RC == 0 && "$(field 'd["batchItemFailures"]')" == "[]" ]]
    check $? "sam local invoke WorkerFunction with that SQS event: exit 0, no batch item failures (exit $RC: $BODY)"
    timing "sam local invoke WorkerFunction" $((SECONDS - t))
    sqs_event delete "$QUEUE_URL" "$RECEIPT" || log "could not delete the handled message (see sqs.log)"

    # The worker ordered the instance from the provider and recorded it: the job is provisioning.
    request GET "/jobs/$JOB_ID" "$API_KEY"
    [[ "$CODE" == 200 && "$(field 'd["status"] + " " + str(d["instance_id"] is not None)')" == "provisioning True" ]]
    check $? "GET /jobs/{id} after the worker: 200, provisioning with an instance id (got $CODE: $BODY)"
fi

# --- ReconcilerFunction: an EventBridge scheduled event ---------------------------------------------
# The job is parked while its instance boots; the fake provider has it running after 2 s
# (--provision-ms), and a `sam local invoke` takes longer than that to start. So the reconciler
# must see the instance changed, wake the job with a look-now message, and log it.
t=$SECONDS
(cd "$REPO_ROOT" && timeout 60 sam local generate-event cloudwatch scheduled-event --region "$AWS_REGION") \
    >"$WORK/scheduled-event.json" 2>>"$WORK/sam-generate-event.log" || abort "sam local generate-event cloudwatch scheduled-event"
sam_invoke ReconcilerFunction "$WORK/scheduled-event.json" reconciler
[[ $RC == 0 && "$(field 'd["instance_alerts"], d["errors"]')" == "(1, 0)" ]] &&
    grep -q "\"message\":\"its instance changed; woke the job\",\"job_id\":\"$JOB_ID\"" "$WORK/sam-invoke-reconciler.log" &&
    grep -q '"message":"reconciled"' "$WORK/sam-invoke-reconciler.log"
check $? "sam local invoke ReconcilerFunction with a scheduled event: exit 0, 1 instance alert and 0 errors, logged 'woke the job' and 'reconciled' (exit $RC: $BODY)"
timing "sam local invoke ReconcilerFunction" $((SECONDS - t))

[[ -n "$(sqs_event receive "$QUEUE_URL" "$JOB_ID" "$WORK/wake-event.json" --look-now)" ]]
check $? "the jobs queue holds the reconciler's look-now message for the job ($(message_body "$WORK/wake-event.json"))"

timing "total" $((SECONDS - STARTED))
