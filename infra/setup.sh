#!/usr/bin/env bash
# Installs what the project needs on a fresh machine: ssh-keygen (the tests make keys with it),
# the Python tools (moto, SAM CLI, cargo-lambda, zig, schemathesis) into ./.venv, and for the
# browser tests Debian's Chromium + ChromeDriver and axe-core (npm, infra/browser). The
# sam-local scripts install Docker themselves. Safe to run again: it does nothing when all is there.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv="$root/.venv"
# shellcheck source=apt.sh
source "$root/infra/apt.sh"
command -v ssh-keygen >/dev/null 2>&1 || apt_install openssh-client
# The browser tests (tests/src/browser.rs): Debian's chromedriver is built for Debian's chromium,
# so the two always match; no browser is downloaded from anywhere else.
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
command -v npm >/dev/null 2>&1 || missing+=(nodejs npm)
apt_install "${missing[@]}"
browser="$root/infra/browser"
stamp="$browser/node_modules/.package-lock.sha256"
want=$(sha256sum "$browser/package-lock.json" | cut -d' ' -f1)
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: npm ci in infra/browser (axe-core)" >&2
  (cd "$browser" && npm ci --no-audit --no-fund --ignore-scripts >&2)
  echo "$want" > "$stamp"
fi
req="$root/infra/requirements.txt"
stamp="$venv/.requirements.sha256"
want=$(sha256sum "$req" | cut -d' ' -f1)
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
  echo "setup: installing the Python tools into .venv (moto, SAM CLI, cargo-lambda, zig," >&2
  echo "       schemathesis): about 120 packages, a few minutes the first time" >&2
  # One line per package pip fetches, so a long first install is visibly moving; pip's
  # warnings and errors (stderr) pass through untouched.
  "$venv/bin/pip" install --disable-pip-version-check --progress-bar off -r "$req" |
    sed -un 's/^Collecting \([A-Za-z0-9_.-]*\).*/setup:   \1/p' >&2
  echo "$want" > "$stamp"
  echo "setup: Python tools installed" >&2
fi
