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

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
sp_start assemblyscript "$@"
prefix="$tools/assemblyscript-$AS_VERSION"

sp_need_node

asc_pkg="$prefix/node_modules/assemblyscript"
installed="$(node -p "require('$asc_pkg/package.json').version" 2>/dev/null || true)"
if [ "$installed" != "$AS_VERSION" ]; then
    say "installing AssemblyScript $AS_VERSION (npm assemblyscript@$AS_VERSION) into $prefix"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    npm install --prefix "$prefix" --no-audit --no-fund --loglevel=error "assemblyscript@$AS_VERSION" \
        || fail "npm install assemblyscript@$AS_VERSION failed"
    installed="$(node -p "require('$asc_pkg/package.json').version")"
    [ "$installed" = "$AS_VERSION" ] \
        || fail "installed $installed, expected $AS_VERSION"
fi
say "using AssemblyScript $installed from $prefix (node $(node --version))"

for plugin in upper; do
    say "building $plugin -> $out/$plugin-assemblyscript.wasm"
    # --runtime incremental: TLSF allocator + automatic GC (no runtime exports without
    # --exportRuntime). --use abort=index/onAbort: our own abort handler instead of the
    # `env.abort` import, which the host would refuse.
    (cd "$here/$plugin" && node "$asc_pkg/bin/asc.js" index.ts \
        -O3 --runtime incremental --use abort=index/onAbort \
        -o "$out/$plugin-assemblyscript.wasm") \
        || fail "building $plugin failed"
done
say "done"
