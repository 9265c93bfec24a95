#!/usr/bin/env bash
# The global allocator, measured: the gateway built with the system allocator (glibc, the default)
# and with mimalloc (`--features mimalloc`), each at SESSIONS idle sessions in one process
# (RSS per idle session, handshakes/s, broadcast to all), RUNS fresh runs each, one build
# after the other in the same invocation.
#   ops/bench/allocators.sh [SESSIONS=19000] [RUNS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-19000}
runs=${2:-3}
cargo build --release --bins
cargo build --release -p pushgate-gateway --features mimalloc --target-dir target/mimalloc
for allocator in system mimalloc; do
  case $allocator in
    system) bin=target/release/pushgate-gateway ;;
    mimalloc) bin=target/mimalloc/release/pushgate-gateway ;;
  esac
  echo "## $allocator"
  GW_BIN=$bin ops/bench/idle-sessions.sh "$sessions" "$runs"
done
