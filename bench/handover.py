"""Zero-downtime upgrades, measured: HANDOVERS times, a new sandport starts on PORT with
--reuse-port and the old one gets SIGTERM, while THREADS clients open a connection each for
one echo roundtrip, as fast as they can. Prints the messages answered and every failure
(refused, reset, no or wrong reply).

    python3 bench/handover.py PORT HANDOVERS THREADS

PORT should be outside net.ipv4.ip_local_port_range (32768-60999 by default): a client's
TIME_WAIT socket on it would make the next server's bind fail. SANDPORT_BIN names the binary
(default target/release/sandport); run from the repository's root. To see the effect of
net.ipv4.tcp_migrate_req without touching the machine's setting, run it in a network namespace
of its own: unshare -rn sh -c 'ip link set lo up; sysctl -w net.ipv4.tcp_migrate_req=1; ...'
"""
import socket, subprocess, threading, time, sys, os, re
BIN = os.environ.get("SANDPORT_BIN", "target/release/sandport")
PLUG = "plugins/echo.wasm"
PORT = int(sys.argv[1]); HANDOVERS = int(sys.argv[2]); THREADS = int(sys.argv[3])
stop = False; ok = 0; fails = []; lock = threading.Lock()
def start():
    p = subprocess.Popen([BIN, "--listen", f"127.0.0.1:{PORT}", "--reuse-port", "--workers", "2", "--plugin", PLUG],
                         stderr=subprocess.PIPE, text=True, env={**os.environ, "RUST_LOG": "info,sandport::server::worker=warn", "NO_COLOR": "1"})
    lines = []
    for line in p.stderr:
        lines.append(line)
        if "listening on" in line: break
    else:
        print("START FAILED", "".join(lines[-5:]), flush=True); sys.exit(1)
    threading.Thread(target=lambda: lines.extend(p.stderr), daemon=True).start()
    return p, lines
def client(i):
    global ok
    n = 0
    while not stop:
        n += 1; msg = f"c{i} m{n}\n".encode()
        try:
            s = socket.create_connection(("127.0.0.1", PORT), timeout=5)
            s.sendall(msg); got = b""
            while not got.endswith(b"\n"):
                b = s.recv(100)
                if not b: raise Exception("eof")
                got += b
            s.close()
            if got != msg: raise Exception(f"wrong {got!r}")
            with lock: ok += 1
        except Exception as e:
            with lock: fails.append(f"{msg!r}: {e}")
old, ol = start()
ts = [threading.Thread(target=client, args=(i,)) for i in range(THREADS)]
for t in ts: t.start()
queued_taken = 0
for h in range(HANDOVERS):
    time.sleep(0.3)
    new, nl = start()
    time.sleep(0.3)
    old.send_signal(15); old.wait(timeout=10)
    queued_taken += sum(int(re.search(r"connections=(\d+)", l).group(1)) for l in ol if "queued at shutdown" in l)
    old, ol = new, nl
time.sleep(0.3); stop = True
for t in ts: t.join()
old.send_signal(15); old.wait()
print(f"handovers={HANDOVERS} threads={THREADS} answered={ok} failed={len(fails)} taken_from_queue={queued_taken}")
for f in fails[:10]: print(f)
