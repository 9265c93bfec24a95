//! The process lifecycle: drain on SIGTERM and on `POST /v1/drain` (`reconnect`, then 1012,
//! readiness 503, new sessions 503, exit), configuration errors exiting 64, the `token`
//! subcommand, the file-limit log line.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::future::join_all;
use pushgate_tests::{Client, Gateway, GatewayOptions, RawClient, binary};

async fn assert_drains(gw: &mut Gateway, mut clients: Vec<Client>, window: Duration) {
    let started = Instant::now();
    let results = join_all(clients.iter_mut().map(|c| async move {
        let reconnect = c.next_of_type("reconnect").await;
        let after_ms = reconnect["after_ms"].as_u64().unwrap();
        (after_ms, c.expect_close().await, Instant::now())
    }));
    // While draining: readiness is 503 and new sessions are refused with 503.
    let probe = async {
        pushgate_tests::eventually(pushgate_tests::WAIT, "readiness 503", || async {
            (gw.get_json("/readyz").await.0 == 503).then_some(())
        })
        .await;
        let token = gw.token("late", None, &[]);
        let request = format!(
            "GET /ws?token={token} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
        );
        let (status, head, body) = RawClient::http(gw.client_addr, &request).await;
        assert_eq!(status, 503, "{body}");
        assert!(body.contains("draining"));
        assert!(head.to_ascii_lowercase().contains("retry-after"));
    };
    let (results, ()) = tokio::join!(results, probe);
    for (after_ms, code, _) in &results {
        assert_eq!(*code, 1012);
        assert!(*after_ms <= 2000);
    }
    // Spread over the window, not all at once.
    let first = results.iter().map(|r| r.2).min().unwrap();
    let last = results.iter().map(|r| r.2).max().unwrap();
    assert!(
        last.duration_since(first) >= window / 3,
        "closes spread over the window: {:?}",
        last.duration_since(first)
    );
    let status = gw.wait_exit(window + Duration::from_secs(10)).await;
    assert!(status.success(), "exit status {status:?}");
    assert!(started.elapsed() <= window + Duration::from_secs(7));
    assert!(gw.log().contains("drained"));
}

#[tokio::test]
async fn sigterm_drains_and_exits() {
    let mut gw = Gateway::start_with(GatewayOptions::default().set("drain_window", "2s")).await;
    let clients = join_all((0..40).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("d{i}")).await }
    }))
    .await;
    gw.signal("TERM");
    assert_drains(&mut gw, clients, Duration::from_secs(2)).await;
}

#[tokio::test]
async fn the_drain_endpoint_drains_and_exits() {
    let mut gw = Gateway::start_with(GatewayOptions::default().set("drain_window", "2s")).await;
    let clients = join_all((0..40).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("d{i}")).await }
    }))
    .await;
    let (status, body) = gw.post_json("/v1/drain", String::new()).await;
    assert_eq!((status, body["draining"].as_bool()), (202, Some(true)));
    assert_drains(&mut gw, clients, Duration::from_secs(2)).await;
}

/// The session events still pending at SIGTERM are written before the process exits: with the
/// periodic flush at its slowest (1 s), the final flush writes them (two final flushes once raced, and
/// the one that found nothing left ended the process while the other was writing).
#[tokio::test]
async fn the_last_session_events_are_written_before_exit() {
    let mut gw = Gateway::start_with(GatewayOptions::default().set("ack_flush_interval", "1s")).await;
    let mut clients = join_all((0..50).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("last{i}")).await }
    }))
    .await;
    for client in &mut clients {
        client.close().await;
    }
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    let db = format!("sqlite://{}", gw.data_dir.join("inbox.db").display());
    let pool = sqlx::SqlitePool::connect(&db).await.unwrap();
    let lines: Vec<(String, i64)> =
        sqlx::query_as("SELECT event, COUNT(*) FROM session_log GROUP BY event ORDER BY event")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(
        lines,
        [("close".to_owned(), 50), ("open".to_owned(), 50)],
        "every open and close is in the session log"
    );
}

#[tokio::test]
async fn an_idle_node_exits_promptly_on_sigterm() {
    let mut gw = Gateway::start().await;
    let started = Instant::now();
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).await.success());
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn partial_cluster_settings_exit_64_naming_what_is_missing() {
    let output = tokio::process::Command::new(binary("pushgate-gateway"))
        .env("PUSHGATE_REDIS_URL", "redis://127.0.0.1:6379")
        .env("PUSHGATE_DATA_DIR", std::env::temp_dir())
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("PUSHGATE_MYSQL_URL") && stderr.contains("PUSHGATE_AMQP_URL"), "{stderr}");
    assert!(!stderr.contains("PUSHGATE_REDIS_URL,"), "{stderr}");
}

#[tokio::test]
async fn bad_settings_exit_64() {
    let output = tokio::process::Command::new(binary("pushgate-gateway"))
        .args(["--set", "heartbeat=often"])
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("configuration error"));
}

#[tokio::test]
async fn the_token_subcommand_mints_tokens_the_gateway_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let gw =
        Gateway::start_with(GatewayOptions { data_dir: Some(dir.path().to_path_buf()), ..Default::default() }).await;
    let output = std::process::Command::new(binary("pushgate-gateway"))
        .args(["token", "--user", "dave", "--device", "pc", "--ttl", "10m", "--channels", "news,room:*"])
        .arg("--data-dir")
        .arg(dir.path())
        .env("PUSHGATE_JWT_SECRET", pushgate_tests::gateway::TEST_SECRET)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let token = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    let mut c = gw.connect_token(&token).await;
    assert_eq!(c.welcome.as_ref().unwrap()["user"], "dave");
    assert_eq!(c.subscribe("room:9", None).await["type"], "subscribed");
    assert_eq!(c.subscribe("other", None).await["code"], "forbidden");
    let output =
        std::process::Command::new(binary("pushgate-gateway")).args(["token", "--user", "bad user"]).output().unwrap();
    assert_eq!(output.status.code(), Some(64));
}

#[tokio::test]
async fn the_file_limit_is_raised_and_logged() {
    let gw = Gateway::start().await;
    pushgate_tests::eventually(pushgate_tests::WAIT, "the file-limit log line", || async {
        gw.log().contains("raised RLIMIT_NOFILE").then_some(())
    })
    .await;
    let limit = std::fs::read_to_string(format!("/proc/{}/limits", gw.pid())).unwrap();
    let line = limit.lines().find(|l| l.starts_with("Max open files")).unwrap().to_owned();
    let fields: Vec<&str> = line.split_whitespace().collect();
    assert_eq!(fields[3], fields[4], "soft limit raised to the hard limit: {line}");
}

#[tokio::test]
async fn running_out_of_file_descriptors_backs_off_and_recovers() {
    // Half-open handshakes give their descriptors back after 2 s, which lets the admin
    // listener (short of descriptors too) answer the metrics request.
    let gw = Gateway::start_with(GatewayOptions::default().set("handshake_timeout", "2s")).await;
    let pid = gw.pid();
    let open_fds = std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count();
    // Leave room for only a few more descriptors.
    let limit = open_fds + 3;
    let status = std::process::Command::new("prlimit")
        .arg(format!("--pid={pid}"))
        .arg(format!("--nofile={limit}:20000"))
        .status()
        .unwrap();
    assert!(status.success());
    let flood: Vec<RawClient> = join_all((0..20).map(|_| RawClient::open(gw.client_addr))).await;
    gw.wait_metric("pushgate_accept_errors_total", &[("kind", "resources")], |v| v >= 1.0).await;
    // Backing off, not spinning: well under one core over a second.
    let cpu = |pid: u32| {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<u64> =
            stat.rsplit_once(')').unwrap().1.split_whitespace().skip(11).take(2).map(|f| f.parse().unwrap()).collect();
        fields[0] + fields[1]
    };
    let before = cpu(pid);
    tokio::time::sleep(Duration::from_secs(1)).await;
    let ticks = cpu(pid) - before;
    assert!(ticks < 30, "the accept loop spun: {ticks} ticks of CPU in 1 s");
    // Descriptors come back: the pending connections are served, and new ones too.
    drop(flood);
    let status =
        std::process::Command::new("prlimit").arg(format!("--pid={pid}")).arg("--nofile=20000:20000").status().unwrap();
    assert!(status.success());
    let mut c = gw.connect("after").await;
    assert_eq!(c.ping().await["type"], "pong");
}

#[tokio::test]
async fn logs_can_be_json_lines() {
    let gw = Gateway::start_with(GatewayOptions::default().env("PUSHGATE_LOG_FORMAT", "json")).await;
    let _c = gw.connect("logged").await;
    let log = gw.log();
    let lines: Vec<&str> = log.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in lines {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        assert!(v["level"].is_string() && v["timestamp"].is_string(), "{line}");
    }
}
