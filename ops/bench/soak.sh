#!/usr/bin/env bash
# The long-connection soak on one machine: enough gateway nodes that none holds more than 18,000
# sessions (the 20,000-file limit per process), one dispatcher, on this machine's MariaDB, Redis
# and RabbitMQ; pushgate-loadtest holds SESSIONS sessions (heartbeats answered, cumulative acks)
# from worker processes spread over 127.0.0.2–254, with a steady durable publish stream over AMQP
# to random held users and a broadcast to everyone every BROADCAST_INTERVAL. It fails (non-zero)
# when a session closes unexpectedly, a durable message is lost, or fewer sessions than asked
# were held. Reports (JSON, HTML with plots) go to REPORT_DIR.
#   ops/bench/soak.sh [SESSIONS=100000] [DURATION=10m]
# Environment: DURABLE_RATE (200 msg/s), BROADCAST_INTERVAL (60s), RAMP (4000 sessions/s),
#   REPORT_DIR (target/soak), GW_BIN (another gateway build, for a side-by-side run). Build
#   first: cargo build --release --bins
set -euo pipefail
cd "$(dirname "$0")/../.."
./ops/services.sh >/dev/null
bin=target/release
gw_bin=${GW_BIN:-$bin/pushgate-gateway}
sessions=${1:-100000}
duration=${2:-10m}
per_gateway=18000
gateways=$(((sessions + per_gateway - 1) / per_gateway))
report_dir=${REPORT_DIR:-target/soak}
mkdir -p "$report_dir"
source ops/bench/cluster-lib.sh

echo "soak: $sessions sessions over $gateways gateway node(s) and 1 dispatcher for $duration" >&2
start_cluster "$gateways" 1
status=0
"$bin/pushgate-loadtest" soak --mode cluster --url "$urls" --admin "${admins%%,*}" --api-key "$api_key" \
  --secret "$secret" --gateway-pid "$gw_pids" --publish-via amqp --amqp-url "$amqp" \
  --sessions "$sessions" --ramp-per-s "${RAMP:-4000}" --duration "$duration" \
  --durable-rate "${DURABLE_RATE:-200}" --broadcast-interval "${BROADCAST_INTERVAL:-60s}" \
  --progress lines --report "$report_dir/soak-$sessions.json" --html "$report_dir/soak-$sessions.html" || status=$?
for g in $(seq "$gateways"); do
  if grep -q -E "ERROR|panicked" "$work/g$g.log"; then
    echo "soak: gateway $g logged errors:" >&2
    grep -E "ERROR|panicked" "$work/g$g.log" | head -5 >&2
    status=1
  fi
done
exit "$status"
