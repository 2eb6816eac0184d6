#!/usr/bin/env bash
# Builds the Zig plugins as plain core WebAssembly modules (the sandport core-module ABI,
# docs/core-abi.md): `upper` -> OUT_DIR/upper-zig.wasm.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/zig/build.sh OUT_DIR
# Zig comes from PyPI (package `ziglang`, pinned below), installed once into a virtualenv under
# $SANDPORT_TOOLS (default: ~/.cache/sandport/tools, as for `cargo xtask plugins`).
set -euo pipefail

ZIG_VERSION="0.15.2"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
sp_start zig "$@"
venv="$tools/zig-$ZIG_VERSION"

zig() { "$venv/bin/python" -m ziglang "$@"; }

if [ "$(zig version 2>/dev/null || true)" != "$ZIG_VERSION" ]; then
    say "installing Zig $ZIG_VERSION (PyPI ziglang==$ZIG_VERSION) into $venv"
    sp_venv "$venv" "ziglang==$ZIG_VERSION"
    [ "$(zig version)" = "$ZIG_VERSION" ] \
        || fail "installed zig reports $(zig version), expected $ZIG_VERSION"
fi
say "using Zig $(zig version) from $venv"

# Zig's caches go to the tools folder, not into the source tree.
export ZIG_GLOBAL_CACHE_DIR="$tools/cache/zig-$ZIG_VERSION/global"
export ZIG_LOCAL_CACHE_DIR="$tools/cache/zig-$ZIG_VERSION/local"

for plugin in upper; do
    say "building $plugin -> $out/$plugin-zig.wasm"
    # wasm32-freestanding: no WASI needed. -fno-entry: a library-like module without `_start`;
    # -rdynamic: every `export fn` becomes a Wasm export. ReleaseSafe keeps the safety checks
    # (a failed one traps), -fstrip drops the debug sections.
    (cd "$here/$plugin" && zig build-exe "$plugin.zig" \
        -target wasm32-freestanding -fno-entry -rdynamic -O ReleaseSafe -fstrip \
        -femit-bin="$out/$plugin-zig.wasm") \
        || fail "building $plugin failed"
done
say "done"
