//! Chaos on a cluster of 3 gateways and 2 dispatchers, each during a steady stream of durable
//! messages to two users with two devices each (on different nodes): SIGKILL a gateway, SIGKILL
//! a dispatcher, restart Redis, restart RabbitMQ, restart MariaDB. Each ends with every durable
//! message delivered to every device, in order, duplicates only of messages whose ack could not
//! have been recorded yet.
//!
//! These restart the machine's shared services, so they run alone: `ops/test` runs this file in
//! its own pass, one test at a time.
#![allow(clippy::unwrap_used)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use pushgate_tests::{Device, Dispatcher, TestCluster, eventually, services};
use serde_json::json;

/// Messages per run (each to both users) and the publish rate.
const MESSAGES: u64 = 600;
const RATE_PER_S: u64 = 100;
/// Acks older than this at a disconnect must have reached MySQL (they travel gateway → RabbitMQ
/// → dispatcher → MySQL, batched twice at ≤ 500 ms each).
const ACK_GRACE: Duration = Duration::from_secs(3);
const USERS: [&str; 2] = ["chaos-a", "chaos-b"];

/// Publishes message `n` with id `chaos-n` until some gateway accepts it; the same id makes a
/// retry after an ambiguous failure harmless.
async fn publish_until_accepted(cluster: &TestCluster, n: u64, alive: &[usize]) {
    let body = json!({"id": format!("chaos-{n}"), "to": {"users": USERS}, "data": {"n": n}}).to_string();
    eventually(Duration::from_secs(90), &format!("message {n} accepted"), || {
        let body = body.clone();
        async move {
            for &g in alive {
                if cluster.gateways[g].post_json("/v1/publish", body.clone()).await.0 == 202 {
                    return Some(());
                }
            }
            None
        }
    })
    .await;
}

/// Runs the stream with `chaos` started once a third of it is accepted, then checks every
/// device. Processes the chaos starts are kept alive until the end.
async fn under_stream(
    cluster: TestCluster,
    publish_via: Vec<usize>,
    chaos: impl AsyncFnOnce(&TestCluster) -> Vec<Dispatcher>,
) {
    let urls = cluster.ws_urls();
    // Two devices per user, starting on different nodes; each device reconnects by itself.
    let devices: Vec<Device> = USERS
        .iter()
        .flat_map(|user| ["one", "two"].map(|device| (user, device)))
        .enumerate()
        .map(|(i, (user, device))| {
            let mut order = urls.clone();
            order.rotate_left(i % urls.len());
            let token = cluster.gateways[0].token(user, Some(device), &[]);
            Device::start(order, token, ACK_GRACE)
        })
        .collect();
    for device in &devices {
        eventually(Duration::from_secs(10), "devices connected", || async {
            (device.log().connections > 0).then_some(())
        })
        .await;
    }
    let accepted = AtomicU64::new(0);
    let stream = async {
        let interval = Duration::from_secs_f64(1.0 / RATE_PER_S as f64);
        let started = tokio::time::Instant::now();
        for n in 0..MESSAGES {
            tokio::time::sleep_until(started + interval * n as u32).await;
            publish_until_accepted(&cluster, n, &publish_via).await;
            accepted.fetch_add(1, Ordering::Relaxed);
        }
    };
    let chaos = async {
        eventually(Duration::from_secs(60), "a third of the stream", || async {
            (accepted.load(Ordering::Relaxed) >= MESSAGES / 3).then_some(())
        })
        .await;
        chaos(&cluster).await
    };
    let ((), _kept) = tokio::join!(stream, chaos);
    for device in &devices {
        device.wait_for(MESSAGES, Duration::from_secs(90)).await;
        device.assert_guarantees(MESSAGES);
    }
    let reconnects: usize = devices.iter().map(|d| d.log().connections - 1).sum();
    let duplicates: usize = devices.iter().map(|d| d.log().duplicates.len()).sum();
    eprintln!("all {MESSAGES} messages on all 4 devices, in order; {reconnects} reconnects, {duplicates} duplicates");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_a_gateway() {
    let cluster = TestCluster::start(3, 2).await;
    under_stream(cluster, vec![2, 1], async |cluster| {
        cluster.gateways[0].signal("KILL");
        Vec::new()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_the_dispatchers_one_after_the_other() {
    let cluster = TestCluster::start(3, 2).await;
    under_stream(cluster, vec![0, 1, 2], async |cluster| {
        // Whichever held the partitions dies; a third dispatcher arrives before the second dies.
        cluster.dispatchers[0].signal("KILL");
        let third = cluster.new_dispatcher().await;
        third.wait_ready().await;
        cluster.dispatchers[1].signal("KILL");
        vec![third]
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis() {
    let cluster = TestCluster::start(3, 2).await;
    under_stream(cluster, vec![0, 1, 2], async |cluster| {
        services::restart_redis().await;
        // Every node noticed that Redis forgot it, wrote its presence again and had its
        // sessions re-read their inboxes.
        for gw in &cluster.gateways {
            eventually(Duration::from_secs(30), "presence written again", || async {
                gw.log().contains("Redis lost this node's presence").then_some(())
            })
            .await;
        }
        Vec::new()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_rabbitmq() {
    let cluster = TestCluster::start(3, 2).await;
    under_stream(cluster, vec![0, 1, 2], async |cluster| {
        services::restart_rabbitmq().await;
        // Every node and dispatcher reconnected.
        for gw in &cluster.gateways {
            eventually(Duration::from_secs(30), "a gateway reconnected", || async {
                gw.log().contains("connected to RabbitMQ generation=2").then_some(())
            })
            .await;
        }
        for d in &cluster.dispatchers {
            eventually(Duration::from_secs(30), "a dispatcher reconnected", || async {
                d.log().contains("connected to RabbitMQ generation=2").then_some(())
            })
            .await;
        }
        Vec::new()
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_mariadb() {
    let cluster = TestCluster::start(3, 2).await;
    under_stream(cluster, vec![0, 1, 2], async |_| {
        services::restart_mariadb().await;
        Vec::new()
    })
    .await;
}
