# Shared helpers for scripts/quickstart.sh and scripts/test.sh.
# Source it; do not run it.  Works as root or with sudo, and on machines
# without apt-get as long as what is needed is already there.

# Colours only on a terminal.
if [ -t 1 ]; then
    _B=$'\033[1m'; _R=$'\033[31m'; _G=$'\033[32m'; _Y=$'\033[33m'
    _N=$'\033[0m'
else
    _B=; _R=; _G=; _Y=; _N=
fi

say()  { printf '%s==> %s%s\n' "$_B" "$*" "$_N"; }
warn() { printf '%swarning:%s %s\n' "$_Y" "$_N" "$*" >&2; }
die()  { printf '%serror:%s %s\n' "$_R" "$_N" "$*" >&2; exit 1; }

# Root runs apt-get as is; anyone else goes through sudo (never prompting
# when there is no terminal, as in CI).
if [ "$(id -u)" = 0 ]; then
    SUDO=()
elif command -v sudo >/dev/null 2>&1; then
    if [ -t 0 ]; then SUDO=(sudo); else SUDO=(sudo -n); fi
else
    SUDO=(__no_sudo__)
fi

_APT_UPDATED=
# apt_install PKG...: install Debian packages (apt-get update once first).
apt_install() {
    command -v apt-get >/dev/null 2>&1 ||
        die "need $* but apt-get is not available; install them by hand"
    [ "${SUDO[0]:-}" = __no_sudo__ ] &&
        die "need $* but not root and no sudo; install them by hand"
    if [ -z "$_APT_UPDATED" ]; then
        say "apt-get update"
        "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
            apt-get update -qq || die "apt-get update failed"
        _APT_UPDATED=1
    fi
    say "apt-get install $*"
    "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" </dev/null ||
        die "apt-get install $* failed"
}

# have_libev: is ev.h (and libev) where setup.py looks for it?
have_libev() {
    local p
    for p in ${LIBEV_PREFIX:-} /usr /usr/local /opt/homebrew /opt/local; do
        [ -f "$p/include/ev.h" ] && return 0
    done
    return 1
}

# ensure_build_deps PYTHON: libev-dev, a C compiler, and PYTHON's headers
# and venv support (Debian splits them into python3-dev / python3-venv).
ensure_build_deps() {
    local py=$1 pkgs=()
    have_libev || pkgs+=(libev-dev)
    command -v "${CC:-cc}" >/dev/null 2>&1 || pkgs+=(gcc libc6-dev)
    if ! "$py" -c 'import sysconfig, os, sys
inc = sysconfig.get_paths()["include"]
sys.exit(not os.path.isfile(os.path.join(inc, "Python.h")))' 2>/dev/null
    then
        pkgs+=("$(_debian_pkg_for "$py" dev)")
    fi
    "$py" -c 'import ensurepip, venv' 2>/dev/null ||
        pkgs+=("$(_debian_pkg_for "$py" venv)")
    if [ ${#pkgs[@]} -gt 0 ]; then
        apt_install "${pkgs[@]}"
    fi
    have_libev || die "libev (ev.h) still not found; set LIBEV_PREFIX"
}

# _debian_pkg_for PYTHON dev|venv -> python3.11-dev, python3.11-venv, ...
_debian_pkg_for() {
    local ver
    ver=$("$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    echo "python$ver-$2"
}

# make_venv PYTHON DIR: create (or reuse) a virtualenv at DIR.
make_venv() {
    local py=$1 dir=$2
    local want have
    want=$("$py" -c 'import sys; print(sys.base_prefix, sys.version)') ||
        return 1
    if [ -x "$dir/bin/python" ] && "$dir/bin/python" -c 'import pip' \
        2>/dev/null; then
        # Reuse it only if it was made from this same interpreter.
        have=$("$dir/bin/python" -c \
            'import sys; print(sys.base_prefix, sys.version)' 2>/dev/null)
        [ "$have" = "$want" ] && return 0
    fi
    rm -rf "$dir"
    say "creating $dir with $("$py" -c \
        'import sys; print(sys.executable, sys.version.split()[0])')"
    if ! "$py" -m venv "$dir"; then
        warn "could not create virtualenv $dir"
        return 1
    fi
}

# now: seconds since the epoch (integer).
now() { date +%s; }
