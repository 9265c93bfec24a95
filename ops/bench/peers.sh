#!/usr/bin/env bash
# Peers in the same run: pushgate beside Nchan, uWebSockets.js and Node `ws` as broadcast servers,
# measured by the same load client (pushgate-loadtest soak; --server peer for the others): RSS per
# idle session, handshakes per second, broadcast latency (p50, p99, last delivery) and server CPU
# per delivered frame. Each run starts every server fresh in turn, holds SESSIONS sessions from 2
# load processes, times 5 broadcasts 1 s apart, samples the server's processes (nginx: master and
# workers, summed) and stops it; the table gives the medians over the runs.
#   ops/bench/peers.sh [SESSIONS=15000] [RUNS=3]
#   SERVERS="pushgate nchan uws ws" (the default): pick some, in this order.
#   RAMP=new sessions per second (default 3000, a rate every server here absorbs).
#   MAX_CONNECTING=connections being set up at once at most (default 0: no bound). With a ramp
#   faster than any server (RAMP=40000 MAX_CONNECTING=256), the handshakes/s column is each
#   server's capacity rather than the arrival rate, and no server's accept backlog overflows.
# Each round ends with the loopback floor (`pushgate-loadtest floor`): the kernel's own cost of a
# frame on this machine, with no server, printed under the table.
# What each peer is, and how it is configured: ops/bench/peers/README.md. The script installs what
# it lacks (nginx and libnginx-mod-nchan with apt-get, the Node packages of ops/bench/peers with
# npm), builds the release binaries, and stops everything it started on exit.
set -euo pipefail
cd "$(dirname "$0")/../.."
sessions=${1:-15000}
runs=${2:-3}
servers=${SERVERS:-pushgate nchan uws ws}
peers=ops/bench/peers
gw_bin=target/release/pushgate-gateway
load_bin=target/release/pushgate-loadtest
nchan_module=/usr/lib/nginx/modules/ngx_nchan_module.so
# Bounds: a server is ready within READY_S; one load run (ramp, settle, hold, finish) ends within
# LOAD_TIMEOUT_S; a stopped server is gone within STOP_S, or is killed.
READY_S=30
LOAD_TIMEOUT_S=600
STOP_S=10

for s in $servers; do
  case $s in pushgate | nchan | uws | ws) ;; *) echo "peers.sh: unknown server $s (pushgate, nchan, uws, ws)" >&2; exit 64 ;; esac
done
wants() { [[ " $servers " == *" $1 "* ]]; }

apt_install() {
  local root=()
  [[ $(id -u) -eq 0 ]] || root=(sudo)
  echo "installing $* (apt-get)" >&2
  timeout 300 "${root[@]}" apt-get update -qq
  timeout 600 "${root[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >&2
}

# What the chosen servers need.
if wants nchan && ! { command -v nginx >/dev/null && [[ -f $nchan_module ]]; }; then
  apt_install nginx libnginx-mod-nchan
fi
if { wants uws || wants ws; }; then
  command -v node >/dev/null || apt_install nodejs npm
  if ! (cd "$peers" && timeout 60 npm ls --omit=dev >/dev/null 2>&1); then
    echo "installing the Node packages of $peers (npm ci)" >&2
    (cd "$peers" && timeout 600 npm ci --ignore-scripts --no-audit --no-fund >&2)
  fi
fi
# The whole workspace, as `ops/test` builds it: building two packages alone unifies the
# dependencies' features differently, which rebuilds them here and again at the next full build.
timeout 1800 cargo build --release -q --workspace --bins

work=$(mktemp -d)
reports="$work/reports"
mkdir -p "$reports"
server_pid=""
server_pids=()

# Stops the running server (TERM, then KILL after STOP_S), and any of its processes left over.
stop_server() {
  [[ -n $server_pid ]] || return 0
  kill -TERM "$server_pid" 2>/dev/null || true
  for _ in $(seq $((STOP_S * 10))); do kill -0 "$server_pid" 2>/dev/null || break; sleep 0.1; done
  kill -KILL "$server_pid" 2>/dev/null || true
  wait "$server_pid" 2>/dev/null || true
  for pid in "${server_pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  server_pid=""
  server_pids=()
}
cleanup() {
  stop_server
  rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Waits until FILE has a line with `ready`, or fails.
wait_ready() {
  for _ in $(seq $((READY_S * 10))); do
    grep -q ready "$1" 2>/dev/null && return 0
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  echo "the server did not become ready; its output:" >&2
  cat "$1" "$2" >&2 || true
  return 1
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# Each start_* starts one server in DIR and sets server_pid, server_pids (every process to sample)
# and target (the load tool's options that point at it).
start_pushgate() {
  local dir=$1
  "$gw_bin" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$dir/data" >"$dir/out" 2>"$dir/log" &
  server_pid=$!
  server_pids=("$server_pid")
  wait_ready "$dir/out" "$dir/log" || return 1
  local client admin
  client=$(grep -o 'client=[^ ]*' "$dir/out" | cut -d= -f2)
  admin=$(grep -o 'admin=[^ ]*' "$dir/out" | cut -d= -f2)
  target=(--url "ws://$client/ws" --admin "http://$admin" --secret-file "$dir/data/jwt_secret")
}

start_nchan() {
  local dir=$1 port
  port=$(free_port)
  sed -e "s#@DIR@#$dir#g" -e "s#@PORT@#$port#g" "$peers/nchan.conf" >"$dir/nginx.conf"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -g 'daemon off;' >"$dir/out" 2>"$dir/log" &
  server_pid=$!
  # Ready: the port accepts, and both workers are up (the master forks them after binding).
  local workers=()
  for _ in $(seq $((READY_S * 10))); do
    mapfile -t workers < <(ps --ppid "$server_pid" -o pid= | tr -d ' ')
    if ((${#workers[@]} >= 2)) && (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      break
    fi
    kill -0 "$server_pid" 2>/dev/null || break
    sleep 0.1
  done
  server_pids=("$server_pid" "${workers[@]}")
  if ((${#workers[@]} < 2)); then
    echo "nginx did not start its workers; its log:" >&2
    cat "$dir/log" "$dir/error.log" >&2 || true
    return 1
  fi
  target=(--server peer --url "ws://127.0.0.1:$port/ws" --peer-publish "http://127.0.0.1:$port/pub")
}

start_node() {
  local dir=$1 script=$2
  node "$peers/$script" >"$dir/out" 2>"$dir/log" &
  server_pid=$!
  server_pids=("$server_pid")
  wait_ready "$dir/out" "$dir/log" || return 1
  local client publish
  client=$(grep -o 'client=[^ ]*' "$dir/out" | cut -d= -f2)
  publish=$(grep -o 'publish=[^ ]*' "$dir/out" | cut -d= -f2)
  target=(--server peer --url "ws://$client/ws" --peer-publish "$publish")
}

start_uws() { start_node "$1" uws-server.js; }
start_ws() { start_node "$1" ws-server.js; }

for run in $(seq "$runs"); do
  for server in $servers; do
    dir="$work/$server-run$run"
    mkdir -p "$dir"
    target=()
    if ! "start_$server" "$dir"; then
      echo "run $run: $server did not start" >&2
      stop_server
      continue
    fi
    pids=$(IFS=,; echo "${server_pids[*]}")
    echo "run $run: $server (pids $pids) — ${target[*]}" >&2
    rc=0
    timeout "$LOAD_TIMEOUT_S" "$load_bin" soak "${target[@]}" --sessions "$sessions" --workers 2 \
      --ramp-per-s "${RAMP:-3000}" --max-connecting "${MAX_CONNECTING:-0}" --duration 10s --broadcasts 5 --broadcast-interval 1s --gateway-pid "$pids" \
      --progress none --report "$reports/$server-run$run.json" >"$dir/summary" 2>&1 || rc=$?
    if ((rc != 0)); then
      echo "run $run: $server: the load tool exited $rc" >&2
      tail -n 5 "$dir/summary" >&2 || true
    fi
    stop_server
  done
  # The loopback floor in the same round: no server, a plain thread writing each connection once.
  timeout "$LOAD_TIMEOUT_S" "$load_bin" floor --connections 9000 --rounds 10 >"$reports/floor-run$run.json" \
    2>"$work/floor-run$run.txt" || echo "run $run: the loopback floor failed" >&2
done

versions() {
  echo "pushgate $(git describe --always --dirty 2>/dev/null || echo '?')"
  if wants nchan; then
    echo "$(nginx -v 2>&1 | sed 's/^nginx version: //') with nchan $(dpkg-query -W -f '${Version}' libnginx-mod-nchan 2>/dev/null || echo '?')"
  fi
  wants uws && echo "npm uwebsockets $(node -p "require('./$peers/node_modules/uwebsockets/package.json').version")"
  wants ws && echo "npm ws $(node -p "require('./$peers/node_modules/ws/package.json').version")"
  if wants uws || wants ws; then echo "node $(node --version)"; fi
}

python3 - "$reports" "$sessions" "$runs" "$servers" "$(versions | paste -sd ';')" <<'PY'
import glob, json, os, statistics, sys

reports, sessions, runs, servers, versions = sys.argv[1:6]
names = {"pushgate": "pushgate", "nchan": "Nchan (nginx)", "uws": "uWebSockets.js", "ws": "Node ws"}


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, unit="", digits=1):
    if value is None:
        return "—"
    return f"{value:,.{digits}f}{unit}"


def cpu_per_frame(broadcasts):
    measured = [b for b in broadcasts if b["cpu_us_per_frame"] is not None and b["delivered"] > 0]
    frames = sum(b["delivered"] for b in measured)
    return sum(b["cpu_us_per_frame"] * b["delivered"] for b in measured) / frames if frames else None


def shortfalls(r):
    """Why a run did not hold: every session open throughout, each of 5 broadcasts to every one."""
    reasons = list(r["failures"])
    full = sum(b["expected"] == r["requested"] and b["delivered"] >= b["expected"] for b in r["broadcasts"])
    if full < 5:
        reasons.append(f"{full} of 5 broadcasts reached all {r['requested']} sessions")
    return reasons


print(f"\n{sessions} sessions per server, 2 load processes, 5 broadcasts 1 s apart; median of {runs} run(s)\n")
print("| server | runs held | RSS per idle session | handshakes/s | broadcast p50 | broadcast p99 | last delivery | CPU per delivered frame |")
print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
detail = []
for server in servers.split():
    rs = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(reports, f"{server}-run*.json")))]
    per_run = []
    for r in rs:
        b = r["broadcasts"]
        per_run.append({
            "rss": r["rss_bytes_per_session"],
            "hs": r["handshakes_per_s"],
            "p50": med([x["latency"]["p50_ms"] for x in b]),
            "p99": med([x["latency"]["p99_ms"] for x in b]),
            "last": med([x["latency"]["max_ms"] for x in b]),
            # Over the 5 broadcasts together: CPU time is read in clock ticks (10 ms), so one
            # broadcast to a few thousand sessions is too short to measure alone.
            "cpu": cpu_per_frame(b),
        })
    m = {k: med([p[k] for p in per_run]) for k in ("rss", "hs", "p50", "p99", "last", "cpu")}
    print(
        f"| {names[server]} | {sum(not shortfalls(r) for r in rs)}/{runs} | {fmt(m['rss'], ' B', 0)} | {fmt(m['hs'], '', 0)} "
        f"| {fmt(m['p50'], ' ms')} | {fmt(m['p99'], ' ms')} | {fmt(m['last'], ' ms')} | {fmt(m['cpu'], ' µs', 2)} |"
    )
    for i, (r, p) in enumerate(zip(rs, per_run), 1):
        detail.append(
            f"{server} run {i}: {r['opened']}/{r['requested']} opened, {r['unexpected_closes']} unexpected closes, "
            f"RSS/session {fmt(p['rss'], ' B', 0)}, {fmt(p['hs'], '', 0)} handshakes/s, "
            f"p50 {fmt(p['p50'], ' ms')}, p99 {fmt(p['p99'], ' ms')}, last {fmt(p['last'], ' ms')}, "
            f"CPU {fmt(p['cpu'], ' µs', 2)}/frame" + (f" — fell short: {'; '.join(shortfalls(r))}" if shortfalls(r) else "")
        )
print()
print("Latency: per broadcast, p50, p99 and last delivery (max) of publish → receive over every session; the")
print("median of the run's 5 broadcasts. CPU: the server's CPU time (all its processes) from each publish until its")
print("last delivery, summed over the 5 broadcasts, per frame delivered. Then the median over the runs.")
floors = []
for path in sorted(glob.glob(os.path.join(reports, "floor-run*.json"))):
    try:
        floors.append(json.load(open(path)))
    except ValueError:
        pass
if floors:
    print()
    print(
        f"Loopback floor in the same runs (`pushgate-loadtest floor`: no server; one plain thread writes a 100-byte"
        f" frame to each of {floors[0]['connections']:,} loopback connections, {floors[0]['rounds']} rounds):"
        f" the writing thread spends {fmt(med([f['sender_cpu_us_per_frame'] for f in floors]), ' µs', 2)} of CPU per frame,"
        f" writer and readers together {fmt(med([f['process_cpu_us_per_frame'] for f in floors]), ' µs', 2)};"
        f" p50 {fmt(med([f['median_p50_ms'] for f in floors]), ' ms')}, p99 {fmt(med([f['median_p99_ms'] for f in floors]), ' ms')}."
        " No server can deliver a frame for less than the writing thread's CPU."
    )
print()
print("Versions: " + versions.replace(";", "; "))
print()
for line in detail:
    print(f"- {line}")
PY
