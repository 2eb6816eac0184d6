#!/usr/bin/env bash
# What rooms across hosts cost (`--state redis://`, the messaging bus): sandport-fanout, one
# sender and MEMBERS room members through the chat plugin, in three set-ups run in turn for
# ROUNDS rounds (a shared machine's noise then hits all three): one host with `memory` state,
# one host with `redis` state (every publish also goes through Redis, and the chat plugin's two
# state reads per message are Redis round trips), and two hosts on the same Redis with the
# members on one and the sender on the other (every delivery crosses Redis pub/sub). Prints
# one line per run: deliveries/s and delivery latency percentiles in microseconds.
#
# usage: bench/rooms-redis.sh [MEMBERS (100)] [DURATION (5s)] [ROUNDS (2)]
set -euo pipefail
cd "$(dirname "$0")/.."
members="${1:-100}" duration="${2:-5s}" rounds="${3:-2}"
target="${CARGO_TARGET_DIR:-target}"
cargo build --release -q -p sandport -p sandport-bench --bins
plugin=plugins/chat.wasm
[ -f "$plugin" ] || { echo "missing $plugin: run cargo xtask plugins" >&2; exit 1; }

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
redis_port=$(free_port)
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --loglevel warning \
    >/dev/null &
pids=("$!")
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
until redis-cli -p "$redis_port" ping >/dev/null 2>&1; do sleep 0.05; done
redis="redis://127.0.0.1:$redis_port"

# Starts a host on `state`; its port in $port (not printed: a command substitution would
# wait for the host's end of its pipe).
host() {
    port=$(free_port)
    "$target/release/sandport" --listen "127.0.0.1:$port" --plugin "$plugin" --state "$1" \
        --log-format json >/dev/null 2>&1 &
    pids+=("$!")
    until (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; do sleep 0.05; done
}

for _ in $(seq "$rounds"); do
    for setup in memory redis across; do
        case "$setup" in
            memory) host memory; members_port=$port; sender_port=$port ;;
            redis) host "$redis"; members_port=$port; sender_port=$port ;;
            across) host "$redis"; members_port=$port; host "$redis"; sender_port=$port ;;
        esac
        result=$("$target/release/sandport-fanout" --addr "127.0.0.1:$members_port" \
            --sender-addr "127.0.0.1:$sender_port" --members "$members" --duration "$duration")
        python3 - "$setup" "$result" <<'PY'
import json, sys
setup, r = sys.argv[1], json.loads(sys.argv[2])
print(f"{setup:8} members={r['members']} deliveries/s={r['deliveries_per_sec']:.0f} "
      f"p50={r['p50_us']:.0f}us p99={r['p99_us']:.0f}us errors={len(r['errors'])}")
PY
        # Stop this set-up's hosts before the next one.
        for p in "${pids[@]:1}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
        pids=("${pids[0]}")
    done
done
