#!/usr/bin/env bash
# Runs the Autobahn conformance suite (run.sh) against a freshly started release gateway's
# `/echo` route on an ephemeral port, sections 1–7, 9 and 10 gated. Used by ops/test.
#   ops/conformance/gateway.sh [run.sh options]
set -euo pipefail
cd "$(dirname "$0")/../.."

bin=target/release/pushgate-gateway
[ -x "$bin" ] || { echo "gateway.sh: build first: cargo build --release --bins" >&2; exit 2; }
data=$(mktemp -d)
out=$(mktemp)
"$bin" --set echo_route=true --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$data" \
  >"$out" 2>"$data/gateway.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$data" "$out"' EXIT
for _ in $(seq 100); do
  grep -q ready "$out" && break
  sleep 0.1
done
addr=$(grep -o 'client=[^ ]*' "$out" | cut -d= -f2)
[ -n "$addr" ] || { echo "gateway.sh: the gateway did not start:" >&2; cat "$data/gateway.log" >&2; exit 2; }
ops/conformance/run.sh "ws://$addr/echo" --with-limits --out target/conformance "$@"
