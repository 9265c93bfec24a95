# Starts and stops a pushgate cluster on this machine's MariaDB, Redis and RabbitMQ for the
# benchmark and soak scripts (sourced, not run): a fresh database, RabbitMQ vhost and Redis prefix
# each time, so runs never see each other's state. Expects `bin` (the release binaries) to be set.
#   start_cluster GATEWAYS DISPATCHERS   sets urls, admins (comma-separated), gw_pids, d_pids, amqp
#   cleanup                              stops what start_cluster started, drops its database and vhost
secret=bench-secret-0123456789abcdef0123456789
api_key=bench
work=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait "${pids[@]}" 2>/dev/null || true
  if [ -n "${vhost:-}" ]; then rabbitmqctl -q delete_vhost "$vhost" >/dev/null 2>&1 || true; fi
  if [ -n "${db:-}" ]; then mariadb -uroot -e "DROP DATABASE IF EXISTS $db" || true; fi
  vhost="" db=""
}
trap 'cleanup; rm -rf "$work"' EXIT

# Waits until `pattern` appears in `file` (a process's ready line), at most 60 s.
wait_for() {
  for _ in $(seq 600); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  echo "timed out: $1" >&2
  cat "$1" "${1%.out}.log" >&2
  return 1
}

start_cluster() {
  local gateways=$1 dispatchers=$2
  cleanup
  pids=()
  tag=bench$RANDOM$RANDOM
  db=pushgate_$tag vhost=$tag
  rabbitmqctl -q add_vhost "$vhost" >/dev/null
  rabbitmqctl -q set_permissions -p "$vhost" guest '.*' '.*' '.*' >/dev/null
  mariadb -uroot -e "CREATE DATABASE $db"
  amqp="amqp://guest:guest@127.0.0.1:5672/$vhost"
  export PUSHGATE_MYSQL_URL="mysql://root@127.0.0.1:3306/$db" PUSHGATE_REDIS_URL=redis://127.0.0.1:6379 \
    PUSHGATE_AMQP_URL="$amqp" PUSHGATE_JWT_SECRET=$secret PUSHGATE_API_KEY=$api_key \
    PUSHGATE_CLUSTER_NAME=$tag PUSHGATE_LOG=warn
  d_pids=""
  for d in $(seq "$dispatchers"); do
    "$bin/pushgate-dispatcher" --admin-listen 127.0.0.1:0 >"$work/d$d.out" 2>"$work/d$d.log" &
    pids+=($!)
    d_pids+="${d_pids:+,}$!"
  done
  for d in $(seq "$dispatchers"); do wait_for "$work/d$d.out" ready; done
  urls="" admins="" gw_pids=""
  for g in $(seq "$gateways"); do
    "${gw_bin:-$bin/pushgate-gateway}" --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --data-dir "$work" \
      --set node_id="$tag-g$g" >"$work/g$g.out" 2>"$work/g$g.log" &
    pids+=($!)
    gw_pids+="${gw_pids:+,}$!"
  done
  for g in $(seq "$gateways"); do
    wait_for "$work/g$g.out" ready
    urls+="${urls:+,}ws://$(grep -o 'client=[^ ]*' "$work/g$g.out" | cut -d= -f2)/ws"
    admins+="${admins:+,}http://$(grep -o 'admin=[^ ]*' "$work/g$g.out" | cut -d= -f2)"
  done
  # Every process ready (store, broker and Redis connected) before the load starts.
  local out admin
  for out in "$work"/d*.out "$work"/g*.out; do
    admin=$(grep -o 'admin=[^ ]*' "$out" | cut -d= -f2)
    for _ in $(seq 600); do curl -fs "http://$admin/readyz" >/dev/null && break; sleep 0.1; done
  done
}
