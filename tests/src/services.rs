//! Restarting the machine's shared services, for chaos tests (which run alone: everything else
//! on the machine loses its connections too). Each waits until the service is down, starts it
//! with the command the machine's notes give, and waits until it answers again.

use std::{process::Command, time::Duration};

use crate::eventually;

fn port_open(port: u16) -> bool {
    std::net::TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(200)).is_ok()
}

fn run(program: &str, args: &[&str]) {
    let status = Command::new(program).args(args).status();
    assert!(status.is_ok(), "{program} {args:?}: {status:?}");
}

async fn wait_port(port: u16, open: bool, what: &str) {
    eventually(Duration::from_secs(60), what, || async move { (port_open(port) == open).then_some(()) }).await;
}

/// Redis: `SHUTDOWN NOSAVE` (it keeps nothing on disk: every key is gone), then start it again.
pub async fn restart_redis() {
    let _ = Command::new("redis-cli").args(["-p", "6379", "shutdown", "nosave"]).output();
    wait_port(6379, false, "Redis down").await;
    run(
        "redis-server",
        &[
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            "/var/lib/redis",
            "--logfile",
            "/var/log/redis/ci.log",
        ],
    );
    wait_port(6379, true, "Redis up").await;
}

/// RabbitMQ: stop the whole node, start it again (durable queues and persistent messages come
/// back from disk).
pub async fn restart_rabbitmq() {
    run("rabbitmqctl", &["shutdown"]);
    wait_port(5672, false, "RabbitMQ down").await;
    run("rabbitmq-server", &["-detached"]);
    wait_port(5672, true, "RabbitMQ up").await;
    run("rabbitmqctl", &["await_startup"]);
}

/// MariaDB: shut the server down, start it again.
pub async fn restart_mariadb() {
    run("mariadb-admin", &["-uroot", "shutdown"]);
    wait_port(3306, false, "MariaDB down").await;
    run("start-stop-daemon", &["--start", "--oknodo", "--background", "--exec", "/usr/sbin/mariadbd"]);
    wait_port(3306, true, "MariaDB up").await;
}

/// The free-disk limit that raises RabbitMQ's disk alarm on any disk (`ops/services.sh` knows it
/// too, and lifts an alarm a killed test left behind).
pub const DISK_ALARM_LIMIT: &str = "100000000000000";

/// RabbitMQ's disk alarm, in effect until dropped: the broker blocks every connection that
/// publishes (`connection.blocked`) and goes on delivering to consumers. Raised by a free-disk
/// limit no disk meets; dropping puts the limit that was set back.
pub struct DiskAlarm {
    limit: String,
}

impl DiskAlarm {
    pub fn raise() -> Self {
        let read = Command::new("rabbitmqctl").args(["eval", "rabbit_disk_monitor:get_disk_free_limit()."]).output();
        let read = read.map(|out| String::from_utf8_lossy(&out.stdout).trim().to_owned()).unwrap_or_default();
        // RabbitMQ's default, when the limit cannot be read or is this alarm's own.
        let limit = if read.parse::<u64>().is_ok() && read != DISK_ALARM_LIMIT { read } else { "50MB".to_owned() };
        run("rabbitmqctl", &["set_disk_free_limit", DISK_ALARM_LIMIT]);
        Self { limit }
    }
}

impl Drop for DiskAlarm {
    fn drop(&mut self) {
        run("rabbitmqctl", &["set_disk_free_limit", &self.limit]);
    }
}

/// The `maxmemory` that makes Redis refuse writes (`ops/services.sh` knows it too, and lifts a
/// refusal a killed test left behind).
pub const REDIS_REFUSAL_MAXMEMORY: &str = "1";

/// Redis out of memory, in effect until dropped: with `maxmemory` 1 byte and no eviction it
/// refuses every command that could grow its memory (`OOM command not allowed …`) and goes on
/// answering reads, `PING`, deletes and pub/sub. Dropping puts the previous settings back.
pub struct RedisRefusesWrites {
    maxmemory: String,
    policy: String,
}

impl RedisRefusesWrites {
    pub fn start() -> Self {
        let get = |key: &str| {
            let out = Command::new("redis-cli").args(["-p", "6379", "config", "get", key]).output();
            let out = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
            out.lines().nth(1).map(str::to_owned)
        };
        // Redis's defaults, when a setting cannot be read or is this refusal's own.
        let maxmemory = get("maxmemory").filter(|m| m != REDIS_REFUSAL_MAXMEMORY).unwrap_or_else(|| "0".to_owned());
        let policy = get("maxmemory-policy").unwrap_or_else(|| "noeviction".to_owned());
        run("redis-cli", &["-p", "6379", "config", "set", "maxmemory-policy", "noeviction"]);
        run("redis-cli", &["-p", "6379", "config", "set", "maxmemory", REDIS_REFUSAL_MAXMEMORY]);
        Self { maxmemory, policy }
    }
}

impl Drop for RedisRefusesWrites {
    fn drop(&mut self) {
        run("redis-cli", &["-p", "6379", "config", "set", "maxmemory", &self.maxmemory]);
        run("redis-cli", &["-p", "6379", "config", "set", "maxmemory-policy", &self.policy]);
    }
}
