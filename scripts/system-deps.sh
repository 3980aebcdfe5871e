#!/usr/bin/env bash
# Make sure the system packages examgate needs besides its services are installed, via apt when missing:
#   - a TrueType font with Chinese glyphs for ticket PDFs (Debian package fonts-droid-fallback,
#     the default of EXAMGATE_TICKET_FONT)
#   - pdftotext (Debian package poppler-utils), with which the tests read the PDFs back
#   - headless Chromium (Debian package chromium, /usr/bin/chromium), which the browser tests drive
#     through Playwright; Playwright never downloads a browser of its own
#   - HAProxy (Debian package haproxy), the load balancer the several-hosts test puts in front of two
#     gateways with deploy/haproxy/examgate.cfg
# Called by `make test`, `make demo` and `make bench`. Quiet when all is present; never prompts
# (CI runs with no stdin); as root it uses apt-get directly, otherwise `sudo -n`.
set -euo pipefail

cd "$(dirname "$0")/.."

say() { printf 'system-deps: %s\n' "$*"; }
die() { printf 'system-deps: %s\n' "$*" >&2; exit 1; }
have() { command -v "$1" >/dev/null 2>&1; }
prefixed() {
    local line
    while IFS= read -r line || [[ -n $line ]]; do
        printf 'system-deps:   %s\n' "$line"
    done
}

# shellcheck source=scripts/apt.sh
source scripts/apt.sh

FONT_PKG=fonts-droid-fallback
FONT_DEFAULT=/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf
TICKET_FONT=${EXAMGATE_TICKET_FONT:-$FONT_DEFAULT}

ensure_font() {
    [[ -r $TICKET_FONT ]] && return 0
    if [[ $TICKET_FONT != "$FONT_DEFAULT" ]]; then
        # A font chosen by the operator is theirs to provide; we only know how to install the default.
        die "EXAMGATE_TICKET_FONT=$TICKET_FONT does not exist or is not readable; point it at a TrueType font with Chinese glyphs, or unset it to use $FONT_DEFAULT (package $FONT_PKG)"
    fi
    apt_install "$FONT_PKG" "the Chinese ticket PDF font $FONT_DEFAULT"
    [[ -r $FONT_DEFAULT ]] && return 0
    local found
    found=$(dpkg -L "$FONT_PKG" 2>/dev/null | grep -iE '\.(ttf|otf)$' | head -n 5 || true)
    if [[ -n $found ]]; then
        die "package $FONT_PKG is installed but $FONT_DEFAULT is not there; it ships: ${found//$'\n'/, } — set EXAMGATE_TICKET_FONT to one of them"
    fi
    die "package $FONT_PKG is installed but $FONT_DEFAULT is not there; set EXAMGATE_TICKET_FONT to a TrueType font with Chinese glyphs"
}

ensure_pdftotext() {
    have pdftotext && return 0
    apt_install poppler-utils "pdftotext (used by the tests to read ticket PDFs)"
    have pdftotext || die "pdftotext is still not on PATH after installing package poppler-utils"
}

CHROMIUM=/usr/bin/chromium

ensure_chromium() {
    [[ -x $CHROMIUM ]] && return 0
    apt_install chromium "headless Chromium $CHROMIUM (used by the browser tests in tests/browser)"
    [[ -x $CHROMIUM ]] || die "package chromium is installed but $CHROMIUM is not there"
}

ensure_haproxy() {
    have haproxy && return 0
    [[ -x /usr/sbin/haproxy ]] && return 0
    apt_install haproxy "HAProxy (used by the load balancer test in tests/hardening/test_load_balancer.py)"
    have haproxy || [[ -x /usr/sbin/haproxy ]] || die "package haproxy is installed but the haproxy command is not there"
}

ensure_font
ensure_pdftotext
ensure_chromium
ensure_haproxy
