#!/usr/bin/env bash
# Gateway figures at N idle sessions in one process: RSS per idle session, handshakes per second,
# and the time to deliver one broadcast to every session. Each run starts a fresh release gateway,
# holds N sessions from 2 load processes (source addresses 127.0.0.2 and .3), times 5 broadcasts,
# and stops; the summary gives the median over the runs.
#   ops/bench/idle-sessions.sh [SESSIONS=15000] [RUNS=3] [extra gateway --set options...]
# Build first: cargo build --release --bins (GW_BIN=path picks another gateway build; RAMP=new
# sessions per second, default 40000; MAX_CONNECTING=connections being set up at once, default
# unbounded; DURATION=how long the sessions are held, default 30s; BROADCASTS=broadcasts timed,
# default 5 — 0 leaves the gateway's CPU to connects, heartbeats and closes)
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-15000}
runs=${2:-3}
shift $(( $# > 2 ? 2 : $# )) || true
gw_bin=${GW_BIN:-target/release/pushgate-gateway}
load_bin=target/release/pushgate-loadtest
reports=$(mktemp -d)
for run in $(seq "$runs"); do
  data=$(mktemp -d)
  "$gw_bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$data" "$@" >"$data/out" 2>"$data/log" &
  pid=$!
  for _ in $(seq 100); do grep -q ready "$data/out" && break; sleep 0.1; done
  client=$(grep -o 'client=[^ ]*' "$data/out" | cut -d= -f2)
  admin=$(grep -o 'admin=[^ ]*' "$data/out" | cut -d= -f2)
  echo "run $run: gateway pid $pid on $client" >&2
  "$load_bin" soak --url "ws://$client/ws" --admin "http://$admin" --sessions "$sessions" --workers 2 \
    --ramp-per-s "${RAMP:-40000}" --max-connecting "${MAX_CONNECTING:-0}" --duration "${DURATION:-30s}" --broadcasts "${BROADCASTS:-5}" --broadcast-interval 1s --gateway-pid "$pid" \
    --secret-file "$data/jwt_secret" --progress none --report "$reports/run$run.json" >/dev/null
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
done
python3 - "$reports" "$sessions" <<'PY'
import json, glob, statistics, sys
runs = [json.load(open(p)) for p in sorted(glob.glob(sys.argv[1] + "/run*.json"))]
med = statistics.median
rss = [r["rss_bytes_per_session"] for r in runs]
hs = [r["handshakes_per_s"] for r in runs]
# The gateway's CPU over the whole run (connects, heartbeats, broadcasts, closes) per session.
cpu = [r["gateways"][0]["cpu_seconds"] / r["opened"] * 1e6 for r in runs]
print(f"sessions: {sys.argv[2]}, runs: {len(runs)}, all held: {all(r['opened'] == r['requested'] and r['unexpected_closes'] == 0 for r in runs)}")
print(f"RSS per idle session: median {med(rss):.0f} B (runs: {', '.join(f'{x:.0f}' for x in rss)})")
print(f"handshakes per second: median {med(hs):.0f} (runs: {', '.join(f'{x:.0f}' for x in hs)})")
print(f"gateway CPU per session over the run: median {med(cpu):.1f} µs (runs: {', '.join(f'{x:.1f}' for x in cpu)})")
if all(r["broadcasts"] for r in runs):
    p50 = [med([b["latency"]["p50_ms"] for b in r["broadcasts"]]) for r in runs]
    p99 = [med([b["latency"]["p99_ms"] for b in r["broadcasts"]]) for r in runs]
    bmax = [med([b["latency"]["max_ms"] for b in r["broadcasts"]]) for r in runs]
    print(f"broadcast to all, per run median of {len(runs[0]['broadcasts'])}: p50 {med(p50):.1f} ms, p99 {med(p99):.1f} ms, all delivered (max) {med(bmax):.1f} ms")
PY
rm -rf "$reports"
