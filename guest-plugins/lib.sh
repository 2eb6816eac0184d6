# What every guest-plugins/<lang>/build.sh shares: sourced by them, never run on its own.
#
#   here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
#   source "$here/../lib.sh"
#   sp_start LANG "$@"    # sets out (OUT_DIR, absolute) and tools (the toolchain cache)
#
# The toolchain cache is $SANDPORT_TOOLS, by default ~/.cache/sandport/tools, as for
# `cargo xtask plugins`.

# Messages are prefixed with the language, so a failure in `cargo xtask plugins` says whose.
say() { echo "$sp_lang: $*"; }
fail() {
    echo "$sp_lang: error: $*" >&2
    exit 1
}

# sp_start LANG OUT_DIR: creates OUT_DIR and the toolchain cache; sets `out` and `tools` to
# their absolute paths.
sp_start() {
    sp_lang="$1"
    [ $# -eq 2 ] || {
        echo "usage: bash guest-plugins/$sp_lang/build.sh OUT_DIR" >&2
        exit 2
    }
    out="$2"
    tools="${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}"
    mkdir -p "$out" "$tools"
    out="$(cd "$out" && pwd)"
    tools="$(cd "$tools" && pwd)"
}

# sp_wit: sets `wit` to the folder holding handler.wit ($SANDPORT_WIT, by default the
# repository's wit/), for the toolchains that generate bindings from it. That is contract
# sandport:plugin@0.1.0; contract 0.2.0 is in its v0.2/ subfolder (see sp_plugin).
sp_wit() {
    wit="${SANDPORT_WIT:-$(dirname "${BASH_SOURCE[0]}")/../wit}"
    [ -f "$wit/handler.wit" ] || fail "no handler.wit in $wit (set SANDPORT_WIT)"
    wit="$(cd "$wit" && pwd)"
}

# sp_plugin NAME@CONTRACT: splits an entry of a build script's PLUGINS list, such as `kv@0.2`,
# into `plugin` (kv), `contract` (0.2) and `plugin_wit`, the WIT folder of that contract: `0.1`
# is $wit (wit/handler.wit), `0.2` is $wit/v0.2. Needs sp_wit first.
sp_plugin() {
    plugin="${1%@*}"
    contract="${1##*@}"
    [ "$plugin" != "$1" ] || fail "plugin entry '$1' does not name its contract (NAME@0.1 or NAME@0.2)"
    case "$contract" in
        0.1) plugin_wit="$wit" ;;
        0.2) plugin_wit="$wit/v0.2" ;;
        *) fail "plugin $plugin: unknown contract '$contract' (expected 0.1 or 0.2)" ;;
    esac
    [ -f "$plugin_wit/handler.wit" ] || fail "plugin $plugin: no handler.wit in $plugin_wit"
}

# sp_apt_install PACKAGE...: installs Debian packages, refreshing the package lists only if the
# first try fails (a fresh machine may have none).
sp_apt_install() {
    local sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y --no-install-recommends "$@" >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends "$@" >/dev/null; } \
        || fail "cannot install $* with apt-get"
}

# sp_need_node: Node.js and npm, from Debian's packages when they are missing.
sp_need_node() {
    if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
        say "installing Node.js and npm (Debian packages nodejs, npm)"
        sp_apt_install nodejs npm
    fi
}

# sp_venv VENV PIP_ARGS...: a new virtualenv at VENV (made with $PYTHON, by default python3)
# holding what `pip install PIP_ARGS` installs; whatever was at VENV is removed first.
sp_venv() {
    local venv="$1"
    shift
    rm -rf "$venv"
    "${PYTHON:-python3}" -m venv "$venv" || fail "cannot create a virtualenv with ${PYTHON:-python3}"
    "$venv/bin/pip" install --quiet --disable-pip-version-check "$@" \
        || fail "pip install $* failed"
}
