#!/usr/bin/env bash
# Builds the C plugins (every folder beside this script that holds `*.c` files) into
# WebAssembly components: OUT_DIR/<plugin>-c.wasm.
#
#   bash guest-plugins/c/build.sh OUT_DIR      (from the repository root; `cargo xtask plugins`
#                                              runs it with SANDPORT_TOOLS and SANDPORT_WIT set)
#
# Toolchain (pinned; installed once, then reused):
#   - Debian's clang-14, lld-14 (wasm-ld), wasi-libc and libclang-rt-14-dev-wasm32 (compiler-rt
#     builtins for wasm32), with apt-get, when missing;
#   - wit-bindgen-cli 0.61.1 (`wit-bindgen c`: C bindings for wit/handler.wit) and wasm-tools
#     1.258.3 (`wasm-tools component new`), with `cargo install --locked`, into $SANDPORT_TOOLS;
#   - the WASI preview 1 reactor adapter of wasmtime 48.0.8, written out of the crates.io crate
#     `wasi-preview1-component-adapter-provider` by a tiny helper crate, into $SANDPORT_TOOLS.
#
# Per plugin: `wit-bindgen c` generates handler.{c,h} and handler_component_type.o, clang compiles
# and links a wasm32-wasi (preview 1) reactor module, and `wasm-tools component new` wraps it
# with the adapter (which turns its preview 1 imports into WASI 0.2 ones) into a component.
set -euo pipefail

WIT_BINDGEN_VERSION=0.61.1
WASM_TOOLS_VERSION=1.258.3
ADAPTER_VERSION=48.0.8
APT_PACKAGES=(clang-14 lld-14 wasi-libc libclang-rt-14-dev-wasm32)
CLANG=clang-14

say() { echo "c: $*"; }
die() {
    echo "c: error: $*" >&2
    exit 1
}

[ $# -eq 1 ] || die "usage: bash guest-plugins/c/build.sh OUT_DIR"
OUT_DIR=$1
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# Set by `cargo xtask plugins`; by hand, the same defaults as xtask's.
SANDPORT_TOOLS=${SANDPORT_TOOLS:-${XDG_CACHE_HOME:-$HOME/.cache}/sandport/tools}
SANDPORT_WIT=${SANDPORT_WIT:-$HERE/../../wit}
[ -f "$SANDPORT_WIT/handler.wit" ] || die "no handler.wit in SANDPORT_WIT=$SANDPORT_WIT"
CARGO=${CARGO:-cargo}
mkdir -p "$OUT_DIR" "$SANDPORT_TOOLS"
OUT_DIR=$(cd "$OUT_DIR" && pwd)
SANDPORT_TOOLS=$(cd "$SANDPORT_TOOLS" && pwd)

# One build at a time per tools folder: the installs below are not safe to run twice at once.
exec 9>"$SANDPORT_TOOLS/.c-build.lock"
flock 9

# --- Debian packages ---------------------------------------------------------------------------
missing=()
for package in "${APT_PACKAGES[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed'; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    [ "$(id -u)" -eq 0 ] || die "not root: install them with \`sudo apt-get install ${missing[*]}\`"
    # A fresh machine may have no package lists yet.
    if ! apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null; then
        apt-get update -qq || die "apt-get update failed"
        apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null ||
            die "apt-get install ${missing[*]} failed"
    fi
fi
command -v "$CLANG" >/dev/null || die "$CLANG not found after installing ${APT_PACKAGES[*]}"
say "clang: $(dpkg-query -W -f='${Package} ${Version}' clang-14), $(dpkg-query -W -f='${Package} ${Version}' wasi-libc)"

# --- Tools from crates.io ----------------------------------------------------------------------
# `cargo install` into a `.partial` folder renamed when complete, so that an interrupted install
# is redone rather than half used. Both installs share one build folder (common dependencies
# are compiled once), deleted afterwards.
CARGO_BUILD_DIR="$SANDPORT_TOOLS/.c-cargo-build"
install_crate() { # crate version binary dir [cargo install flags...]
    local crate=$1 version=$2 binary=$3 dir=$4
    shift 4
    if [ -x "$dir/bin/$binary" ]; then
        return
    fi
    say "installing $crate $version into $dir (cargo install, compiles for a few minutes)"
    command -v "$CARGO" >/dev/null || die "cargo not found: it installs $crate"
    rm -rf "$dir.partial"
    local start=$SECONDS
    CARGO_TARGET_DIR="$CARGO_BUILD_DIR" "$CARGO" install --quiet --locked --root "$dir.partial" \
        "$@" "$crate@$version" || die "cargo install $crate@$version failed"
    rm -f "$dir.partial/.crates.toml" "$dir.partial/.crates2.json"
    rm -rf "$dir"
    mv "$dir.partial" "$dir"
    say "installed $crate $version in $((SECONDS - start)) s"
}
WIT_BINDGEN_DIR="$SANDPORT_TOOLS/wit-bindgen-cli-$WIT_BINDGEN_VERSION-c"
WASM_TOOLS_DIR="$SANDPORT_TOOLS/wasm-tools-$WASM_TOOLS_VERSION-component"
# Only the generators and subcommands used here: far less to compile than the defaults.
install_crate wit-bindgen-cli "$WIT_BINDGEN_VERSION" wit-bindgen "$WIT_BINDGEN_DIR" \
    --no-default-features --features c
install_crate wasm-tools "$WASM_TOOLS_VERSION" wasm-tools "$WASM_TOOLS_DIR" \
    --no-default-features --features component
rm -rf "$CARGO_BUILD_DIR"
WIT_BINDGEN="$WIT_BINDGEN_DIR/bin/wit-bindgen"
WASM_TOOLS="$WASM_TOOLS_DIR/bin/wasm-tools"
say "$("$WIT_BINDGEN" --version), $("$WASM_TOOLS" --version)"

# --- The WASI preview 1 adapter ----------------------------------------------------------------
# crates.io ships it inside `wasi-preview1-component-adapter-provider` (as a byte constant); a
# three-line program writes those bytes to a file.
ADAPTER_DIR="$SANDPORT_TOOLS/wasi-preview1-adapter-$ADAPTER_VERSION"
ADAPTER="$ADAPTER_DIR/wasi_snapshot_preview1.reactor.wasm"
if [ ! -s "$ADAPTER" ]; then
    say "writing out the WASI preview 1 reactor adapter $ADAPTER_VERSION"
    helper="$ADAPTER_DIR/extract"
    rm -rf "$helper"
    mkdir -p "$helper/src"
    cat >"$helper/Cargo.toml" <<EOF
[package]
name = "extract-wasi-adapter"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
wasi-preview1-component-adapter-provider = "=$ADAPTER_VERSION"

[workspace]
EOF
    cat >"$helper/src/main.rs" <<'EOF'
fn main() {
    let out = std::env::args_os().nth(1).expect("usage: extract-wasi-adapter OUT");
    let adapter = wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;
    std::fs::write(out, adapter).expect("write the adapter");
}
EOF
    CARGO_TARGET_DIR="$helper/target" "$CARGO" run --quiet --manifest-path "$helper/Cargo.toml" \
        -- "$ADAPTER.partial" || die "extracting the adapter from the crate failed"
    mv "$ADAPTER.partial" "$ADAPTER"
    rm -rf "$helper"
fi

# --- The plugins -------------------------------------------------------------------------------
BUILD="$SANDPORT_TOOLS/build/c"
built=0
for dir in "$HERE"/*/; do
    dir=${dir%/}
    plugin=$(basename "$dir")
    sources=("$dir"/*.c)
    [ -e "${sources[0]}" ] || continue
    out="$OUT_DIR/$plugin-c.wasm"
    say "building $plugin -> $out"
    work="$BUILD/$plugin"
    rm -rf "$work"
    mkdir -p "$work/gen"
    # (It lists the files it writes on stderr: shown only when it fails.)
    if ! log=$("$WIT_BINDGEN" c --out-dir "$work/gen" --world handler "$SANDPORT_WIT" 2>&1); then
        echo "$log" >&2
        die "$plugin: wit-bindgen c failed"
    fi
    # The generated bindings, without -Werror (not our code); then the plugin's own sources
    # with every warning an error; then a reactor module (no `main`, `_initialize` runs the C
    # constructors), without names and debug sections (the component type section stays).
    common=(--target=wasm32-wasi -Os -I "$work/gen")
    "$CLANG" "${common[@]}" -c "$work/gen/handler.c" -o "$work/handler.o" ||
        die "$plugin: compiling the generated bindings failed"
    "$CLANG" "${common[@]}" -std=c11 -Wall -Wextra -Werror "${sources[@]}" "$work/handler.o" \
        "$work/gen/handler_component_type.o" -mexec-model=reactor -Wl,--strip-all \
        -o "$work/core.wasm" ||
        die "$plugin: compiling/linking failed"
    "$WASM_TOOLS" component new "$work/core.wasm" \
        --adapt "wasi_snapshot_preview1=$ADAPTER" -o "$work/component.wasm" ||
        die "$plugin: wasm-tools component new failed"
    # Through a rename, so that a host loading the plugin meanwhile never sees half a file.
    cp "$work/component.wasm" "$out.partial"
    mv "$out.partial" "$out"
    say "built $plugin: core module $(stat -c %s "$work/core.wasm") bytes," \
        "component $(stat -c %s "$out") bytes"
    built=$((built + 1))
done
[ "$built" -gt 0 ] || die "no C plugin found in $HERE"
