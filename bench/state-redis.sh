#!/usr/bin/env bash
# What the redis:// state backend costs a host, against memory: sandport serving `statebench`
# with OPS state calls per message (half sets, half gets of a 64-byte value), driven by
# sandport-load, the backends interleaved for ROUNDS rounds (a shared machine's noise then hits
# both), with a redis-server of its own on a free loopback port. Prints one line per run:
# messages/s and reply latency percentiles in microseconds.
#
# usage: bench/state-redis.sh [OPS (2)] [CONNECTIONS (16)] [DURATION (5s)] [ROUNDS (2)]
set -euo pipefail
cd "$(dirname "$0")/.."
ops="${1:-2}" conns="${2:-16}" duration="${3:-5s}" rounds="${4:-2}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p sandport -p sandport-bench --bins
plugin=tests/plugins/statebench.wasm
[ -f "$plugin" ] || { echo "missing $plugin: run cargo xtask plugins" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
    >/dev/null &
redis_pid=$!
pids=("$redis_pid")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done

for state in $(for _ in $(seq "$rounds"); do echo memory "redis://127.0.0.1:$redis_port"; done); do
    port=$(free_port)
    "$target/release/sandport" --listen "127.0.0.1:$port" --plugin "$plugin" \
        --config "statebench.ops=$ops" --state "$state" --log-format json 2>/dev/null &
    pids+=("$!")
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
    result=$("$target/release/sandport-load" --addr "127.0.0.1:$port" --connections "$conns" \
        --duration "$duration" --quiet --json)
    python3 - "$state" "$ops" "$result" <<'PY'
import json, sys
state, ops, r = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
lat = r["latency_us"]
print(f"{state:28} ops/msg={ops} connections={r['connections']} "
      f"msgs/s={r['msgs_per_sec']:.0f} p50={lat['p50']:.0f}us p90={lat['p90']:.0f}us "
      f"p99={lat['p99']:.0f}us")
PY
    kill "${pids[-1]}"
    wait "${pids[-1]}" 2>/dev/null || true
    unset 'pids[-1]'
done
