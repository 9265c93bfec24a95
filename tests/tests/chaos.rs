//! Chaos on a cluster of 3 gateways and 2 dispatchers, each during a steady stream of durable
//! messages to two users with two devices each (on different nodes): SIGKILL a gateway, SIGKILL
//! a dispatcher, restart Redis, restart RabbitMQ, restart MariaDB, raise RabbitMQ's disk alarm.
//! Each ends with every durable message delivered to every device, in order, duplicates only of
//! messages whose ack could not have been recorded yet. And Redis out of memory, refusing writes
//! for longer than a node's lease: a message routed meanwhile still reaches the open session. And
//! Redis restarted during a stream of channel messages: each is received or counted in a `gap`.
//!
//! These restart the machine's shared services, so they run alone: `ops/test` runs this file in
//! its own pass, one test at a time.
#![allow(clippy::unwrap_used)]

use std::{
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

use pushgate_tests::{Client, Device, Dispatcher, RawClient, Received, TestCluster, eventually, services};
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

/// Redis restarted (it keeps nothing, so every topic's count begins again) during a stream of
/// channel messages: each subscriber, on each node, receives each message or is told of it in a
/// `gap` frame — none is lost silently.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_redis_during_a_channel_stream() {
    const STREAM: u64 = 300;
    let cluster = TestCluster::start(2, 1).await;
    let mut listeners = Vec::new();
    for (g, gw) in cluster.gateways.iter().enumerate() {
        let mut listener = gw.connect(&format!("listener-{g}")).await;
        assert_eq!(listener.subscribe("ticker", None).await["type"], "subscribed");
        listeners.push(listener);
    }
    let publish = async |data: serde_json::Value| {
        let body = json!({"to": {"channel": "ticker"}, "data": data}).to_string();
        eventually(Duration::from_secs(90), "a channel message accepted", || async {
            for gw in &cluster.gateways {
                if gw.post_json("/v1/publish", body.clone()).await.0 == 202 {
                    return Some(());
                }
            }
            None
        })
        .await;
    };
    let accepted = AtomicU64::new(0);
    let stream = async {
        for n in 0..STREAM {
            publish(json!({"n": n})).await;
            accepted.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let chaos = async {
        eventually(Duration::from_secs(60), "a third of the stream", || async {
            (accepted.load(Ordering::Relaxed) >= STREAM / 3).then_some(())
        })
        .await;
        services::restart_redis().await;
    };
    tokio::join!(stream, chaos);

    // Markers after the stream until each listener has one (a node may still be subscribing
    // again: a marker it misses is counted in a gap too).
    let mut markers = 0;
    for (g, listener) in listeners.iter_mut().enumerate() {
        let (mut received, mut dropped) = (std::collections::BTreeSet::new(), 0);
        'marker: loop {
            publish(json!("end")).await;
            markers += 1;
            assert!(markers < 60, "listener {g} got no marker");
            loop {
                let frame = listener.next_within(Duration::from_secs(1)).await;
                let Some(frame) = frame.json().cloned() else {
                    assert_eq!(frame, Received::Timeout, "listener {g}");
                    continue 'marker;
                };
                match (frame["type"].as_str(), frame["data"]["n"].as_u64()) {
                    (Some("gap"), _) => dropped += frame["dropped"].as_u64().unwrap(),
                    (Some("message"), Some(n)) => assert!(received.insert(n), "listener {g}: {n} twice"),
                    (Some("message"), None) if frame["data"] == "end" => break 'marker,
                    _ => panic!("listener {g}: unexpected {frame}"),
                }
            }
        }
        let told = received.len() as u64 + dropped;
        eprintln!("listener {g}: {} of {STREAM} received, {dropped} announced in gaps", received.len());
        assert!(
            told >= STREAM,
            "listener {g}: {} received + {dropped} in gaps < {STREAM}: lost silently",
            received.len()
        );
        assert!(told <= STREAM + markers, "listener {g}: {dropped} in gaps is more than was published");
    }
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

/// RabbitMQ's disk alarm blocks every connection that publishes — the gateways' HTTP publishes
/// and events, the dispatchers' deliveries to nodes — until it lifts; the broker says so
/// (`connection.blocked`) once a connection has published into the alarm. An HTTP publish then
/// answers 503 when its wait for the broker is over, not when the alarm lifts: the first one a
/// gateway sends into the alarm with its `id` (the broker may take it late), every later one
/// without sending anything, and what it refused so is never delivered. The gateway shows the
/// block in `pushgate_broker_blocked` and stays ready for sessions; once the alarm lifts, the
/// stream completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rabbitmq_disk_alarm() {
    const BLOCKED: &str = "pushgate_broker_blocked";
    let cluster = TestCluster::start(3, 2).await;
    // The probes go to a user of their own, watched by one device.
    let watcher =
        Device::start(cluster.ws_urls(), cluster.gateways[0].token("chaos-probe", Some("one"), &[]), ACK_GRACE);
    let probe = |id: &str| json!({"id": id, "to": {"users": ["chaos-probe"]}, "data": "probe"}).to_string();
    let mut sent_into_alarm = true;
    // The stream goes through gateways 0 and 2; gateway 1 is probed.
    under_stream(cluster, vec![0, 2], async |cluster| {
        let gw = &cluster.gateways[1];
        let alarm = services::DiskAlarm::raise();
        // Into the alarm: the broker reads it, then blocks the connection, and no confirm comes.
        let asked = tokio::time::Instant::now();
        let (status, body) = gw.post_json("/v1/publish", probe("sent-into-alarm")).await;
        let waited = asked.elapsed();
        assert_eq!((status, &body["error"]), (503, &json!("unavailable")), "{body}");
        assert!(waited < Duration::from_secs(12), "answered after {waited:?}");
        // Unless the node's own events reached the alarm first, and this one was refused unsent.
        sent_into_alarm = body.get("id").is_some();
        gw.wait_metric(BLOCKED, &[], |v| v == 1.0).await;
        // Known to be blocked: nothing is sent, and the answer comes after the broker wait (5 s).
        let asked = tokio::time::Instant::now();
        let (status, body) = gw.post_json("/v1/publish", probe("refused-while-blocked")).await;
        let waited = asked.elapsed();
        assert_eq!(status, 503, "{body}");
        assert!(body.get("id").is_none(), "{body}");
        assert!(body["message"].as_str().unwrap().contains("blocking publishers: low on disk"), "{body}");
        assert!((Duration::from_secs(4)..Duration::from_secs(8)).contains(&waited), "answered after {waited:?}");
        // Sessions are not the broker's business: the node stays ready for them.
        assert_eq!(gw.get_json("/readyz").await.0, 200);
        drop(alarm);
        gw.wait_metric(BLOCKED, &[], |v| v == 0.0).await;
        assert!(gw.metrics().await.lines().any(|l| l == format!("{BLOCKED} 0")), "the gauge is exported");
        Vec::new()
    })
    .await;
    // The stream is complete, so anything the broker took from the gateway is through too.
    let expected: &[&str] = if sent_into_alarm { &["sent-into-alarm"] } else { &[] };
    if sent_into_alarm {
        watcher.wait_for(1, Duration::from_secs(30)).await;
    }
    assert_eq!(watcher.log().ids, expected, "the broker's late take delivered, the refused publish never");
    watcher.assert_guarantees(expected.len() as u64);
}

/// Redis out of memory refuses every write — presence, leases — and goes on answering reads and
/// `PING`. Each gateway says so (readiness 503 naming redis, `pushgate_backend_up{backend="redis"}`
/// 0) and refuses a new session at once with 503 `backend_down`, instead of upgrading it only to
/// close it; open sessions stay, and the dispatcher, which routes with reads, stays up. The
/// nodes' leases lapse meanwhile, so a user's message is routed to no node and waits in the inbox:
/// once Redis takes writes again, the node that held the user's session renews its lease, writes
/// its presence again and has its sessions re-read their inboxes, so the message reaches the open
/// session with no reconnect and no later message to pull it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_refuses_writes() {
    const REDIS_UP: &str = "pushgate_backend_up";
    const REDIS: &[(&str, &str)] = &[("backend", "redis")];
    /// A gateway's lease (10 s) and a renewal period (2.5 s), with a margin.
    const LEASE_LAPSED: Duration = Duration::from_secs(14);
    let cluster = TestCluster::start(2, 1).await;
    let token = cluster.gateways[0].token("chaos-probe", Some("one"), &[]);
    let watcher = Device::start(vec![cluster.gateways[0].ws_url()], token.clone(), ACK_GRACE);
    let probe = |id: &str| json!({"id": id, "to": {"users": ["chaos-probe"]}, "data": "probe"}).to_string();
    assert_eq!(cluster.gateways[1].post_json("/v1/publish", probe("before")).await.0, 202);
    watcher.wait_for(1, Duration::from_secs(10)).await;

    let refusal = services::RedisRefusesWrites::start();
    for gw in &cluster.gateways {
        gw.wait_metric(REDIS_UP, REDIS, |v| v == 0.0).await;
        let (status, body) = gw.get_json("/readyz").await;
        assert_eq!((status, &body["error"]), (503, &json!("backend_down")), "{body}");
        assert!(body["message"].as_str().unwrap().contains("redis"), "{body}");
        let log = gw.log();
        assert!(log.contains("Redis fails its health check") && log.contains("OOM"), "the log says why");
    }
    let dispatcher = cluster.dispatchers[0].metrics().await;
    assert!(dispatcher.contains(r#"pushgate_backend_up{backend="redis"} 1"#), "the dispatcher reads on: {dispatcher}");
    // A new session is refused before its upgrade, at once, and told when to come back.
    let addr = cluster.gateways[0].client_addr;
    let asked = tokio::time::Instant::now();
    let (status, head, body) = RawClient::http(addr, &RawClient::upgrade_request(addr, &token)).await;
    assert_eq!(status, 503, "{head}{body}");
    assert!(body.contains("backend_down") && body.contains("presence"), "{body}");
    assert!(head.to_ascii_lowercase().contains("retry-after:"), "{head}");
    assert!(asked.elapsed() < Duration::from_secs(1), "refused after {:?}", asked.elapsed());

    // Published once every lease has lapsed: accepted (MySQL and RabbitMQ are fine), stored.
    tokio::time::sleep(LEASE_LAPSED).await;
    assert_eq!(cluster.gateways[1].post_json("/v1/publish", probe("while-refused")).await.0, 202);
    drop(refusal);

    for gw in &cluster.gateways {
        gw.wait_metric(REDIS_UP, REDIS, |v| v == 1.0).await;
        gw.wait_ready().await;
    }
    watcher.wait_for(2, Duration::from_secs(15)).await;
    // The node found its lease lapsed, or a sweep took its presence first.
    let log = cluster.gateways[0].log();
    assert!(log.contains("this node's lease lapsed") || log.contains("Redis lost this node's presence"));
    let log = watcher.log();
    assert_eq!(log.ids, ["before", "while-refused"]);
    assert_eq!(log.connections, 1, "delivered to the open session: {:?}", log.endings);
    watcher.assert_guarantees(2);
    let mut client = Client::connect(&format!("{}?token={token}", cluster.gateways[1].ws_url())).await.unwrap();
    client.expect("welcome").await;
}
