#!/usr/bin/env bash
# Cluster figures on this machine's real MariaDB, Redis and RabbitMQ: 3 gateway nodes and
# 2 dispatchers on loopback, a fresh database, RabbitMQ vhost and Redis prefix per run.
#   1. AMQP publish → client receive latency of durable user messages at steady rates
#      (RATES, default 1000 5000 20000 msg/s; each to a random one of SESSIONS held users spread
#      over the 3 nodes; published with confirms by the load tool, as a backend would);
#   2. the highest sustained durable rate: STEP_RATES in turn until one falls short (the
#      publisher fell behind, a message was lost, or the last delivery lagged more than 1 s);
#   3. broadcast across the 3 nodes: 5 broadcasts to every held session.
# With the latency table comes a CPU budget: each part's CPU time per delivered message and the
# cores the whole run kept busy (2 on this machine).
# Each rate runs RUNS times (default 3) on a fresh cluster; the summary gives medians.
#   ops/bench/cluster.sh            # build first: cargo build --release --bins
# Environment: SESSIONS (3000), DURATION (30s), RUNS (3), RATES, STEP_RATES, BROADCAST_SESSIONS (15000).
set -euo pipefail
cd "$(dirname "$0")/../.."
./ops/services.sh >/dev/null
bin=target/release
sessions=${SESSIONS:-3000}
duration=${DURATION:-30s}
runs=${RUNS:-3}
rates=${RATES:-1000 5000 20000}
step_rates=${STEP_RATES:-10000 15000 20000 25000 30000 40000}
broadcast_sessions=${BROADCAST_SESSIONS:-15000}
source ops/bench/cluster-lib.sh

# CPU seconds so far of each part of the running cluster, as `part=seconds` words: the brokers and
# the database (every process of theirs on this machine), the dispatchers, the gateways.
cpu_snapshot() {
  python3 ops/bench/cluster_summary.py cpu \
    rabbitmq="$(pgrep -d, -x beam.smp)" mariadb="$(pgrep -d, -x mariadbd)" redis="$(pgrep -d, -x redis-server)" \
    dispatchers="$d_pids" gateways="$gw_pids"
}

# One soak run against the running cluster; extra arguments go to the load tool. Prints the report
# path; beside it (REPORT.cpu) the CPU each part spent during the run, the load tool's included.
soak() {
  local report=$work/report-$RANDOM$RANDOM.json before
  before=$(cpu_snapshot)
  /usr/bin/time -f "%U %S" -o "$work/loadtool.time" "$bin/pushgate-loadtest" soak --mode cluster --url "$urls" --admin "${admins%%,*}" --api-key "$api_key" \
    --secret "$secret" --gateway-pid "$gw_pids" --publish-via amqp --amqp-url "$amqp" \
    --progress none --report "$report" "$@" >"$work/soak.txt" 2>&1 || true
  echo "before $before" >"$report.cpu"
  echo "after $(cpu_snapshot) loadtool=$(awk '{print $1 + $2}' "$work/loadtool.time")" >>"$report.cpu"
  echo "$report"
}

summarise() { python3 ops/bench/cluster_summary.py "$@"; }

results=$work/results
mkdir -p "$results"
echo "## durable latency, AMQP publish → receive, $sessions sessions over 3 nodes, $duration per run" >&2
for rate in $rates; do
  for run in $(seq "$runs"); do
    start_cluster 3 2
    report=$(soak --sessions "$sessions" --duration "$duration" --durable-rate "$rate" --max-in-flight 4096)
    cp "$report" "$results/rate-$rate-run$run.json"
    cp "$report.cpu" "$results/rate-$rate-run$run.cpu"
    echo "rate $rate run $run done" >&2
  done
done
summarise rates "$results" $rates
summarise budget "$results" $rates

echo "## highest sustained durable rate" >&2
echo "| durable rate (asked) | achieved | p50 | p99 | lost | verdict |"
echo "| ---: | ---: | ---: | ---: | ---: | --- |"
for rate in $step_rates; do
  start_cluster 3 2
  cp "$(soak --sessions "$sessions" --duration "$duration" --durable-rate "$rate" --max-in-flight 8192)" \
    "$results/step-$rate.json"
  summarise step "$results/step-$rate.json" "$rate" || break
done

echo "## broadcast across 3 nodes, $broadcast_sessions sessions" >&2
for run in $(seq "$runs"); do
  start_cluster 3 2
  cp "$(soak --sessions "$broadcast_sessions" --duration 10s --broadcasts 5 --broadcast-interval 1s --ramp-per-s 10000)" \
    "$results/broadcast-run$run.json"
done
summarise broadcast "$results"
