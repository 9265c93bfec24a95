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
