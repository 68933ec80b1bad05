#!/usr/bin/env bash
# Installs the real observability software the end-to-end tests run against, into a scratch
# root that nothing else uses (never onto PATH, never into the host's apt sources):
#
#   $TEST_ROOT/victoria-metrics/  VictoriaMetrics from Debian trixie (bookworm's 1.79 has no
#                                 OTLP receiver): OTLP metrics in, PromQL out
#   $TEST_ROOT/prometheus/        Prometheus from bookworm (2.42), unpacked rather than
#                                 installed so that no prometheus service starts on the host
#   $TEST_ROOT/grafana-schema/    npm @grafana/schema + typescript (versions pinned in
#                                 tests/e2e/grafana_schema/package-lock.json)
#
# The Debian packages come from the mirror the host already uses, through a private APT
# configuration (own sources.list, lists and cache under $APT_DIR), fetched with
# `apt-get download` and unpacked with `dpkg -x`. Node and npm come from the host; on a host
# without them Debian's nodejs and npm are installed.
#
# Called by scripts/setup.sh. Idempotent: a second run finds everything in place, touches no
# network and takes a few milliseconds. Run as root.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TEST_ROOT="${OTELPEERS_TEST_ROOT:-/opt/otelpeers-test}"
APT_DIR="${OTELPEERS_TEST_APT_DIR:-/var/cache/otelpeers-apt}"
VM_SUITE="${OTELPEERS_VM_SUITE:-trixie}"     # trixie: 1.112; sid works too (1.145)
SCHEMA_SRC="$ROOT/tests/e2e/grafana_schema"
STAMP_NAME=".otelpeers-stamp"

say() { printf '==> test backends: %s\n' "$*"; }
die() { printf 'ERROR: test backends: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "must run as root (it writes $TEST_ROOT and $APT_DIR).
       Fix: sudo scripts/test-backends.sh"

stamp_is() { [[ -f "$1/$STAMP_NAME" && "$(cat "$1/$STAMP_NAME")" == "$2" ]]; }

# --- the private APT configuration -------------------------------------------------------
# The host's own Debian mirror: the first URI that serves the host's release (deb822 or
# one-line sources). Using the same mirror keeps proxies and mirror policy as they are.
host_mirror() {
    local codename files line uri="" suites
    # shellcheck disable=SC1091
    codename="$(. /etc/os-release && printf '%s' "${VERSION_CODENAME:-}")"
    [[ -n "$codename" ]] || return 1
    files=(/etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources)
    for f in "${files[@]}"; do
        [[ -f "$f" ]] || continue
        if [[ "$f" == *.sources ]]; then
            # deb822: URIs and Suites lines of one stanza; stanzas are separated by blank lines
            uri="$(awk -v want="$codename" '
                /^[[:space:]]*$/ { if (u != "" && s) { print u; exit } u=""; s=0; next }
                /^URIs:/ { u=$2 }
                /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == want) s=1 }
                END { if (u != "" && s) print u }' "$f" | head -n1)"
        else
            while read -r line; do
                # deb [options] URI SUITE COMPONENTS...
                line="${line%%#*}"
                [[ "$line" =~ ^deb[[:space:]] ]] || continue
                line="$(sed -E 's/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//' <<<"$line")"
                read -r u suites _ <<<"$line"
                if [[ "$suites" == "$codename" ]]; then uri="$u"; break; fi
            done <"$f"
        fi
        if [[ -n "$uri" ]]; then printf '%s\n' "$uri"; return 0; fi
    done
    return 1
}

APT_READY=0
private_apt() {
    if [[ $APT_READY -eq 0 ]]; then
        local mirror keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        mirror="$(host_mirror)" || die "could not find the host's Debian mirror in /etc/apt/sources.list*
       (this script needs a Debian host whose sources name its release, e.g. bookworm).
       Fix: add the Debian mirror for $(. /etc/os-release; echo "${VERSION_CODENAME:-?}") to /etc/apt/sources.list"
        [[ -f "$keyring" ]] || die "$keyring is missing. Fix: apt-get install debian-archive-keyring"
        mkdir -p "$APT_DIR/lists/partial" "$APT_DIR/cache/archives/partial" "$APT_DIR/sources.list.d" \
                 "$APT_DIR/preferences.d"
        # bookworm for Prometheus, $VM_SUITE for VictoriaMetrics; only `apt-get download` uses them.
        printf 'deb [signed-by=%s] %s %s main\n' "$keyring" "$mirror" bookworm "$keyring" \
            "$mirror" "$VM_SUITE" >"$APT_DIR/sources.list"
        cat >"$APT_DIR/apt.conf" <<EOF
Dir::Etc::SourceList "$APT_DIR/sources.list";
Dir::Etc::SourceParts "$APT_DIR/sources.list.d";
Dir::Etc::Preferences "$APT_DIR/preferences";
Dir::Etc::PreferencesParts "$APT_DIR/preferences.d";
Dir::State::Lists "$APT_DIR/lists";
Dir::Cache "$APT_DIR/cache";
Acquire::Languages "none";
EOF
        say "apt-get update (private configuration: $mirror bookworm $VM_SUITE)"
        APT_CONFIG="$APT_DIR/apt.conf" apt-get update -q >"$APT_DIR/update.log" 2>&1 \
            || die "apt-get update with $APT_DIR/apt.conf failed; see $APT_DIR/update.log"
        APT_READY=1
    fi
}

# Unpack one Debian package (NAME/SUITE) into DEST, replacing what was there.
unpack_deb() {
    local spec="$1" dest="$2" work deb
    private_apt
    work="$(mktemp -d)"
    # apt-get download writes into the current directory as the sandbox user _apt.
    chown _apt "$work" 2>/dev/null || true
    (cd "$work" && APT_CONFIG="$APT_DIR/apt.conf" apt-get download -q "$spec" >/dev/null) \
        || { rm -rf "$work"; die "apt-get download $spec failed"; }
    deb="$(ls "$work"/*.deb)"
    rm -rf "$dest.new"
    mkdir -p "$dest.new"
    dpkg -x "$deb" "$dest.new" || { rm -rf "$work" "$dest.new"; die "dpkg -x $deb failed"; }
    dpkg-deb -f "$deb" Version >"$dest.new/VERSION"
    rm -rf "$work" "$dest"
    mv "$dest.new" "$dest"
}

# --- VictoriaMetrics ------------------------------------------------------------------------
install_debian_binary() {
    local name="$1" spec="$2" binary="$3" dest="$TEST_ROOT/$1"
    if stamp_is "$dest" "$spec" && [[ -x "$dest/$binary" ]]; then
        say "$name: $(cat "$dest/VERSION") in $dest"
        return 0
    fi
    unpack_deb "$spec" "$dest"
    [[ -x "$dest/$binary" ]] || die "$spec has no $binary"
    "$dest/$binary" --version >/dev/null 2>&1 || "$dest/$binary" -version >/dev/null 2>&1 \
        || die "$dest/$binary does not run on this host"
    printf '%s' "$spec" >"$dest/$STAMP_NAME"
    say "$name: installed $(cat "$dest/VERSION") in $dest"
}

mkdir -p "$TEST_ROOT"
install_debian_binary victoria-metrics "victoria-metrics/$VM_SUITE" usr/bin/victoria-metrics
install_debian_binary prometheus prometheus/bookworm usr/bin/prometheus

# --- Node, npm, @grafana/schema + typescript ---------------------------------------------------
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    say "apt-get install nodejs npm"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null || die "apt-get update failed"
    apt-get install -y -q --no-install-recommends nodejs npm >/dev/null \
        || die "could not install nodejs and npm"
fi
dest="$TEST_ROOT/grafana-schema"
want="$(cat "$SCHEMA_SRC/package.json" "$SCHEMA_SRC/package-lock.json" | sha256sum | cut -d' ' -f1)"
if stamp_is "$dest" "$want" && [[ -x "$dest/node_modules/.bin/tsc" ]]; then
    say "grafana schema: in $dest"
else
    say "npm ci @grafana/schema typescript into $dest"
    rm -rf "$dest.new"
    mkdir -p "$dest.new"
    cp "$SCHEMA_SRC/package.json" "$SCHEMA_SRC/package-lock.json" "$dest.new/"
    (cd "$dest.new" && npm ci --no-audit --no-fund --loglevel=error >"$dest.new/npm.log" 2>&1) \
        || die "npm ci failed (the npm registry must be reachable); see $dest.new/npm.log"
    printf '%s' "$want" >"$dest.new/$STAMP_NAME"
    rm -rf "$dest"
    mv "$dest.new" "$dest"
    say "grafana schema: installed in $dest"
fi
