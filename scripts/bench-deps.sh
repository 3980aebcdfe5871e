#!/usr/bin/env bash
# Make sure the benchmark tools are installed: `wrk` (Debian package wrk), via apt when missing.
# Called by `make bench`. Never prompts (CI runs with no stdin).
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf 'bench-deps: %s\n' "$*"; }
die() { printf 'bench-deps: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
prefixed() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        printf 'bench-deps:   %s\n' "$line"
    done
}

# shellcheck source=scripts/apt.sh
source scripts/apt.sh

if have wrk; then
    say "wrk found at $(command -v wrk), nothing to install"
    exit 0
fi
apt_install wrk "wrk (HTTP benchmarking tool)"
have wrk || die "wrk is still not on PATH after installing package wrk"
say "wrk ready at $(command -v wrk)"
