#!/usr/bin/env bash
# Instruction-count profiles of sandport's per-message cost, with `valgrind --tool=callgrind`:
# counts are repeatable where timings on a shared 2-core machine are not. Each figure is the
# difference between a run of N and one of 2N messages, divided by N, so start-up (loading and
# compiling the plugin, connecting) cancels out.
#
#   bench/profile.sh               both parts below, then a summary on stdout
#   bench/profile.sh calls         the call path alone (host/benches/call_count.rs): one
#                                  `WorkerPool::on_message` per message, for each case
#   bench/profile.sh server        the whole server (every thread, user space) per echoed
#                                  message: --bench-native-echo, --isolation worker and message
#                                  (not connection: under valgrind the pool cannot reserve 4 GiB
#                                  of address space per connection's memory, and per message it
#                                  runs the same reused-instance path as worker)
#
# Output goes to target/profile/: `<case>.txt` is callgrind_annotate's inclusive listing of the
# 2N run, restricted to the measured loop for `calls`. Needs valgrind (Debian's package) and
# plugins/echo.wasm (`cargo xtask plugins`, or bench/run.sh).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
what="${1:-all}"
case "$what" in
    all | calls | server) ;;
    *) echo "usage: bench/profile.sh [calls|server]" >&2; exit 2 ;;
esac
command -v valgrind >/dev/null || { echo "profile: valgrind is not installed (apt-get install valgrind)" >&2; exit 1; }
[ -f plugins/echo.wasm ] || { echo "profile: plugins/echo.wasm is missing: run cargo xtask plugins" >&2; exit 1; }

target_dir="${CARGO_TARGET_DIR:-$root/target}"
out="$target_dir/profile"
mkdir -p "$out"
say() { echo "profile: $*" >&2; }

# Instructions counted by a callgrind run: `collected FILE`.
collected() { grep -m1 '^summary:' "$1" | awk '{print $2}'; }
per_message() { python3 -c "import sys; a, b, n = map(int, sys.argv[1:]); print(round((b - a) / n))" "$@"; }

summary=()

if [ "$what" != server ]; then
    say "building host/benches/call_count.rs (release, with line tables)"
    cargo build --release -p sandport --bench call_count --message-format=json-render-diagnostics \
        >"$out/build.json"
    bin="$(python3 -c '
import json, sys
for line in open(sys.argv[1]):
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "call_count" and m.get("executable"):
        print(m["executable"])' "$out/build.json" | tail -1)"
    n=2000
    for case in "component_reused 64" "component_reused 1024" "core_reused 64" "component_fresh 64" "core_fresh 64" "v2_component_reused 64" "v2_component_fresh 64" "v2_state_16_ops 64" "native_echo 64"; do
        set -- $case
        name="$1-$2"
        # Once unprofiled, so both profiled runs find the plugin in the compile cache.
        "$bin" "$1" "$2" 10 >/dev/null
        for calls in "$n" "$((2 * n))"; do
            valgrind --tool=callgrind --toggle-collect='call_count::run' \
                --callgrind-out-file="$out/$name.$calls.cg" "$bin" "$1" "$2" "$calls" 2>/dev/null
        done
        per="$(per_message "$(collected "$out/$name.$n.cg")" "$(collected "$out/$name.$((2 * n)).cg")" "$n")"
        callgrind_annotate --inclusive=yes "$out/$name.$((2 * n)).cg" >"$out/$name.txt" 2>/dev/null
        summary+=("call  $name: $per instructions per call")
        say "${summary[-1]}"
    done
fi

if [ "$what" != calls ]; then
    say "building sandport and sandport-load (release)"
    cargo build --release -p sandport -p sandport-bench
    n=5000
    for mode in native worker message; do
        if [ "$mode" = native ]; then args=(--bench-native-echo); else args=(--isolation "$mode"); fi
        counts=()
        # A first run of 100 messages, not counted, leaves the compiled plugin in the cache.
        for msgs in 100 "$n" "$((2 * n))"; do
            port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
            valgrind --tool=callgrind --callgrind-out-file="$out/server-$mode.$msgs.cg" \
                "$target_dir/release/sandport" --listen "127.0.0.1:$port" --workers 2 \
                --plugin plugins/echo.wasm --max-connections 64 "${args[@]}" >"$out/server-$mode.log" 2>&1 &
            pid=$!
            for _ in $(seq 300); do
                grep -q "listening" "$out/server-$mode.log" && break
                kill -0 "$pid" 2>/dev/null || { say "the server failed: $out/server-$mode.log"; exit 1; }
                sleep 0.2
            done
            "$target_dir/release/sandport-load" --addr "127.0.0.1:$port" --connections 16 \
                --messages "$msgs" --warmup 0 --timeout 30s --strict --quiet >/dev/null
            kill -INT "$pid"
            wait "$pid" || true
            [ "$msgs" = 100 ] || counts+=("$(collected "$out/server-$mode.$msgs.cg")")
        done
        per="$(per_message "${counts[0]}" "${counts[1]}" "$n")"
        callgrind_annotate --inclusive=yes "$out/server-$mode.$((2 * n)).cg" >"$out/server-$mode.txt" 2>/dev/null
        summary+=("server $mode: $per user-space instructions per message (16 connections, 64 B)")
        say "${summary[-1]}"
    done
fi

printf '%s\n' "${summary[@]}"
