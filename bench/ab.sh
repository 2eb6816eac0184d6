#!/usr/bin/env bash
# Two sandport binaries side by side, interleaved in one run: did a change make serving slower?
#
#   bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS]
#
# For each round, each mode (native echo, --isolation worker, --isolation message) and each
# binary in turn: start it with plugins/echo.wasm (2 workers), run sandport-load (16 connections,
# 64 B ping-pong) for SECS seconds after a 1 s warm-up, stop it. Prints the median msg/s and p99
# of each, and NEW/OLD. Build first: cargo build --release -p sandport -p sandport-bench.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="${1:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS]}"
new="${2:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS]}"
rounds="${3:-5}"
secs="${4:-5}"
load="${CARGO_TARGET_DIR:-$root/target}/release/sandport-load"
echo_wasm="$root/plugins/echo.wasm"
for f in "$old" "$new" "$load" "$echo_wasm"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "ab: $f is missing" >&2; exit 2; }
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run_one() { # BIN MODE -> one JSON report in $out
    local bin="$1" mode="$2" label="$3" extra=() log="$out/server.log" pid addr
    case "$mode" in
        native) extra=(--bench-native-echo) ;;
        *) extra=(--isolation "$mode") ;;
    esac
    RUST_LOG=info NO_COLOR=1 "$bin" --listen 127.0.0.1:0 --workers 2 --plugin "$echo_wasm" \
        "${extra[@]}" 2>"$log" &
    pid=$!
    for _ in $(seq 600); do
        addr="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}' || true)"
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "ab: $bin did not start:" >&2; cat "$log" >&2; exit 1; }
    "$load" --addr "$addr" --connections 16 --size 64 --warmup 1s --duration "${secs}s" \
        --quiet --json >>"$out/$label-$mode.jsonl"
    kill -INT "$pid"; wait "$pid" || true
}

for r in $(seq "$rounds"); do
    for mode in native worker message; do
        run_one "$old" "$mode" old
        run_one "$new" "$mode" new
    done
    echo "ab: round $r of $rounds done" >&2
done

python3 - "$out" "$rounds" "$secs" <<'EOF'
import json, statistics, sys
out, rounds, secs = sys.argv[1:]
def med(label, mode, key):
    rows = [json.loads(l) for l in open(f"{out}/{label}-{mode}.jsonl")]
    if any(r["errors"] and any(v for v in r["errors"].values()) for r in rows):
        print(f"ab: errors in {label} {mode}: {[r['errors'] for r in rows]}", file=sys.stderr)
    vals = [r["msgs_per_sec"] if key == "rate" else r["latency_us"]["p99"] for r in rows]
    return statistics.median(vals), min(vals), max(vals)
print(f"{rounds} rounds x {secs} s, 16 connections, 64 B ping-pong, 2 workers, interleaved")
print("| mode | old msg/s (min-max) | new msg/s (min-max) | new/old | old p99 µs | new p99 µs |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for mode in ["native", "worker", "message"]:
    (o, olo, ohi), (n, nlo, nhi) = med("old", mode, "rate"), med("new", mode, "rate")
    op, np_ = med("old", mode, "p99")[0], med("new", mode, "p99")[0]
    print(f"| {mode} | {o:,.0f} ({olo:,.0f}-{ohi:,.0f}) | {n:,.0f} ({nlo:,.0f}-{nhi:,.0f}) "
          f"| {n/o:.2f}x | {op:.0f} | {np_:.0f} |")
EOF
