#!/usr/bin/env bash
# Builds the JavaScript plugins as WebAssembly components implementing the `handler` world of
# their contract, with componentize-js (which embeds the SpiderMonkey engine, through
# StarlingMonkey, into each component, with the script pre-initialised by wizer):
#   upper  (0.1.0, wit/handler.wit)      -> OUT_DIR/upper-js.wasm
#   router (0.1.0, wit/handler.wit)      -> OUT_DIR/router-js.wasm
#   chat   (0.2.0, wit/v0.2/handler.wit) -> OUT_DIR/chat-js.wasm
# A 0.2.0 plugin is built from a copy of its folder with sandport.js (the helper module beside
# this script) next to its source, which imports it as './sandport.js'.
#
# Usage (from the repository root, as `cargo xtask plugins` runs it):
#   bash guest-plugins/js/build.sh OUT_DIR
# componentize-js comes from npm, pinned with all its dependencies by package.json and
# package-lock.json beside this script, patched by componentize-js-0.23.0.patch, and
# installed once (`npm ci`) under $SANDPORT_TOOLS
# (default: ~/.cache/sandport/tools, as for `cargo xtask plugins`). Needs Node.js >= 18 and npm;
# installed from Debian's packages when missing. The WIT folder is $SANDPORT_WIT (default: wit/
# of this repository; contract 0.2.0 is its v0.2/ subfolder).
set -euo pipefail

COMPONENTIZE_JS_VERSION="0.23.0" # must match package.json and the patch's name
# Each plugin, and the contract it implements (see sp_plugin in ../lib.sh).
PLUGINS=(upper@0.1 router@0.1 chat@0.2)
# `http` and `fetch-event` (fetch() and the wasi:http handler) need wasi:http, which sandport does
# not provide: compiled out. The other features stay: `stdio` (console.log/console.error and
# uncaught exceptions become log lines of the host), `random` (Math.random, crypto), `clocks`
# (Date.now, timers); without the last two, Math.random would be deterministic and Date.now frozen
# at build time.
DISABLED_FEATURES=(http fetch-event)

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source "$here/../lib.sh"
sp_start js "$@"
sp_wit

grep -q "\"@bytecodealliance/componentize-js\": \"$COMPONENTIZE_JS_VERSION\"" "$here/package.json" \
    || fail "package.json does not pin @bytecodealliance/componentize-js $COMPONENTIZE_JS_VERSION"

# --- Node.js ---------------------------------------------------------------------------------
sp_need_node
node_major="$(node -p 'process.versions.node.split(".")[0]')"
[ "$node_major" -ge 18 ] || fail "node $(node --version) is too old: componentize-js needs Node.js >= 18"

# --- toolchain: componentize-js and its dependencies, exactly as package-lock.json says --------
# Keyed on the three files' contents only (not on where the checkout is), so that every checkout
# and worktree of the same lock file and patch shares one install.
patch_file="$here/componentize-js-$COMPONENTIZE_JS_VERSION.patch"
[ -f "$patch_file" ] || fail "no $patch_file"
lock_sum="$(cat "$here/package.json" "$here/package-lock.json" "$patch_file" | sha256sum | cut -c1-12)"
prefix="$tools/componentize-js-$COMPONENTIZE_JS_VERSION-$lock_sum"
cjs="$prefix/node_modules/@bytecodealliance/componentize-js/src/cli.js"
# The stamp is written last, so an interrupted install is redone from scratch.
if [ ! -f "$prefix/.installed" ]; then
    say "installing componentize-js $COMPONENTIZE_JS_VERSION (npm ci, package-lock.json) into $prefix"
    rm -rf "$prefix"
    mkdir -p "$prefix"
    cp "$here/package.json" "$here/package-lock.json" "$prefix/"
    npm ci --prefix "$prefix" --no-audit --no-fund --loglevel=error \
        || fail "npm ci of componentize-js $COMPONENTIZE_JS_VERSION failed"
    command -v patch >/dev/null 2>&1 || sp_apt_install patch
    patch --quiet --forward -p1 -d "$prefix/node_modules/@bytecodealliance/componentize-js" \
        <"$patch_file" || fail "cannot apply $patch_file"
    touch "$prefix/.installed"
fi
installed="$(node -p "require('$prefix/node_modules/@bytecodealliance/componentize-js/package.json').version" 2>/dev/null || true)"
[ "$installed" = "$COMPONENTIZE_JS_VERSION" ] \
    || fail "found componentize-js '$installed' in $prefix, expected $COMPONENTIZE_JS_VERSION (delete it to reinstall)"
say "using componentize-js $installed from $prefix (node $(node --version))"

# Temporary files of the build tools (componentize-js leaves its work folder behind when
# a build fails) go to a folder of our own, removed on exit.
export TMPDIR="$tools/tmp/js-$$"
rm -rf "$TMPDIR"
mkdir -p "$TMPDIR"
trap 'rm -rf "$TMPDIR"' EXIT

# --- plugins ---------------------------------------------------------------------------------
for entry in "${PLUGINS[@]}"; do
    sp_plugin "$entry"
    src="$here/$plugin/$plugin.js"
    [ -f "$src" ] || fail "no $src"
    dest="$out/$plugin-js.wasm"
    say "building $plugin (contract $contract) -> $dest"
    # componentize-js resolves the source's imports inside the folder it runs in (mapped as the
    # root of wizer's file system), so a 0.2.0 plugin is built in a folder holding its sources
    # and sandport.js side by side.
    workdir="$PWD"
    if [ "$contract" = 0.2 ]; then
        workdir="$TMPDIR/src/$plugin"
        rm -rf "$workdir"
        mkdir -p "$workdir"
        cp "$here/$plugin"/*.js "$here/sandport.js" "$workdir/"
        src="$workdir/$plugin.js"
    fi
    # Into a temporary file first, then renamed: a host loading the plugin meanwhile sees the
    # old file or the new one, never half of one.
    partial="$out/.$plugin-js.wasm.partial"
    rm -f "$partial"
    # The patch's options (docs/plugins/js.md, "Toolchain"), all for speed: the bindings get
    # warm-bindings.js (see there why), their glue awaits a handler's value only when it is a
    # promise, and it no longer calls a debug logger that never logs.
    (cd "$workdir" && node "$cjs" "$src" --wit "$plugin_wit" --world-name handler \
        --disable "${DISABLED_FEATURES[@]}" --append-bindings "$here/warm-bindings.js" \
        --await-only-thenables --strip-debug-log --out "$partial") \
        || { rm -f "$partial"; fail "componentize-js failed for $plugin"; }
    [ -s "$partial" ] || fail "componentize-js wrote no component for $plugin"
    mv -f "$partial" "$dest"
    say "built $plugin-js.wasm ($(($(stat -c %s "$dest") / 1024)) KiB)"
done
say "done"
