#!/usr/bin/env bash
# Builds the Python plugins as WebAssembly components implementing the `handler` world of
# wit/handler.wit, with componentize-py (which bundles a CPython interpreter into each component):
#   upper -> OUT_DIR/upper-python.wasm, kv -> OUT_DIR/kv-python.wasm
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/python/build.sh OUT_DIR
# componentize-py comes from PyPI (pinned below), installed once into a virtualenv under
# $SANDPORT_TOOLS (default: ~/.cache/sandport/tools, as for `cargo xtask plugins`), made with the
# machine's python3 (>= 3.9; set PYTHON to use another interpreter). The WIT folder is
# $SANDPORT_WIT (default: wit/ of this repository).
set -euo pipefail

COMPONENTIZE_PY_VERSION="0.25.1"
PLUGINS=(upper kv)

fail() { echo "python: error: $*" >&2; exit 1; }

out="${1:?usage: build.sh OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}"
wit="${SANDPORT_WIT:-$here/../../wit}"
python="${PYTHON:-python3}"
mkdir -p "$out" "$tools"
out="$(cd "$out" && pwd)"
tools="$(cd "$tools" && pwd)"
[ -f "$wit/handler.wit" ] || fail "no handler.wit in $wit (set SANDPORT_WIT)"
wit="$(cd "$wit" && pwd)"

# --- toolchain: a virtualenv holding componentize-py, made once ---------------------------------
venv="$tools/componentize-py-$COMPONENTIZE_PY_VERSION"
cpy="$venv/bin/componentize-py"
# The stamp is written last, so an interrupted install is redone from scratch.
if [ ! -f "$venv/.installed" ]; then
    command -v "$python" >/dev/null 2>&1 \
        || fail "$python not found: install Python 3 (>= 3.9), or set PYTHON"
    "$python" -c 'import sys; sys.exit(sys.version_info < (3, 9))' \
        || fail "$python is $("$python" --version 2>&1); componentize-py needs Python >= 3.9"
    if ! "$python" -c 'import venv, ensurepip' >/dev/null 2>&1; then
        echo "python: installing python3-venv (Debian package)"
        sudo=""
        if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
        $sudo apt-get install -y --no-install-recommends python3-venv >/dev/null \
            || { $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends python3-venv >/dev/null; } \
            || fail "cannot install python3-venv with apt-get"
    fi
    echo "python: installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI) into $venv"
    rm -rf "$venv"
    "$python" -m venv "$venv" || fail "cannot create a virtualenv with $python"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --only-binary=:all: \
        "componentize-py==$COMPONENTIZE_PY_VERSION" \
        || fail "pip install componentize-py==$COMPONENTIZE_PY_VERSION failed"
    touch "$venv/.installed"
fi
version="$("$cpy" --version 2>/dev/null || true)"
case "$version" in
    *"$COMPONENTIZE_PY_VERSION"*) ;;
    *) fail "$cpy reports '$version', expected $COMPONENTIZE_PY_VERSION (delete $venv to reinstall)" ;;
esac
echo "python: using $version from $venv"

# Temporary files of componentize-py, and the copies of the sources it builds from, go to a
# folder of our own, removed on exit.
export TMPDIR="$tools/tmp/python-$$"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT

# --- plugins ---------------------------------------------------------------------------------
# Each plugin is built from a copy of its sources, so that the byte-code caches componentize-py
# writes (__pycache__/) stay out of the repository.
work="$TMPDIR/src"
for plugin in "${PLUGINS[@]}"; do
    src="$here/$plugin"
    [ -f "$src/app.py" ] || fail "no $src/app.py"
    dest="$out/$plugin-python.wasm"
    echo "python: building $plugin -> $dest"
    rm -rf "$work/$plugin"
    mkdir -p "$work/$plugin"
    cp "$src"/*.py "$work/$plugin/"
    # Into a temporary file first, then renamed: a host loading the plugin meanwhile sees the
    # old file or the new one, never half of one.
    partial="$out/.$plugin-python.wasm.partial"
    (cd "$work/$plugin" && "$cpy" --quiet -d "$wit" -w handler componentize app -o "$partial") \
        || { rm -f "$partial"; fail "componentize-py failed for $plugin"; }
    mv -f "$partial" "$dest"
    echo "python: built $plugin-python.wasm ($(($(stat -c %s "$dest") / 1024)) KiB)"
done
echo "python: done"
