#!/usr/bin/env bash
# Prepares a Debian/Ubuntu host for otelpeers: system packages, kernel headers that bcc can
# compile against, tracefs, and a virtualenv at ./.venv that sees Debian's bcc bindings.
# Idempotent: a second run checks everything and changes nothing (and skips apt and pip).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# OTELPEERS_KVER exists so the header fallback can be exercised for a made-up kernel version
# without touching the running kernel's /lib/modules entry.
KVER="${OTELPEERS_KVER:-$(uname -r)}"
MODDIR="/lib/modules/$KVER"
BCC_DIST="/usr/lib/python3/dist-packages/bcc"
STAMP="$VENV/.otelpeers-setup-stamp"
PACKAGES=(python3-bpfcc python3-venv iproute2 iputils-ping curl dnsmasq-base bind9-dnsutils
          iperf3 bpftool procps gcc libc6-dev graphviz chromium socat ncat nmap)

say() { printf '==> %s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() { printf 'ERROR: %s\n' "$*" >&2; exit 1; }

if [[ $(id -u) -ne 0 ]]; then
    die "setup must run as root: it installs packages, links kernel headers and mounts tracefs.
       Fix: sudo make setup   (or: sudo scripts/setup.sh)"
fi
command -v apt-get >/dev/null 2>&1 \
    || die "apt-get not found: setup supports Debian 12+ and Ubuntu 22.04+. On other distributions install bcc's Python bindings, kernel headers and python3 >= 3.11 by hand."

export DEBIAN_FRONTEND=noninteractive
APT_UPDATED=0

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

apt_update_once() {
    if [[ $APT_UPDATED -eq 0 ]]; then
        say "apt-get update"
        apt-get update -q || die "apt-get update failed; check the network and /etc/apt/sources.list"
        APT_UPDATED=1
    fi
}

apt_install() {
    apt_update_once
    say "apt-get install $*"
    apt-get install -y -q --no-install-recommends "$@"
}

# True when apt knows a real (non-virtual) package of that name.
apt_has() { apt-cache show --no-all-versions "$1" >/dev/null 2>&1; }

# --- 1. system packages -------------------------------------------------------------------
missing=()
for p in "${PACKAGES[@]}"; do installed "$p" || missing+=("$p"); done
if [[ ${#missing[@]} -eq 0 ]]; then
    say "system packages: all ${#PACKAGES[@]} installed"
else
    apt_install "${missing[@]}" || die "could not install: ${missing[*]}"
fi

# --- 2. kernel headers for bcc --------------------------------------------------------------
# bcc compiles against /lib/modules/$KVER/build. On Debian's split layout the arch directory
# holds only generated headers; the rest is in the "-common" directory, which bcc finds
# through /lib/modules/$KVER/source.
headers_usable() {
    local build="$MODDIR/build" source="$MODDIR/source"
    [[ -d "$build/include" && -f "$build/Makefile" ]] || return 1
    [[ -f "$build/include/linux/kconfig.h" || -f "$source/include/linux/kconfig.h" ]]
}

# Directory of the headers package that the generic meta package currently depends on.
generic_headers_dir() {
    local meta="$1" dep
    dep="$(dpkg-query -W -f='${Depends}' "$meta" 2>/dev/null \
           | tr ',' '\n' | sed -n 's/^ *\(linux-headers-[^ (]*\).*/\1/p' | head -n1)"
    if [[ -n "$dep" && -d "/usr/src/$dep" ]]; then
        printf '%s\n' "/usr/src/$dep"
        return 0
    fi
    # Fall back to the newest installed headers of the same flavour.
    local flavour="${meta#linux-headers-}"
    ls -d /usr/src/linux-headers-*-"$flavour" 2>/dev/null | sort -V | tail -n1
}

link_into_modules() {
    local name="$1" target="$2" link="$MODDIR/$1"
    if [[ -e "$link" && ! -L "$link" ]]; then
        die "$link is a real directory but its headers are unusable by bcc.
       Fix: move it away (mv $link $link.bak) and run setup again."
    fi
    ln -sfn "$target" "$link"
    say "linked $link -> $target"
}

if headers_usable; then
    say "kernel headers: $MODDIR/build is usable ($(readlink -f "$MODDIR/build"))"
else
    exact="linux-headers-$KVER"
    apt_update_once
    if apt_has "$exact"; then
        apt_install "$exact" || die "could not install $exact"
    else
        # shellcheck disable=SC1091
        distro="$(. /etc/os-release && printf '%s' "${ID:-debian}")"
        case "$distro:$(uname -m)" in
            ubuntu:*) meta=linux-headers-generic ;;
            *:x86_64) meta=linux-headers-amd64 ;;
            *:aarch64) meta=linux-headers-arm64 ;;
            *) die "no headers package for kernel $KVER and no generic fallback known for $(uname -m).
       Fix: install headers matching $KVER and link them to $MODDIR/build" ;;
        esac
        installed "$meta" || apt_install "$meta" || die "could not install $meta"
        arch_dir="$(generic_headers_dir "$meta")"
        [[ -n "$arch_dir" && -d "$arch_dir" ]] \
            || die "$meta is installed but no /usr/src/linux-headers-* directory was found for it"
        # linux-headers-6.1.0-56-amd64 -> 6.1.0-56; Debian keeps the shared part in -common,
        # Ubuntu in the directory without a flavour suffix.
        base="${arch_dir%-*}"
        if [[ -d "$base-common" ]]; then common_dir="$base-common"
        elif [[ -d "$base" ]]; then common_dir="$base"
        else common_dir="$arch_dir"
        fi
        mkdir -p "$MODDIR"
        link_into_modules build "$arch_dir"
        link_into_modules source "$common_dir"
        warn "no headers package exists for kernel $KVER; using the distribution's generic headers
         ($(basename "$arch_dir")). That is fine for otelpeers: its BPF programs use only stable
         UAPI structs (bpf_sock, bpf_sock_addr, bpf_sock_ops, __sk_buff, tracepoint args)."
    fi
    headers_usable || die "kernel headers under $MODDIR/build are still unusable.
       Fix: install the headers for $KVER and link them to $MODDIR/build (and $MODDIR/source)"
fi

# --- 3. tracefs -------------------------------------------------------------------------
if grep -qs '^[^ ]* /sys/kernel/tracing tracefs ' /proc/mounts; then
    say "tracefs: mounted at /sys/kernel/tracing"
else
    say "mounting tracefs at /sys/kernel/tracing"
    mount -t tracefs nodev /sys/kernel/tracing \
        || die "could not mount tracefs. Fix: mount -t tracefs nodev /sys/kernel/tracing"
fi

# --- 4. virtualenv ------------------------------------------------------------------------
py_ok() { "$1" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; }

PYTHON=""
for candidate in /usr/bin/python3 "$(command -v python3 || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]] && py_ok "$candidate"; then
        PYTHON="$candidate"
        break
    fi
done
[[ -n "$PYTHON" ]] || die "no python3 >= 3.11 found. Fix: apt-get install python3 (Debian 12 ships 3.11)"
[[ -d "$BCC_DIST" ]] || die "$BCC_DIST is missing. Fix: apt-get install --reinstall python3-bpfcc"

BCC_PTH_NAME="otelpeers-bcc.pth"
venv_site() { "$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'; }

if [[ -x "$VENV/bin/python" ]] && site="$(venv_site 2>/dev/null)" && [[ -f "$site/$BCC_PTH_NAME" ]]; then
    say "virtualenv: $VENV exists"
else
    if [[ -e "$VENV" ]]; then
        say "virtualenv: $VENV lacks the bcc path file or is broken; recreating it"
        rm -rf "$VENV"
    fi
    say "creating virtualenv $VENV with $PYTHON"
    "$PYTHON" -m venv "$VENV" || die "python3 -m venv failed. Fix: apt-get install python3-venv"
    site="$(venv_site)"
fi

# Only bcc is taken from Debian's dist-packages: a directory holding just a link to it goes on
# sys.path, so the rest of dist-packages cannot shadow the versions pip installs.
mkdir -p "$VENV/bcc-site"
ln -sfn "$BCC_DIST" "$VENV/bcc-site/bcc"
printf '%s\n' "$VENV/bcc-site" > "$site/$BCC_PTH_NAME"

want_stamp="$(sha256sum < "$ROOT/pyproject.toml" | cut -d' ' -f1) $("$VENV/bin/python" -V 2>&1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -x "$VENV/bin/otelpeers" ]] \
        && "$VENV/bin/python" -c 'import otelpeers' >/dev/null 2>&1; then
    say "python packages: up to date (pyproject.toml unchanged)"
else
    say "pip install -e '.[test]'"
    "$VENV/bin/pip" install -q -e "$ROOT[test]" \
        || die "pip install failed; see the messages above (PyPI must be reachable)"
    printf '%s\n' "$want_stamp" > "$STAMP"
fi

# An editable install is not byte-compiled by pip: compile the package here (only what changed
# since the last time), so that the agent and its helper processes load cached bytecode instead
# of compiling some 130 modules at every start (about 0.1 s of start-up and 2 MB of idle RSS
# on the bench host), also where PYTHONDONTWRITEBYTECODE is set.
"$VENV/bin/python" -m compileall -q -j 0 "$ROOT/otelpeers" >/dev/null \
    || warn "byte-compiling $ROOT/otelpeers failed: the agent compiles its modules at each start"

# --- 5. real backends for the end-to-end tests (VictoriaMetrics, Prometheus, Grafana schema) --
"$ROOT/scripts/test-backends.sh" || {
    [[ "${CI:-}" != true ]] || die "scripts/test-backends.sh failed; see the messages above"
    warn "test backends not installed: their end-to-end tests will be skipped"
}

# --- 6. verify ----------------------------------------------------------------------------
"$VENV/bin/python" -c 'import bcc, otelpeers; from bcc import BPF' \
    || die "the virtualenv cannot import bcc and otelpeers. Fix: rm -rf $VENV and run setup again"
say "ready: $VENV/bin/otelpeers (bcc $("$VENV/bin/python" -c 'import bcc; print(getattr(bcc, "__version__", "?"))'), $("$VENV/bin/python" -V 2>&1), kernel $KVER)"
