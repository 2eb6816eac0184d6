#!/usr/bin/env bash
# Two sandport binaries side by side, interleaved in one run: did a change make serving slower?
#
#   bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS] [CASES]
#
# For each round, each case and each binary in turn: start it (2 workers), run sandport-load
# (16 connections, 64 B ping-pong) for SECS seconds after a 1 s warm-up, stop it. Prints the
# median msg/s and p99 of each, and NEW/OLD. Build first:
# cargo build --release -p sandport -p sandport-bench.
#
# OLD runs the plugins of the checkout at $AB_OLD_ROOT when it is set (default: this one), so
# that a change to how a plugin is built is measured with each side's own build.
#
# CASES: `echo` (default): plugins/echo.wasm as the native echo, under `worker` and `message`.
# `languages`: issue 10's scenario, the default `message` isolation for the Rust echo (with the
# native echo beside it) and the Python, JavaScript and Go `upper` examples (replies checked).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
old="${1:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS]}"
new="${2:?usage: bench/ab.sh OLD_BIN NEW_BIN [ROUNDS] [SECS]}"
rounds="${3:-5}"
secs="${4:-5}"
case "${5:-echo}" in # label plugin mode sandport-load flags
    echo) cases=("native plugins/echo.wasm native -" "worker plugins/echo.wasm worker -"
                 "message plugins/echo.wasm message -") ;;
    languages) cases=("rust-native plugins/echo.wasm native -"
                      "rust-message plugins/echo.wasm message -"
                      "python-message tests/plugins/upper-python.wasm message --upper"
                      "javascript-message tests/plugins/upper-js.wasm message --upper"
                      "go-message tests/plugins/upper-go.wasm message --upper") ;;
    *) echo "ab: CASES is echo or languages" >&2; exit 2 ;;
esac
load="${CARGO_TARGET_DIR:-$root/target}/release/sandport-load"
for f in "$old" "$new" "$load"; do
    [ -x "$f" ] || [ -f "$f" ] || { echo "ab: $f is missing" >&2; exit 2; }
done
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT

run_one() { # BIN LABEL CASE -> one JSON report in $out
    local bin="$1" label="$2" name plugin mode flags extra=() log="$out/server.log" pid addr
    local base="$root"
    [ "$label" = old ] && base="${AB_OLD_ROOT:-$root}"
    read -r name plugin mode flags <<<"$3"
    [ "$flags" = - ] && flags=""
    case "$mode" in
        native) extra=(--bench-native-echo) ;;
        *) extra=(--isolation "$mode") ;;
    esac
    [ -f "$base/$plugin" ] || { echo "ab: $base/$plugin is missing" >&2; exit 2; }
    RUST_LOG=info NO_COLOR=1 "$bin" --listen 127.0.0.1:0 --workers 2 --plugin "$base/$plugin" \
        "${extra[@]}" 2>"$log" &
    pid=$!
    for _ in $(seq 3600); do # the first start compiles the plugin (a minute for Python)
        addr="$(grep -o 'listening on [0-9.:]*' "$log" | awk '{print $3}' || true)"
        [ -n "$addr" ] && break
        sleep 0.05
    done
    [ -n "$addr" ] || { echo "ab: $bin did not start:" >&2; cat "$log" >&2; exit 1; }
    # shellcheck disable=SC2086 # $flags is a list of flags
    "$load" --addr "$addr" --connections 16 --size 64 --warmup 1s --duration "${secs}s" \
        $flags --quiet --json >>"$out/$label-$name.jsonl"
    kill -INT "$pid"; wait "$pid" || true
}

for r in $(seq "$rounds"); do
    for case in "${cases[@]}"; do
        run_one "$old" old "$case"
        run_one "$new" new "$case"
    done
    echo "ab: round $r of $rounds done" >&2
done

names=""
for case in "${cases[@]}"; do names="$names ${case%% *}"; done
python3 - "$out" "$rounds" "$secs" $names <<'EOF'
import json, statistics, sys
out, rounds, secs, *names = sys.argv[1:]
def med(label, mode, key):
    rows = [json.loads(l) for l in open(f"{out}/{label}-{mode}.jsonl")]
    if any(r["errors"] and any(v for v in r["errors"].values()) for r in rows):
        print(f"ab: errors in {label} {mode}: {[r['errors'] for r in rows]}", file=sys.stderr)
    vals = [r["msgs_per_sec"] if key == "rate" else r["latency_us"]["p99"] for r in rows]
    return statistics.median(vals), min(vals), max(vals)
print(f"{rounds} rounds x {secs} s, 16 connections, 64 B ping-pong, 2 workers, interleaved")
print("| case | old msg/s (min-max) | new msg/s (min-max) | new/old | old p99 µs | new p99 µs |")
print("| --- | ---: | ---: | ---: | ---: | ---: |")
for mode in names:
    (o, olo, ohi), (n, nlo, nhi) = med("old", mode, "rate"), med("new", mode, "rate")
    op, np_ = med("old", mode, "p99")[0], med("new", mode, "p99")[0]
    print(f"| {mode} | {o:,.0f} ({olo:,.0f}-{ohi:,.0f}) | {n:,.0f} ({nlo:,.0f}-{nhi:,.0f}) "
          f"| {n/o:.2f}x | {op:.0f} | {np_:.0f} |")
if "rust-native" in names and "rust-message" in names:
    for label in ["old", "new"]:
        ratio = med(label, "rust-message", "rate")[0] / med(label, "rust-native", "rate")[0]
        print(f"{label}: Rust echo under message / native {ratio:.2f}x")
EOF
