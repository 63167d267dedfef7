#!/usr/bin/env bash
# Runs the whole system on this machine: moto (DynamoDB, SQS, Secrets Manager, Cognito) on 127.0.0.1,
# the fake DataCrunch provider in execute mode (startup scripts really run, with bash, in
# .local/instances), the fake Lambda Cloud provider likewise (user_data runs in
# .local/lambda-instances), the fake Stripe (checkout page, signed webhooks to the local server), and
# the local server on http://127.0.0.1:3000 serving template.yaml's routes from the Lambda
# handlers (the dashboard included), with the worker and the reconciler. Creates a demo account
# and prints an API key (also written to .local/env for `source .local/env`) and a dashboard
# login for the same account. Ctrl-C stops
# everything it started. All state lives in moto's memory: every run starts empty.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

API_PORT=${API_PORT:-3000}
MOTO_PORT=${MOTO_PORT:-5000}
PROVIDER_PORT=${PROVIDER_PORT:-8081}
LAMBDA_PORT=${LAMBDA_PORT:-8083}
STRIPE_PORT=${STRIPE_PORT:-12111}
state="$root/.local"
mkdir -p "$state/instances" "$state/lambda-instances" "$state/logs"

for port in "$API_PORT" "$MOTO_PORT" "$PROVIDER_PORT" "$LAMBDA_PORT" "$STRIPE_PORT"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    echo "port $port on 127.0.0.1 is in use: stop what runs there or set API_PORT/MOTO_PORT/PROVIDER_PORT/LAMBDA_PORT/STRIPE_PORT" >&2
    exit 1
  fi
done

# A key from an earlier run is dead (see below): do not leave it where the docs say to look.
rm -f "$state/env"
bash infra/setup.sh
# Cargo's own progress (a bar on a terminal, a line per crate otherwise): the first build
# compiles ~400 crates and takes a while; later ones only what changed.
echo "building (cargo build --workspace; the first build takes 5-15 minutes on 2 cores)…" >&2
cargo build --workspace

pids=()
names=()
cleanup() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -f "$state/env"
  echo "stopped." >&2
}
# Ctrl-C (or TERM, or the terminal closing) is the normal way out: exit through the EXIT trap,
# which stops the rest.
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# start NAME COMMAND...: runs it in the background, remembered for cleanup and for naming it
# if it dies. In a session of its own: Ctrl-C reaches only this script, which stops the
# processes itself; otherwise they would see it too, and one exiting first would look like a
# crash.
start() {
  local name=$1
  shift
  setsid "$@" &
  pids+=($!)
  names+=("$name")
}

wait_port() {
  for _ in $(seq 1 150); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.2
  done
  echo "$2 did not start on port $1 (see $state/logs)" >&2
  exit 1
}

start moto .venv/bin/python infra/moto_server.py -H 127.0.0.1 -p "$MOTO_PORT" \
  >"$state/logs/moto.log" 2>&1
wait_port "$MOTO_PORT" moto

start fake-datacrunch target/debug/fake-datacrunch --addr "127.0.0.1:$PROVIDER_PORT" \
  --execute "$state/instances" \
  >"$state/logs/fake-datacrunch.out" 2>"$state/logs/fake-datacrunch.log"
wait_port "$PROVIDER_PORT" fake-datacrunch

# The second provider; its API key is the one mimiry-admin bootstrap puts in its secret.
start fake-lambda target/debug/fake-lambda --addr "127.0.0.1:$LAMBDA_PORT" \
  --execute "$state/lambda-instances" \
  >"$state/logs/fake-lambda.out" 2>"$state/logs/fake-lambda.log"
wait_port "$LAMBDA_PORT" fake-lambda

# The fake Stripe: its secret key and a webhook signing secret new for each run go into the
# Stripe secret (mimiry-admin bootstrap), its events to the billing webhook of the local server.
stripe_api_key=sk_test_mimiry_local
stripe_webhook_secret="whsec_local_$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')"
start fake-stripe target/debug/fake-stripe --addr "127.0.0.1:$STRIPE_PORT" \
  --api-key "$stripe_api_key" --webhook-secret "$stripe_webhook_secret" \
  --webhook-url "http://127.0.0.1:$API_PORT/billing/stripe-webhook" \
  >"$state/logs/fake-stripe.out" 2>"$state/logs/fake-stripe.log"
wait_port "$STRIPE_PORT" fake-stripe

export AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local
export TABLE_NAME=mimiry
export PROVIDER_BASE_URL="http://127.0.0.1:$PROVIDER_PORT/v1"
export LAMBDA_CLOUD_BASE_URL="http://127.0.0.1:$LAMBDA_PORT/api/v1"
export PROVIDERS=${PROVIDERS:-datacrunch,lambda}
# Also the base of Stripe Checkout's return URLs: /dashboard/credits/success and …?checkout=cancelled.
export PUBLIC_BASE_URL="http://127.0.0.1:$API_PORT"
export STRIPE_API_BASE="http://127.0.0.1:$STRIPE_PORT"
# Email notices go through moto's SES, which keeps them (GET /moto-api/data.json) and sends
# nothing; bootstrap verifies this sender there.
export NOTICE_FROM_EMAIL=${NOTICE_FROM_EMAIL:-notices@mimiry.local}
# Local timers: look at jobs every few seconds instead of every few minutes.
export PROVISIONING_POLL_SECONDS=${PROVISIONING_POLL_SECONDS:-2}
export RUNNING_POLL_SECONDS=${RUNNING_POLL_SECONDS:-5}
export RETRY_DELAY_SECONDS=${RETRY_DELAY_SECONDS:-2}
export RECONCILE_GRACE_SECONDS=${RECONCILE_GRACE_SECONDS:-10}
export EFFECT_LEASE_SECONDS=${EFFECT_LEASE_SECONDS:-30}
# Webhook receivers on this machine (http://127.0.0.1:…) are accepted here, never in AWS.
export WEBHOOKS_ALLOW_LOOPBACK=${WEBHOOKS_ALLOW_LOOPBACK:-1}
JOBS_QUEUE_URL=$(target/debug/mimiry-admin bootstrap --stripe-api-key "$stripe_api_key" \
  --stripe-webhook-secret "$stripe_webhook_secret" | tail -n 1)
export JOBS_QUEUE_URL

start mimiry-local target/debug/mimiry-local --addr "127.0.0.1:$API_PORT" --reconcile-every 10 \
  >"$state/logs/mimiry-local.out" 2>"$state/logs/mimiry-local.log"
wait_port "$API_PORT" mimiry-local

account=$(target/debug/mimiry-admin create-account --name demo | tail -n 1)
target/debug/mimiry-admin add-credits --account "$account" --amount 100 --note "demo credits" >/dev/null
key=$(target/debug/mimiry-admin create-key --account "$account" --name demo-key --scopes all | tail -n 1)
# The demo login opens the same account in the dashboard (a verified Cognito user in moto).
demo_email=demo@mimiry.local
demo_password=Demo-password-1
MIMIRY_USER_PASSWORD=$demo_password target/debug/mimiry-admin create-user --email "$demo_email" \
  --account "$account" >/dev/null

base="http://127.0.0.1:$API_PORT"
# For `source .local/env` in another terminal: the README's and docs/' curl lines use these.
# Only the owner may read it (it holds the key); it goes when the stack stops, as the key does.
(umask 077 && printf 'export BASE=%s\nexport KEY=%s\n' "$base" "$key" >"$state/env")

cat <<MSG

Mimiry is running locally.
  API:            $base
  Dashboard:      $base/dashboard
  moto (AWS):     http://127.0.0.1:$MOTO_PORT
  fake provider:  http://127.0.0.1:$PROVIDER_PORT/v1   (startup scripts run in .local/instances/)
  fake Lambda:    http://127.0.0.1:$LAMBDA_PORT/api/v1   (user_data runs in .local/lambda-instances/)
  fake Stripe:    http://127.0.0.1:$STRIPE_PORT   (checkout pages; events: /admin/events)
  logs:           .local/logs/
  demo account:   $account (100.00 credits)

Demo API key (all scopes):
  $key

Dashboard demo login (the same account; or sign up as someone new — the local Cognito sends no
email and accepts any 6-digit verification code):
  $demo_email / $demo_password

Everything lives in moto's memory: this key, the account and its jobs are gone when make run
stops, and the next make run starts empty with a new key (an old key is then a 401).

Try, in another terminal (.local/env holds BASE and KEY):
  source .local/env
  curl -s \$BASE/account -H "Authorization: Bearer \$KEY"

Ctrl-C stops everything.
MSG
status=0
wait -n -p exited "${pids[@]}" || status=$?
for i in "${!pids[@]}"; do
  if [ "${pids[$i]}" = "${exited:-}" ]; then
    echo "${names[$i]} exited unexpectedly (status $status); the end of its log:" >&2
    tail -n 5 "$state/logs/${names[$i]}.log" >&2 || true
  fi
done
exit 1
