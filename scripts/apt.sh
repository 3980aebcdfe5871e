# Shared by the set-up scripts: install a Debian package with apt, never prompting.
# The sourcing script defines say, die, have and prefixed (its own output prefix).
# shellcheck shell=bash

APT_UPDATED=${APT_UPDATED:-0}

apt_install() {  # package "what it provides"
    local pkg=$1 what=$2
    local -a pre=()
    if ! have apt-get; then
        die "$what is missing and apt-get is not available: install $what (Debian/Ubuntu package '$pkg') yourself and re-run"
    fi
    if [[ $EUID -ne 0 ]]; then
        have sudo || die "$what is missing; not root and sudo is not available: as root run 'apt-get install $pkg', then re-run"
        pre=(sudo -n)
    fi
    if ((!APT_UPDATED)); then
        say "running apt-get update"
        ${pre[@]+"${pre[@]}"} apt-get update </dev/null 2>&1 | prefixed \
            || die "apt-get update failed (if sudo needs a password, run 'apt-get install $pkg' as root yourself)"
        APT_UPDATED=1
    fi
    say "installing Debian package $pkg with apt ($what is missing)"
    ${pre[@]+"${pre[@]}"} env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y --no-install-recommends "$pkg" </dev/null 2>&1 | prefixed \
        || die "apt-get install $pkg failed"
    say "installed $pkg"
}
