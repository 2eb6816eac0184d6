#!/usr/bin/env bash
# Builds the Python plugins as WebAssembly components implementing the `handler` world of their
# contract, with componentize-py (which bundles a CPython interpreter into each component):
#   upper (0.1.0, wit/handler.wit)     -> OUT_DIR/upper-python.wasm
#   kv    (0.2.0, wit/v0.2/handler.wit) -> OUT_DIR/kv-python.wasm
#   chat  (0.2.0, wit/v0.2/handler.wit) -> OUT_DIR/chat-python.wasm
# A 0.2.0 plugin is built with sandport.py (the helper module beside this script) copied next
# to its app.py.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/python/build.sh OUT_DIR
# componentize-py comes from PyPI (pinned below), installed once into a virtualenv under
# $SANDPORT_TOOLS (default: ~/.cache/sandport/tools, as for `cargo xtask plugins`), made with the
# machine's python3 (>= 3.9; set PYTHON to use another interpreter). The WIT folder is
# $SANDPORT_WIT (default: wit/ of this repository; contract 0.2.0 is its v0.2/ subfolder).
set -euo pipefail

COMPONENTIZE_PY_VERSION="0.25.1"
# Each plugin, and the contract it implements (see sp_plugin in ../lib.sh).
PLUGINS=(upper@0.1 kv@0.2 chat@0.2)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
sp_start python "$@"
sp_wit
python="${PYTHON:-python3}"

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
        say "installing python3-venv (Debian package)"
        sp_apt_install python3-venv
    fi
    say "installing componentize-py $COMPONENTIZE_PY_VERSION (PyPI) into $venv"
    PYTHON="$python" sp_venv "$venv" --only-binary=:all: "componentize-py==$COMPONENTIZE_PY_VERSION"
    touch "$venv/.installed"
fi
version="$("$cpy" --version 2>/dev/null || true)"
case "$version" in
    *"$COMPONENTIZE_PY_VERSION"*) ;;
    *) fail "$cpy reports '$version', expected $COMPONENTIZE_PY_VERSION (delete $venv to reinstall)" ;;
esac
say "using $version from $venv"

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
for entry in "${PLUGINS[@]}"; do
    sp_plugin "$entry"
    src="$here/$plugin"
    [ -f "$src/app.py" ] || fail "no $src/app.py"
    dest="$out/$plugin-python.wasm"
    say "building $plugin (contract $contract) -> $dest"
    rm -rf "$work/$plugin"
    mkdir -p "$work/$plugin"
    cp "$src"/*.py "$work/$plugin/"
    if [ "$contract" = 0.2 ]; then
        cp "$here/sandport.py" "$work/$plugin/"
    fi
    # Into a temporary file first, then renamed: a host loading the plugin meanwhile sees the
    # old file or the new one, never half of one.
    partial="$out/.$plugin-python.wasm.partial"
    (cd "$work/$plugin" && "$cpy" --quiet -d "$plugin_wit" -w handler componentize app -o "$partial") \
        || { rm -f "$partial"; fail "componentize-py failed for $plugin"; }
    mv -f "$partial" "$dest"
    say "built $plugin-python.wasm ($(($(stat -c %s "$dest") / 1024)) KiB)"
done
say "done"
