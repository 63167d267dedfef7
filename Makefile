.PHONY: run test bench fmt
# Run the whole system locally (moto + fake provider + local server on :3000).
run:
	bash infra/local-stack.sh
# Every check and test: fmt, clippy, sam validate, unit + end-to-end tests, SAM-local smoke test.
test:
	bash infra/test.sh
fmt:
	cargo fmt --all
