#!/usr/bin/env bash
# How fast a dispatcher puts channel messages on the Redis bus: a backlog of channel messages
# waits in the ingest queues (published over AMQP while no dispatcher runs), then one dispatcher
# starts and the time until it has routed all of them is taken from its
# `pushgate_routed_deliveries_total{to="bus"}`. One gateway node, no sessions: what is measured
# is the dispatcher and Redis. With OLD_BIN (another build's target/release), each run measures
# both builds one after the other, for a side-by-side ratio; medians over RUNS.
#   cargo build --release --bins
#   OLD_BIN=/path/to/old/target/release RUNS=5 MESSAGES=40000 ops/bench/bus-publish.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
runs=${RUNS:-5}
messages=${MESSAGES:-40000}
new_bin=$PWD/target/release
load=$new_bin/pushgate-loadtest
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.0f}")' "$@"; }
bin=$new_bin
. ops/bench/cluster-lib.sh

routed() {
  curl -fs "http://$1/metrics" | awk '/^pushgate_routed_deliveries_total\{.*to="bus"/ {s += $2} END {print s + 0}'
}

# One run with the dispatcher of `$1`: prints messages per second.
run() {
  bin=$1
  start_cluster 1 1
  # The backlog: the dispatcher stopped, the envelopes wait in its ingest queues.
  local d_pid=${d_pids%%,*}
  kill "$d_pid"
  wait "$d_pid" 2>/dev/null || true
  "$load" publish --mode cluster --url "$urls" --admin "$admins" --api-key "$api_key" --sessions 0 \
    --publish-via amqp --amqp-url "$amqp" --to channel --channels 100 \
    --rate $((messages / 4)) --duration 4s --progress none --json >"$work/publish.json"
  local sent
  sent=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(r["publish"]["accepted"])' "$work/publish.json")
  "$bin/pushgate-dispatcher" --admin-listen 127.0.0.1:0 >"$work/d-run.out" 2>"$work/d-run.log" &
  pids+=($!)
  wait_for "$work/d-run.out" ready
  local admin now count r0="" t0="" t1=""
  admin=$(grep -o 'admin=[^ ]*' "$work/d-run.out" | cut -d= -f2)
  # From the first sample that shows routing under way to the one that shows all of it.
  for _ in $(seq 3000); do
    now=$(date +%s.%N)
    count=$(routed "$admin")
    if [ -z "$t0" ] && [ "$count" -gt 0 ]; then r0=$count t0=$now; fi
    if [ "$count" -ge "$sent" ]; then t1=$now; break; fi
    sleep 0.02
  done
  [ -n "$t1" ] || { echo "routed $count of $sent" >&2; exit 1; }
  python3 -c "print(round(($sent - $r0) / ($t1 - $t0)))"
  cleanup
}

new=() old=()
for _ in $(seq "$runs"); do
  new+=("$(run "$new_bin")")
  if [ -n "${OLD_BIN:-}" ]; then old+=("$(run "$OLD_BIN")"); fi
done
echo "this build: $(median "${new[@]}") channel messages/s to the bus (runs: ${new[*]})"
if [ -n "${OLD_BIN:-}" ]; then
  echo "OLD_BIN:    $(median "${old[@]}") channel messages/s to the bus (runs: ${old[*]})"
fi
