.PHONY: run test bench bench-scale chaos fmt
# Run the whole system locally (moto + fake provider + local server on :3000).
run:
	bash infra/local-stack.sh
# Every check and test: fmt, clippy, sam validate, unit + end-to-end tests, SAM-local smoke test.
test:
	bash infra/test.sh
# Benchmarks: sizes, init time, memory, latency, AWS calls, worker figures (target/bench/results.json).
bench:
	bash infra/bench.sh
# Scale: 10,000 active jobs, reconciler once a minute, worker on (~10 min; scale.* keys in
# target/bench/results.json, table in target/bench/scale-table.txt).
bench-scale:
	bash infra/bench.sh --scale
# The chaos test at full size (500 jobs; CI runs it with 60, as a step of `make test`).
chaos:
	cargo build --workspace
	CHAOS_JOBS=500 cargo test --workspace --test chaos -- --nocapture
fmt:
	cargo fmt --all
