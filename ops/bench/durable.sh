#!/usr/bin/env bash
# Durable-path figures for both stores (SQLite in a data dir; MariaDB on 127.0.0.1:3306):
#   1. store throughput — durable messages/s through the batched write path at batch sizes
#      100, 1000 and 5000 (100,000 messages to 10,000 users; 3 runs each, median);
#   2. publish → receive latency of durable messages over HTTP at a steady 1,000/s and 2,000/s
#      (200 receiving sessions, 20 s each; a fresh gateway per store);
#   3. replay speed of a 50,000-message backlog for an offline user.
# Build first: cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/../.."
load=target/release/pushgate-loadtest
gw=target/release/pushgate-gateway
runs=${RUNS:-3}
median() { python3 -c 'import sys,statistics; print(f"{statistics.median(float(x) for x in sys.argv[1:]):.0f}")' "$@"; }

fresh_mysql() { mariadb -uroot -e "DROP DATABASE IF EXISTS pushgate_bench; CREATE DATABASE pushgate_bench"; }

echo "## store throughput (messages/s, median of $runs)"
for store in sqlite mariadb; do
  for batch in 100 1000 5000; do
    rates=()
    for _ in $(seq "$runs"); do
      if [ "$store" = sqlite ]; then dir=$(mktemp -d); url="sqlite://$dir/inbox.db"; else fresh_mysql; url="mysql://root@127.0.0.1:3306/pushgate_bench"; fi
      rate=$("$load" store --store "$url" --messages 100000 --batch "$batch" 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["messages_per_s"])')
      rates+=("$rate")
      [ "$store" = sqlite ] && rm -rf "$dir"
    done
    echo "$store batch $batch: $(median "${rates[@]}") msg/s (runs: ${rates[*]})"
  done
done

echo "## gateway: publish → receive latency and replay"
for store in sqlite mariadb; do
  data=$(mktemp -d)
  extra=()
  if [ "$store" = mariadb ]; then fresh_mysql; extra=(--set store_url=mysql://root@127.0.0.1:3306/pushgate_bench); fi
  "$gw" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$data" "${extra[@]}" >"$data/out" 2>"$data/log" &
  pid=$!
  for _ in $(seq 100); do grep -q ready "$data/out" && break; sleep 0.1; done
  client=$(grep -o 'client=[^ ]*' "$data/out" | cut -d= -f2)
  admin=$(grep -o 'admin=[^ ]*' "$data/out" | cut -d= -f2)
  for rate in 1000 2000; do
    "$load" latency --url "ws://$client/ws" --admin "http://$admin" --secret-file "$data/jwt_secret" \
      --sessions 200 --rate "$rate" --duration 20s 2>&1 >/dev/null | sed "s/^/$store: /"
  done
  "$load" replay --url "ws://$client/ws" --admin "http://$admin" --secret-file "$data/jwt_secret" --backlog 50000 \
    2>&1 >/dev/null | sed "s/^/$store: /"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$data"
done
