#!/usr/bin/env bash
# Benchmarks (`make bench`): builds the release binaries once (the functions, hello-lambda — the
# floor — and the bench driver; the local stack's binaries too unless BENCH_STACK_PROFILE=debug),
# then runs mimiry-bench, which starts its own moto + fake provider + local server on free
# 127.0.0.1 ports, prints a table and writes the same figures to target/bench/results.json.
# Extra arguments go to mimiry-bench (`bash infra/bench.sh --help`).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

bash infra/setup.sh
stack=${BENCH_STACK_PROFILE:-release}
# The functions are built in a cargo run of their own, as SAM builds them: Cargo unifies features
# over every package one run selects, and the bench's, fakes' and admin's `reqwest/rustls-tls`
# would put a second crypto library (ring) into the measured binaries (docs/decisions.md,
# "Binary size").
functions=(-p mimiry-account -p mimiry-catalog -p mimiry-ssh-keys -p mimiry-jobs -p mimiry-worker
  -p mimiry-reconciler -p mimiry-billing -p mimiry-dashboard -p mimiry-webhooks -p mimiry-secrets)
# The scale benchmark (`make bench-scale`) runs the functions inside mimiry-bench: it needs only
# the bench, mimiry-admin (bootstrap) and fake-datacrunch.
if [[ "${1:-}" == "--scale" ]]; then
  echo "building (cargo build --release) …" >&2
  cargo build --release -p mimiry-bench -p mimiry-infra -p fake-datacrunch
  exec target/release/mimiry-bench --release target/release --stack-bin target/release \
    --timeout-secs 1200 "$@"
fi
case "$stack" in
  release)
    echo "building (cargo build --release) …" >&2
    cargo build --release "${functions[@]}"
    cargo build --release -p mimiry-bench -p mimiry-infra -p fake-datacrunch
    ;;
  debug)
    echo "building (cargo build --release; the local stack in debug) …" >&2
    cargo build --release "${functions[@]}"
    cargo build --release -p mimiry-bench
    cargo build -p mimiry-infra -p fake-datacrunch
    ;;
  *)
    echo "BENCH_STACK_PROFILE must be release or debug" >&2
    exit 2
    ;;
esac
exec target/release/mimiry-bench --release target/release --stack-bin "target/$stack" "$@"
