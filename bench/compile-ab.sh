#!/usr/bin/env bash
# What an unbounded background compile would cost the workers (issue 11): p99 of 64 ping-pong
# connections against `sandport --plugin plugins/upper.wasm --workers 2`, steady, then while a
# separate process compiles the 18 MB tests/plugins/upper-python.wasm with wasmtime's default
# parallel compilation at nice 0 (`sandport check --no-cache`). The reloader itself compiles on
# one thread at nice 10: compare with the swap scenario of bench-suite (`--only swap`).
#
#   bench/compile-ab.sh [BIN_DIR]     BIN_DIR holds sandport and sandport-load (default
#                                     ${CARGO_TARGET_DIR:-target}/release); 2 rounds, 15 s each
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bin="${1:-${CARGO_TARGET_DIR:-$root/target}/release}"
port=17041
"$bin/sandport" --plugin "$root/plugins/upper.wasm" --workers 2 --listen "127.0.0.1:$port" \
    2>/dev/null &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT
sleep 2
load() {
    "$bin/sandport-load" --addr "127.0.0.1:$port" --connections 64 --size 64 --upper \
        --duration 15s --warmup 1s --json --quiet |
        python3 -c "import json,sys; r=json.load(sys.stdin); l=r['latency_us']; \
print(f\"$1: {r['msgs_per_sec']:.0f} msg/s, p50 {l['p50']:.0f} us, p99 {l['p99']:.0f} us\")"
}
for round in 1 2; do
    load "round $round, steady"
    (sleep 1; start=$(date +%s.%N)
     "$bin/sandport" check "$root/tests/plugins/upper-python.wasm" --no-cache >/dev/null 2>&1
     echo "round $round, the unbounded compile took $(echo "$(date +%s.%N) - $start" | bc) s") &
    compile=$!
    load "round $round, while compiling unbounded"
    wait $compile
done
