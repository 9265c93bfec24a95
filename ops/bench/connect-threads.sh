#!/usr/bin/env bash
# Where a connect flood's server CPU goes, by thread and by phase, and which system calls it
# makes. Two floods of N sessions against one server (pushgate, or uWebSockets.js for the
# syscall count), from the same load client as the peers table (2 processes, 40,000/s, 256
# connecting at once, held 4 s, no broadcasts):
#   1. `perf stat -I 500 --per-thread -e task-clock` on the server: CPU per thread every half
#      second — the connect phase and the close phase fall in separate intervals;
#   2. `strace -f -c` on the server: system calls by kind (strace slows the flood; the counts,
#      not the times, are the figure).
#   ops/bench/connect-threads.sh [pushgate|uws] [SESSIONS=15000]
# Needs perf and strace, `cargo build --release --workspace --bins` and, for uws, the Node
# packages of ops/bench/peers (`ops/bench/peers.sh` installs them). GW_BIN picks another build.
set -euo pipefail
cd "$(dirname "$0")/../.."
server=${1:-pushgate}
sessions=${2:-15000}
work=$(mktemp -d)
trap 'kill "${pid:-}" 2>/dev/null || true; rm -rf "$work"' EXIT

start() {
  if [ "$server" = pushgate ]; then
    "${GW_BIN:-target/release/pushgate-gateway}" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 \
      --data-dir "$work/data" > "$work/out" 2> "$work/log" &
    pid=$!
    for _ in $(seq 200); do grep -q "client=" "$work/out" 2>/dev/null && break; sleep 0.05; done
    client=$(grep -o "client=[^ ]*" "$work/out" | cut -d= -f2)
    admin=$(grep -o "admin=[^ ]*" "$work/out" | cut -d= -f2)
    target=(--url "ws://$client/ws" --admin "http://$admin" --secret-file "$work/data/jwt_secret")
  else
    node ops/bench/peers/uws-server.js > "$work/out" 2> "$work/log" &
    pid=$!
    for _ in $(seq 200); do grep -q "client=" "$work/out" 2>/dev/null && break; sleep 0.05; done
    client=$(grep -o "client=[^ ]*" "$work/out" | cut -d= -f2)
    publish=$(grep -o "publish=[^ ]*" "$work/out" | cut -d= -f2)
    target=(--server peer --url "ws://$client/ws" --peer-publish "$publish")
  fi
}

flood() {
  target/release/pushgate-loadtest soak "${target[@]}" --sessions "$sessions" --workers 2 \
    --ramp-per-s 40000 --max-connecting 256 --duration 4s --broadcasts 0 --progress none \
    --report "$work/report.json" > /dev/null
  python3 -c "import json; r = json.load(open('$work/report.json')); print(f\"opened {r['opened']} at {r['handshakes_per_s']:,.0f} handshakes/s\")"
}

stop() {
  kill "$pid"
  wait "$pid" 2> /dev/null || true
  rm -rf "$work/data"
}

echo "== $server: CPU per thread (ms) every 500 ms, $sessions sessions"
start
perf stat -I 500 --per-thread -e task-clock -p "$pid" -o "$work/stat" &
perf=$!
sleep 0.3
flood
kill -INT "$perf"
wait "$perf" || true
stop
# Threads of one kind summed per interval (sqlx's pool threads together, the two runtime workers
# together); intervals under 2 ms of CPU in all are left out (idle).
python3 - "$work/stat" << 'EOF'
import collections, re, sys
rows = collections.defaultdict(lambda: collections.Counter())
for line in open(sys.argv[1]):
    m = re.match(r"\s*([\d.]+)\s+(\S+?)-\d+\s+([\d.,]+)\s+msec", line)
    if m:
        rows[float(m.group(1))][m.group(2)] += float(m.group(3).replace(",", ""))
kinds = sorted({k for r in rows.values() for k in r})
print("t (s)   " + "".join(f"{k:>18}" for k in kinds))
for t in sorted(rows):
    if sum(rows[t].values()) >= 2:
        print(f"{t:6.1f}  " + "".join(f"{rows[t][k]:18.1f}" for k in kinds))
EOF

echo "== $server: system calls, $sessions sessions (under strace)"
start
strace -f -c -p "$pid" -o "$work/strace" 2> /dev/null &
tracer=$!
sleep 0.5
flood
sleep 0.5
kill -INT "$tracer"
wait "$tracer" || true
stop
head -25 "$work/strace"
