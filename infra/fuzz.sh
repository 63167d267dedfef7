#!/usr/bin/env bash
# Fuzzes the public API with schemathesis against infra/openapi.yaml: starts its own stack on
# free loopback ports (moto, the fake DataCrunch provider, the local server), creates an account
# with credits, an SSH key, a job and a key with every scope, then runs every operation of the
# OpenAPI description with checks that no response is a 5xx and that every response (status,
# content type, headers, body) is the one the description documents. Stops what it started.
#
# Bounded for CI: FUZZ_MAX_EXAMPLES (default 100) cases per operation and phase, about a minute in
# all; FUZZ_SEED=N repeats a run. Extra arguments go to `schemathesis run` (e.g. `--phases
# fuzzing`, `--checks all` for an exploratory run). FUZZ_STACK_ONLY=1 starts the stack and waits.
# Logs go to target/test-logs/fuzz-*.log (the log audit of infra/test.sh reads them) and the
# schemathesis reports (JUnit, HAR, and a pytest file reproducing any failure) to target/fuzz/;
# a table of the responses per operation ends the output.
#
# Schemathesis is configured by target/fuzz/schemathesis.toml, written below: the API key on
# every request, but for the job-token routes (POST /jobs/{id}/report and /logs) the report token of
# a job made here (`mimiry-admin report-token`), with the path id pinned to that job, so the
# fuzzer reaches the report handler instead of stopping at the 401. Job submissions draw
# instance types, images and locations of the fake's catalog (and the SSH key made here), so
# most of them create jobs, whose ids the stateful phase follows (OpenAPI links) to
# GET/DELETE /jobs/{id}; those two also draw the ids of the jobs made here in the other phases.
# The secrets stay in the environment, never in a file.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

max_examples=${FUZZ_MAX_EXAMPLES:-100}
py="$root/.venv/bin/python"
st="$root/.venv/bin/schemathesis"
for tool in "$py" "$st"; do
  [ -x "$tool" ] || { echo "fuzz: $tool is missing: run infra/setup.sh" >&2; exit 1; }
done
for b in fake-datacrunch mimiry-admin mimiry-local; do
  [ -x "target/debug/$b" ] || { echo "fuzz: target/debug/$b is missing: run cargo build --workspace" >&2; exit 1; }
done

logs="$root/target/test-logs"
out="$root/target/fuzz"
rm -rf "$out"
mkdir -p "$logs" "$out"
tag="fuzz-$$"

pids=()
cleanup() {
  local status=$? pid alive
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  # A server busy with open connections may outlive one SIGTERM: give it 5 s, then SIGKILL.
  for _ in $(seq 1 50); do
    alive=0
    for pid in "${pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  exit "$status"
}
trap cleanup INT TERM EXIT

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() {
  for _ in $(seq 1 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "fuzz: $2 did not start on port $1 (see $logs/$2-$tag.log)" >&2
  exit 1
}

# Waits for the `... listening on http://ADDR` line a server prints first; echoes the URL.
wait_url() {
  local file=$1 what=$2 url
  for _ in $(seq 1 300); do
    url=$(grep -o 'http://[0-9.:]*' "$file" 2>/dev/null | head -n 1 || true)
    [ -n "$url" ] && { echo "$url"; return 0; }
    sleep 0.2
  done
  echo "fuzz: $what did not print its address (see $logs/$what-$tag.log)" >&2
  exit 1
}

moto_port=$(free_port)
# moto with DynamoDB requests serialised, as the e2e harness runs it (see infra/moto_server.py).
"$py" infra/moto_server.py -H 127.0.0.1 -p "$moto_port" >"$logs/moto-$tag.log" 2>&1 &
pids+=($!)
wait_port "$moto_port" moto

# Rate limits off: the fuzzer sends far more than Verda's 60 requests a minute per path (POST
# /ssh-keys alone is called hundreds of times a minute, each a POST /v1/ssh-keys), and the API
# would rightly answer the throttled ones 503 `provider_busy` — a documented answer, but a 5xx,
# which the "no server error" check counts as a failure. What is fuzzed here is our API; the
# limits are exercised by the chaos test and the client's tests against the fake.
target/debug/fake-datacrunch --addr 127.0.0.1:0 --provision-ms 500 --no-rate-limits \
  >"$out/fake-datacrunch.out" 2>"$logs/fake-datacrunch-$tag.log" &
pids+=($!)
fake_url=$(wait_url "$out/fake-datacrunch.out" fake-datacrunch)

# The environment the e2e harness (tests/src/lib.rs) gives the stack.
export AWS_ENDPOINT_URL="http://127.0.0.1:$moto_port" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=test AWS_SECRET_ACCESS_KEY=test
export TABLE_NAME=mimiry
export PROVIDER_BASE_URL="$fake_url/v1"
export PROVISIONING_POLL_SECONDS=1 RUNNING_POLL_SECONDS=2 RETRY_DELAY_SECONDS=1
export PROVISIONING_TIMEOUT_SECONDS=20 RECONCILE_GRACE_SECONDS=3 CATALOG_TTL_SECONDS=2
export PROVIDER_TIMEOUT_MS=3000
JOBS_QUEUE_URL=$(target/debug/mimiry-admin bootstrap 2>>"$logs/mimiry-admin-$tag.log" | tail -n 1)
export JOBS_QUEUE_URL

api_port=$(free_port)
base="http://127.0.0.1:$api_port"
export PUBLIC_BASE_URL="$base"
target/debug/mimiry-local --addr "127.0.0.1:$api_port" --reconcile-every 2 \
  >"$out/mimiry-local.out" 2>"$logs/mimiry-local-$tag.log" &
pids+=($!)
wait_url "$out/mimiry-local.out" mimiry-local >/dev/null

admin() { target/debug/mimiry-admin "$@" 2>>"$logs/mimiry-admin-$tag.log" | tail -n 1; }
account=$(admin create-account --name fuzz)
admin add-credits --account "$account" --amount 5000 --note "fuzz credits" >/dev/null
key=$(admin create-key --account "$account" --name fuzz --scopes all)
# The log audit checks that no log line holds this key.
echo "$key" >>"$logs/issued-secrets.txt"

# Something to list: an SSH key and a job, so list responses carry items to check.
api() { # METHOD PATH [JSON]
  curl -sS --noproxy '*' -X "$1" "$base$2" -H "Authorization: Bearer $key" \
    ${3:+-H "Content-Type: application/json" -d "$3"}
}
ssh_key_id=$(api POST /ssh-keys \
  '{"name":"fuzz-key","public_key":"ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAID3C6VXIVgP1ZyyB+tilX36I9ZsZUQL5ocy7Rf+Z/Hge fuzz@example.com"}' |
  "$py" -c 'import json, sys; print(json.load(sys.stdin)["id"])')
submit() { # NAME: submits a job, echoes its id
  api POST /jobs "{\"name\":\"$1\",\"instance_type\":\"1V100.6V\",\"image\":\"ubuntu-22.04-cuda-12.0\",\"ssh_key_ids\":[\"$ssh_key_id\"],\"max_runtime_seconds\":600}" |
    "$py" -c 'import json, sys; print(json.load(sys.stdin)["id"])'
}
# Two jobs: one the fuzzer may cancel, one it reports for (a cancelled job takes no report).
job_id=$(submit fuzz-job)
report_job_id=$(submit fuzz-report-job)
report_token=$(admin report-token --account "$account" --job "$report_job_id")
echo "$report_token" >>"$logs/issued-secrets.txt"

if [ "${FUZZ_STACK_ONLY:-0}" = 1 ]; then
  # For exploring by hand: print where the stack is and keep it up until interrupted.
  echo "stack up: $base account $account key $key" >&2
  echo "$base $key" >"$out/stack"
  wait -n "${pids[@]}" || true
  exit 1
fi

# Schemathesis writes its cache and example database under the working directory: keep them in
# target/fuzz. It has no telemetry or report upload; nothing here leaves 127.0.0.1. One worker:
# with two, schemathesis 4.32 sometimes crashes importing a module in two threads at once.
cd "$out"
export NO_PROXY='*' no_proxy='*'
export FUZZ_REPORT_TOKEN="$report_token"
# Values of the fake's catalog; a dictionary replaces a generated value with the given
# probability, so most submissions still carry whatever the fuzzer makes up.
cat >"$out/schemathesis.toml" <<TOML
[dictionaries]
instance_types = { values = ["1V100.6V", "CPU.4V.16G"] }
images = { values = ["ubuntu-22.04-cuda-12.0", "ubuntu-22.04"] }
locations = { values = ["FIN-01", "FIN-02"] }
ssh_key_ids = { values = ["$ssh_key_id"] }
job_ids = { values = ["$job_id", "$report_job_id"] }
cancellable_job_ids = { values = ["$job_id"] }

[[operations]]
include-operation-id = "submitJob"
[operations.parameters]
"body.instance_type" = { dictionary = "instance_types", probability = 0.8 }
"body.image" = { dictionary = "images", probability = 0.8 }
"body.location" = { dictionary = "locations", probability = 0.8 }
"body.ssh_key_ids[*]" = { dictionary = "ssh_key_ids", probability = 0.8 }

# The per-operation phases draw job ids from these too, not only random UUIDs (404s); the
# stateful phase gets real ids from POST /jobs through the OpenAPI links.
[[operations]]
include-operation-id = "getJob"
parameters = { "path.id" = { dictionary = "job_ids", probability = 0.5 } }

[[operations]]
include-operation-id = "cancelJob"
parameters = { "path.id" = { dictionary = "cancellable_job_ids", probability = 0.5 } }

# The API key (-H below) everywhere else; headers of an operation win over -H.
[[operations]]
include-operation-id = "reportJob"
headers = { Authorization = "Bearer \${FUZZ_REPORT_TOKEN}" }
parameters = { "path.id" = "$report_job_id" }

# The instance's other route, with the same token and job (the log's cap bounds what it stores).
[[operations]]
include-operation-id = "shipJobLogs"
headers = { Authorization = "Bearer \${FUZZ_REPORT_TOKEN}" }
parameters = { "path.id" = "$report_job_id" }

# No long polls: a running job's quiet log would hold a request past --request-timeout
# (tests/tests/logs.rs exercises wait=).
[[operations]]
include-operation-id = "getJobLogs"
parameters = { "path.id" = { dictionary = "job_ids", probability = 0.5 }, "query.wait" = 0 }
TOML
echo "fuzz: schemathesis $("$st" --version | awk '{print $NF}') against $base, $max_examples examples per operation and phase" >&2
status=0
"$st" --config-file "$out/schemathesis.toml" run "$root/infra/openapi.yaml" \
  --url "$base" \
  -H "Authorization: Bearer $key" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance \
  --phases examples,coverage,fuzzing,stateful \
  --max-examples "$max_examples" \
  ${FUZZ_SEED:+--seed "$FUZZ_SEED"} \
  --workers 1 \
  --request-timeout 10 \
  --generation-database none \
  --output-sanitize true \
  --no-color \
  --report junit,pytest,har --report-dir "$out" \
  "$@" || status=$?

# What the API answered, per operation of the description (from the HAR report): shows that
# the fuzzer got past the refusals to real jobs, keys and reports.
"$py" - "$root/infra/openapi.yaml" "$out"/har-*.json <<'PY' || true
import collections, json, re, sys, yaml
paths = yaml.safe_load(open(sys.argv[1]))["paths"]
templates = [(p, re.compile("^" + re.sub(r"\{[^/]+\}", "[^/]+", p) + "$")) for p in paths]
counts = collections.defaultdict(collections.Counter)
for har in sys.argv[2:]:
    for entry in json.load(open(har))["log"]["entries"]:
        method = entry["request"]["method"]
        path = "/" + entry["request"]["url"].split("?")[0].split("/", 3)[3]
        for template, pattern in templates:
            if pattern.match(path) and method.lower() in paths[template]:
                counts[f"{method} {template}"][entry["response"]["status"]] += 1
print("fuzz: responses per operation (status:count)")
for operation in sorted(counts):
    statuses = " ".join(f"{s}:{n}" for s, n in sorted(counts[operation].items()))
    print(f"  {operation:<26} {statuses}")
PY

# The reports must not carry the key or the token either (schemathesis masks Authorization).
for secret in "$key" "$report_token"; do
  if grep -rqF "$secret" "$out"; then
    echo "fuzz: a secret (API key or report token) appears in $out" >&2
    status=1
  fi
done
if [ "$status" != 0 ]; then
  echo "fuzz: failures above; $out holds a pytest file reproducing them. Fix the API or infra/openapi.yaml," >&2
  echo "      and add a regression test to tests/tests/fuzz_regressions.rs for each." >&2
fi
exit "$status"
