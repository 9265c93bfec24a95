#!/usr/bin/env bash
# Gateway CPU spent keeping N idle sessions alive in one process: each run starts a fresh release
# gateway with a 1 s heartbeat (so every session gets a Ping and answers a Pong each second), holds
# N sessions from 2 load processes, and once all are open reads the gateway's CPU time over a
# 20 s window with nothing else going on. Prints CPU per heartbeat (one Ping written, one Pong
# read) and the core share it would take at the default 25 s heartbeat; the median over the runs.
#   ops/bench/heartbeat-cpu.sh [SESSIONS=19000] [RUNS=3] [extra gateway --set options...]
# Build first: cargo build --release --bins (GW_BIN=path picks another gateway build).
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-19000}
runs=${2:-3}
shift $(( $# > 2 ? 2 : $# )) || true
gw_bin=${GW_BIN:-target/release/pushgate-gateway}
load_bin=target/release/pushgate-loadtest
window_s=20
tick=$(getconf CLK_TCK)
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
results=()
for run in $(seq "$runs"); do
  data=$(mktemp -d)
  "$gw_bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$data" --set heartbeat=1s "$@" \
    >"$data/out" 2>"$data/log" &
  pid=$!
  for _ in $(seq 100); do grep -q ready "$data/out" && break; sleep 0.1; done
  client=$(grep -o 'client=[^ ]*' "$data/out" | cut -d= -f2)
  admin=$(grep -o 'admin=[^ ]*' "$data/out" | cut -d= -f2)
  # Bounded: the load ends by itself after its duration; the wait for all sessions gives up at 60 s.
  "$load_bin" soak --url "ws://$client/ws" --admin "http://$admin" --sessions "$sessions" --workers 2 \
    --ramp-per-s 3000 --duration 60s --broadcasts 0 --gateway-pid "$pid" \
    --secret-file "$data/jwt_secret" --progress none >/dev/null 2>&1 &
  load=$!
  open=0
  for _ in $(seq 600); do
    open=$(curl -s "http://$admin/metrics" | awk '$1 == "pushgate_sessions" {print int($2)}')
    [[ ${open:-0} -ge $sessions ]] && break
    sleep 0.1
  done
  sleep 3
  before=$(cpu_ticks "$pid")
  sleep "$window_s"
  after=$(cpu_ticks "$pid")
  held=$(curl -s "http://$admin/metrics" | awk '$1 == "pushgate_sessions" {print int($2)}')
  kill "$load" 2>/dev/null || true
  wait "$load" 2>/dev/null || true
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
  us=$(awk -v b="$before" -v a="$after" -v t="$tick" -v n="$held" -v w="$window_s" \
    'BEGIN { printf "%.2f", (a - b) / t * 1e6 / (n * w) }')
  echo "run $run: $held sessions held, $(( after - before )) ticks in ${window_s} s: $us µs per heartbeat" >&2
  results+=("$us")
done
printf '%s\n' "${results[@]}" | sort -n | awk -v n="$sessions" '
  { v[NR] = $1 } END {
    m = v[int((NR + 1) / 2)]
    printf "sessions: %d, runs: %d\nCPU per heartbeat (Ping + Pong): median %.2f µs (runs:", n, NR, m
    for (i = 1; i <= NR; i++) printf " %.2f", v[i]
    printf ")\nat the default 25 s heartbeat, per 100,000 sessions: %.1f %% of a core\n", m * 100000 / 25 / 1e6 * 100
  }'
