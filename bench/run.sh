#!/usr/bin/env bash
# sandport's benchmark suite (issue 4): builds everything in release mode, runs every scenario
# with the compared servers interleaved, and writes BENCHMARKS.md in the repository root.
#
#   bench/run.sh                  the full run (about 25 minutes, 10 of them the soak), then
#                                 BENCHMARKS.md
#   bench/run.sh --smoke          a tiny run that only proves everything works (CI); exits
#                                 non-zero on any failure; writes target/bench-smoke/BENCHMARKS.md
#   bench/run.sh --only echo,c10k only some scenarios (echo, large, tpc, c10k, startup, fanout, redis, languages,
#                                 swap, tls,
#                                 soak, micro); --soak-secs N shortens the soak
#
# Options of this script (the others go to bench-suite, see `bench-suite --help`):
#   --all-plugins   build every plugin with `cargo xtask plugins` (Python and JS included, for the
#                   start-up scenario) instead of only the Rust echo.wasm; implied by a full run
#                   with the languages scenario
#   --no-build      use the binaries and plugins already built
#   --no-micro      skip the criterion microbenchmarks (cargo bench -p sandport --bench call_path
#                   and --bench state, which starts a redis-server of its own for `redis://`)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
command_line="bench/run.sh${*:+ $*}"

smoke=0 all_plugins=0 build=1 micro=1
suite_args=()
for arg in "$@"; do
    case "$arg" in
        --smoke) smoke=1; suite_args+=("$arg") ;;
        --all-plugins) all_plugins=1 ;;
        --no-build) build=0 ;;
        --no-micro) micro=0 ;;
        *) suite_args+=("$arg") ;;
    esac
done
# `--only` without micro: no criterion run either.
only=""
for ((i = 0; i < ${#suite_args[@]}; i++)); do
    case "${suite_args[$i]}" in
        --only) only="${suite_args[$((i + 1))]:-}" ;;
        --only=*) only="${suite_args[$i]#--only=}" ;;
    esac
done
if [ -n "$only" ] && [[ ",$only," != *",micro,"* ]]; then
    micro=0
fi
# The languages scenario runs every language's example: a full run builds them all (a smoke run
# uses those `cargo xtask test` built, and fails naming any that is missing).
if [ "$smoke" = 0 ] && { [ -z "$only" ] || [[ ",$only," == *",languages,"* ]]; }; then
    all_plugins=1
fi

say() { echo "bench: $*" >&2; }

# 10,000 connections with both ends on this machine: ~10,000 open files in each process.
hard="$(ulimit -Hn)"
if [ "$hard" = unlimited ] || [ "$hard" -gt 65536 ]; then
    hard=65536
fi
ulimit -n "$hard" || true
if [ "$smoke" = 0 ] && [ "$(ulimit -n)" -lt 10200 ]; then
    say "warning: the open-file limit is $(ulimit -n); the 10,000-connection scenario needs about 10,200"
fi

started="$(date +%s)"
target_dir="${CARGO_TARGET_DIR:-$root/target}"

if [ "$build" = 1 ]; then
    say "building sandport and the bench tools (release)"
    cargo build --release -p sandport -p sandport-bench
    if [ "$all_plugins" = 1 ]; then
        say "building every plugin (cargo xtask plugins)"
        cargo xtask plugins
    else
        say "building plugins/echo.wasm, plugins/chat.wasm and tests/plugins/statebench.wasm"
        rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2 \
            || rustup target add wasm32-wasip2
        guest_target="${CARGO_TARGET_DIR:-$root/guest-plugins/target}"
        if cargo build --release --target wasm32-wasip2 \
            --manifest-path guest-plugins/Cargo.toml -p echo -p chat; then
            mkdir -p plugins
            cp "$guest_target/wasm32-wasip2/release/echo.wasm" plugins/echo.wasm
            cp "$guest_target/wasm32-wasip2/release/chat.wasm" plugins/chat.wasm
            # The contract 0.2 echo (and state benchmark) of the echo and micro scenarios.
            cargo build --release --target wasm32-wasip2 \
                --manifest-path guest-plugins/Cargo.toml -p statebench
            mkdir -p tests/plugins
            cp "$guest_target/wasm32-wasip2/release/statebench.wasm" tests/plugins/statebench.wasm
        elif [ -f plugins/echo.wasm ]; then
            say "warning: building echo.wasm failed; using the plugins/echo.wasm already there"
        else
            say "error: cannot build plugins/echo.wasm"
            exit 1
        fi
    fi
fi

if [ "$micro" = 1 ]; then
    if [ "$smoke" = 1 ]; then
        say "microbenchmarks, once each (cargo bench -- --test)"
        cargo bench -p sandport --bench call_path -- --test
        cargo bench -p sandport --bench state -- --test
    else
        say "microbenchmarks (cargo bench -p sandport --bench call_path, --bench state)"
        cargo bench -p sandport --bench call_path
        cargo bench -p sandport --bench state
    fi
fi

exec "$target_dir/release/bench-suite" --root "$root" --command "$command_line" \
    --micro-since "$started" "${suite_args[@]}"
