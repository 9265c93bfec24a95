#!/usr/bin/env bash
# Makes sure the local services the tests talk to are up: MariaDB (127.0.0.1:3306), Redis
# (127.0.0.1:6379) and RabbitMQ (127.0.0.1:5672). A service that is down is started; one that
# is not installed is installed from Debian's packages first. Safe to run again and again.
set -euo pipefail

log() { printf 'services: %s\n' "$*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_port() { # name port seconds
  local i
  for ((i = 0; i < $3 * 10; i++)); do
    port_open "$2" && return 0
    sleep 0.1
  done
  log "$1 did not come up on port $2 within $3 s"
  return 1
}

apt_install() {
  log "installing $*"
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null ||
    { $SUDO apt-get update -q >/dev/null && $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" >/dev/null; }
}

ensure_mariadb() {
  port_open 3306 && return 0
  command -v mariadbd >/dev/null || [ -x /usr/sbin/mariadbd ] || apt_install mariadb-server
  log "starting MariaDB"
  mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld 2>/dev/null || true
  start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
  wait_port MariaDB 3306 60
}

ensure_redis() {
  if ! port_open 6379; then
    command -v redis-server >/dev/null || apt_install redis-server
    log "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
      --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_port Redis 6379 30
  fi
  # A chaos test makes Redis refuse writes with a 1-byte maxmemory (tests/src/services.rs,
  # REDIS_REFUSAL_MAXMEMORY); a test killed before it put the limit back would leave it so.
  if [ "$(redis-cli -p 6379 config get maxmemory 2>/dev/null | sed -n 2p)" = 1 ]; then
    log "lifting a Redis memory limit a killed chaos test left behind"
    redis-cli -p 6379 config set maxmemory 0 >/dev/null
  fi
}

ensure_rabbitmq() {
  if ! port_open 5672; then
    command -v rabbitmq-server >/dev/null || apt_install rabbitmq-server
    log "starting RabbitMQ"
    rabbitmq-server -detached
    wait_port RabbitMQ 5672 120
    rabbitmqctl await_startup >/dev/null
  fi
  # Ingest partitioning uses the consistent-hash exchange (ships with RabbitMQ, off by default).
  if ! rabbitmq-plugins is_enabled rabbitmq_consistent_hash_exchange >/dev/null 2>&1; then
    log "enabling rabbitmq_consistent_hash_exchange"
    rabbitmq-plugins enable rabbitmq_consistent_hash_exchange >/dev/null
  fi
  # The chaos tests raise a disk alarm with an impossible free-disk limit (tests/src/services.rs,
  # DISK_ALARM_LIMIT); a test killed before it lifted the alarm would leave every publisher blocked.
  if [ "$(rabbitmqctl eval 'rabbit_disk_monitor:get_disk_free_limit().' 2>/dev/null)" = 100000000000000 ]; then
    log "lifting a disk alarm a killed chaos test left behind"
    rabbitmqctl set_disk_free_limit 50MB >/dev/null
  fi
}

case "${1:-all}" in
  all) ensure_mariadb; ensure_redis; ensure_rabbitmq ;;
  mariadb) ensure_mariadb ;;
  redis) ensure_redis ;;
  rabbitmq) ensure_rabbitmq ;;
  *) echo "usage: $0 [all|mariadb|redis|rabbitmq]" >&2; exit 64 ;;
esac
log "up: $(for p in 3306 6379 5672; do port_open $p && printf '%s ' $p; done)"
