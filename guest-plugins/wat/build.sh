#!/usr/bin/env bash
# Builds the WAT (hand-written WebAssembly text) plugins: `upper` -> OUT_DIR/upper-wat.wasm.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/wat/build.sh OUT_DIR
# The assembler is wat2wasm from Debian's `wabt` package (installed with apt when missing).
set -euo pipefail

out="${1:?usage: build.sh OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
mkdir -p "$out"

# Pinned assembler: Debian bookworm's wabt (1.0.32). Any wabt >= 1.0.30 assembles these files.
WABT_VERSION="1.0.32"

if ! command -v wat2wasm >/dev/null 2>&1; then
    echo "wat: installing wat2wasm (Debian package wabt, expected $WABT_VERSION)"
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "wat: error: wat2wasm is missing and there is no apt-get to install wabt" >&2
        exit 1
    fi
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    if ! $sudo apt-get install -y --no-install-recommends wabt >/dev/null; then
        echo "wat: apt-get install wabt failed; updating the package lists and retrying"
        $sudo apt-get update -qq
        $sudo apt-get install -y --no-install-recommends wabt >/dev/null \
            || { echo "wat: error: cannot install wabt with apt-get" >&2; exit 1; }
    fi
fi
echo "wat: using $(command -v wat2wasm) $(wat2wasm --version)"

for plugin in upper; do
    echo "wat: assembling $plugin -> $out/$plugin-wat.wasm"
    wat2wasm "$here/$plugin/$plugin.wat" -o "$out/$plugin-wat.wasm" \
        || { echo "wat: error: wat2wasm failed on $plugin/$plugin.wat" >&2; exit 1; }
done
echo "wat: done"
