#!/usr/bin/env bash
# Builds the AssemblyScript plugins as plain core WebAssembly modules (the sandport core-module
# ABI, docs/core-abi.md): `upper` -> OUT_DIR/upper-assemblyscript.wasm.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/assemblyscript/build.sh OUT_DIR
# The compiler comes from npm (package `assemblyscript`, pinned below), installed once under
# $SANDPORT_TOOLS (default: ~/.cache/sandport/tools, as for `cargo xtask plugins`). Needs Node.js
# (>= 18); installed from Debian's packages when missing.
set -euo pipefail

AS_VERSION="0.28.20"

out="${1:?usage: build.sh OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}"
prefix="$tools/assemblyscript-$AS_VERSION"
mkdir -p "$out" "$tools"
out="$(cd "$out" && pwd)"

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "assemblyscript: installing Node.js and npm (Debian packages nodejs, npm)"
    sudo=""
    if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
    $sudo apt-get install -y --no-install-recommends nodejs npm >/dev/null \
        || { $sudo apt-get update -qq && $sudo apt-get install -y --no-install-recommends nodejs npm >/dev/null; } \
        || { echo "assemblyscript: error: cannot install nodejs/npm with apt-get" >&2; exit 1; }
fi

asc_pkg="$prefix/node_modules/assemblyscript"
installed="$(node -p "require('$asc_pkg/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$AS_VERSION" ]; then
    echo "assemblyscript: installing AssemblyScript $AS_VERSION (npm assemblyscript@$AS_VERSION) into $prefix"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "assemblyscript@$AS_VERSION" \
        || { echo "assemblyscript: error: npm install assemblyscript@$AS_VERSION failed" >&2; exit 1; }
    installed="$(node -p "require('$asc_pkg/package.json').version")"
    [ "$installed" = "$AS_VERSION" ] \
        || { echo "assemblyscript: error: installed $installed, expected $AS_VERSION" >&2; exit 1; }
fi
echo "assemblyscript: using AssemblyScript $installed from $prefix (node $(node --version))"

for plugin in upper; do
    echo "assemblyscript: building $plugin -> $out/$plugin-assemblyscript.wasm"
    # --runtime incremental: TLSF allocator + automatic GC (no runtime exports without
    # --exportRuntime). --use abort=index/onAbort: our own abort handler instead of the
    # `env.abort` import, which the host would refuse.
    (cd "$here/$plugin" && node "$asc_pkg/bin/asc.js" index.ts \
        -O3 --runtime incremental --use abort=index/onAbort \
        -o "$out/$plugin-assemblyscript.wasm") \
        || { echo "assemblyscript: error: building $plugin failed" >&2; exit 1; }
done
echo "assemblyscript: done"
