#!/usr/bin/env bash
# Build the Lambda base image for `provided.al2023` (x86_64) locally, since nothing can be pulled here.
#
#   infra/sam-local/build-base-image.sh [--force] [--tag TAG] [BINARY...]
#
# SAM builds its emulator image `FROM public.ecr.aws/lambda/provided:al2023-x86_64`, adds the runtime
# interface emulator (shipped in the aws-sam-cli wheel) and runs `mv` and `chmod` in it. This script
# makes a small root filesystem that can do that and run our function binaries:
#   - static busybox (/bin/sh, mv, chmod, ...),
#   - the glibc shared libraries the functions link (libc, libm, libgcc_s, the loader; plus whatever
#     `ldd` lists for any BINARY given),
#   - CA certificates (Debian and Amazon Linux paths), /tmp, /var/task, /var/runtime, /opt,
# and `docker import`s it under TAG (default: the official tag above, or $MIMIRY_SAM_BASE_IMAGE).
# It does nothing when TAG exists, unless --force. When it (re)builds, it removes SAM's derived
# `...:al2023-rapid-x86_64` image so that SAM rebuilds that on the new base.
#
# Needs a running Docker engine (smoke-test.sh starts one if none answers) and a static busybox
# (Debian: busybox-static). With another TAG, run SAM with `--invoke-image TAG`.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

force=0
tag="$BASE_IMAGE_TAG"
binaries=()
while (($#)); do
    case "$1" in
        --force) force=1 ;;
        --tag) tag="$2"; shift ;;
        -h|--help) sed -n '2,20p' "$0"; exit 0 ;;
        -*) die "unknown option $1" ;;
        *) binaries+=("$1") ;;
    esac
    shift
done
rapid_tag="${tag%:*}:al2023-rapid-x86_64"

# A dockerd started just before may need a few seconds.
for ((i = 0; i < 30; i++)); do
    docker_answers && break
    ((i == 0)) && log "waiting up to 30 s for the Docker engine"
    sleep 1
done
docker_answers || die "no Docker engine answers (start one: dockerd --iptables=false --ip-forward=false &)"
if ((!force)) && docker image inspect "$tag" >/dev/null 2>&1; then
    log "base image $tag exists (use --force to rebuild)"
    exit 0
fi
busybox_is_static || die "need a static busybox on PATH (apt-get install busybox-static)"

started=$SECONDS
rootfs="$(mktemp -d "${TMPDIR:-/tmp}/mimiry-sam-rootfs.XXXXXX")"
trap 'rm -rf "$rootfs"' EXIT

# Mirror the host's merged-/usr layout (Debian 12: /lib -> usr/lib), so that libraries sit where its
# dynamic loader looks.
for d in lib lib64; do
    if [[ -L "/$d" ]]; then
        mkdir -p "$rootfs/$(readlink "/$d")" && ln -s "$(readlink "/$d")" "$rootfs/$d"
    else
        mkdir -p "$rootfs/$d"
    fi
done
mkdir -p "$rootfs"/{bin,sbin,usr/bin,usr/sbin,etc/ssl/certs,etc/pki/tls/certs,tmp,var/task,var/runtime,var/rapid,opt,root,proc,sys,dev}
chmod 1777 "$rootfs/tmp"

# Static busybox and its applets as symlinks (what `busybox --install -s /bin` does in a chroot).
cp "$(command -v busybox)" "$rootfs/bin/busybox"
for applet in $(busybox --list); do
    [[ "$applet" == busybox || -e "$rootfs/bin/$applet" ]] || ln -s busybox "$rootfs/bin/$applet"
done

# Shared libraries, copied to the same paths as on this (Debian) host. The function binaries are
# dynamically linked against glibc; cargo-lambda (zig) targets an older glibc than this host's.
copy_lib() {
    local src="$1" real
    [[ -e "$src" ]] || return 0
    real="$(readlink -f "$src")"
    mkdir -p "$rootfs$(dirname "$src")" "$rootfs$(dirname "$real")"
    [[ -e "$rootfs$real" ]] || cp "$real" "$rootfs$real"
    [[ "$src" == "$real" || -e "$rootfs$src" ]] || ln -s "$real" "$rootfs$src"
}
libdir="$(dirname "$(readlink -f /lib64/ld-linux-x86-64.so.2)")"
for lib in /lib64/ld-linux-x86-64.so.2 "$libdir"/{libc.so.6,libm.so.6,libgcc_s.so.1,libpthread.so.0,libdl.so.2,librt.so.1,libutil.so.1}; do
    copy_lib "$lib"
done
for bin in ${binaries[@]+"${binaries[@]}"}; do
    [[ -f "$bin" ]] || die "no such binary: $bin"
    while read -r lib; do
        copy_lib "$lib"
    done < <(LC_ALL=C ldd "$bin" 2>/dev/null | grep -o '/[^ ]*' || true)
done

# CA certificates, where Debian and Amazon Linux keep them (TLS from inside a function).
if [[ -f /etc/ssl/certs/ca-certificates.crt ]]; then
    cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
    ln -s /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/pki/tls/certs/ca-bundle.crt"
else
    log "warning: no /etc/ssl/certs/ca-certificates.crt on this host; the image has no CA certificates"
fi

printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/:/bin/false\n' >"$rootfs/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' >"$rootfs/etc/group"
printf 'NAME="mimiry sam-local base (busybox + glibc)"\nID=mimiry-sam-local\n' >"$rootfs/etc/os-release"

old_id="$(docker image inspect --format '{{.Id}}' "$tag" 2>/dev/null || true)"
log "importing $(du -sh "$rootfs" | cut -f1) root filesystem as $tag"
tar -C "$rootfs" --numeric-owner -c . | docker import \
    --change 'ENV PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/opt/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'ENV LAMBDA_TASK_ROOT=/var/task' \
    --change 'ENV LAMBDA_RUNTIME_DIR=/var/runtime' \
    --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
    --change 'LABEL org.mimiry.sam-local-base=1' \
    --change 'WORKDIR /var/task' \
    - "$tag" >/dev/null

# SAM's own image on top of the old base would otherwise be reused.
if docker image inspect "$rapid_tag" >/dev/null 2>&1; then
    log "removing SAM's derived image $rapid_tag (SAM rebuilds it on first use)"
    docker image rm -f "$rapid_tag" >/dev/null || true
fi

# The previous image under this tag, now untagged (kept if a container still uses it).
if [[ -n "$old_id" && "$old_id" != "$(docker image inspect --format '{{.Id}}' "$tag")" ]]; then
    docker image rm "$old_id" >/dev/null 2>&1 || true
fi

# Prove it can do what SAM's generated Dockerfile does, and run glibc programs.
docker run --rm --network none "$tag" /bin/sh -c 'mv /etc/os-release /tmp/x && chmod +x /tmp/x && test -x /lib64/ld-linux-x86-64.so.2' ||
    die "the new image cannot run /bin/sh, mv, chmod"
log "built $tag in $((SECONDS - started)) s"
