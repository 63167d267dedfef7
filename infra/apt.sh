# shellcheck shell=bash
# Installing Debian packages a fresh machine may lack. Source it; do not run it.

# apt_install PKG...: installs the packages (needs root and apt-get). Keeps Debian's docker.io
# from starting its own dockerd (default flags: iptables NAT, IP forwarding); the sam-local
# scripts start one without them. policy-rc.d is Debian's switch for that.
apt_install() {
    ((${#@})) || return 0
    if [[ "$(id -u)" != 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
        echo "apt_install: need root and apt-get to install: $*" >&2
        return 1
    fi
    echo "apt-get install $*" >&2
    DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q >&2 || {
        echo "apt-get update failed" >&2
        return 1
    }
    local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && made_policy=1
    fi
    DEBIAN_FRONTEND=noninteractive timeout 900 apt-get install -y -q --no-install-recommends "$@" >&2 || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || echo "apt-get install $* failed" >&2
    return "$rc"
}
