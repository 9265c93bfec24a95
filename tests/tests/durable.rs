//! Durable delivery (SPEC §6) end to end, the same scenarios against a gateway on real SQLite
//! and on real MariaDB: order and consecutive seqs, cursors per device, resume with `last_seq`,
//! acks, idempotency, many receivers, an offline backlog with bounded memory, expiry, replay
//! racing live traffic, and a SIGKILL in the middle of a publish stream.
#![allow(clippy::unwrap_used)]

use std::{collections::HashSet, time::Duration};

use futures_util::future::join_all;
use pushgate_tests::{Client, Gateway, GatewayOptions, Received, TestDatabase, WAIT, eventually};
use serde_json::{Value, json};

/// A gateway on the given store, and what keeps the store alive.
struct Node {
    gw: Gateway,
    db: Option<TestDatabase>,
}

async fn node(kind: &str, options: GatewayOptions) -> Node {
    match kind {
        "sqlite" => Node { gw: Gateway::start_with(options).await, db: None },
        _ => {
            let db = TestDatabase::create().await;
            let gw = Gateway::start_with(options.set("store_url", &db.url)).await;
            Node { gw, db: Some(db) }
        }
    }
}

async fn publish(gw: &Gateway, envelope: Value) -> Value {
    let (status, body) = gw.publish(&envelope).await;
    assert_eq!(status, 202, "{envelope} → {body}");
    body
}

/// `count` durable messages to `user` from `publishers` concurrent publishers; publisher `p`
/// sends n = p, p + publishers, … in order.
async fn publish_many(gw: &Gateway, user: &str, count: u64, publishers: u64) {
    join_all((0..publishers).map(|p| async move {
        let mut n = p;
        while n < count {
            publish(gw, json!({"to": {"users": [user]}, "data": {"n": n, "p": p}})).await;
            n += publishers;
        }
    }))
    .await;
}

/// Reads `count` messages and checks their seqs follow `after` without a gap or a repeat.
async fn read_consecutive(client: &mut Client, after: u64, count: u64) -> Vec<Value> {
    let mut messages = Vec::with_capacity(count as usize);
    for expected in after + 1..=after + count {
        let m = client.next_of_type("message").await;
        assert_eq!(m["seq"].as_u64(), Some(expected), "after {:?}", messages.last());
        messages.push(m);
    }
    messages
}

/// Connects `device` of `user` until the welcome shows `cursor` (acks are written within a
/// second of the ack, and at the latest when the session closes).
async fn connect_at_cursor(gw: &Gateway, user: &str, device: &str, cursor: u64) -> Client {
    eventually(WAIT, &format!("{user}/{device} resuming after {cursor}"), || async {
        let c = gw.connect_token(&gw.token(user, Some(device), &[])).await;
        (c.welcome.as_ref().unwrap()["last_seq"] == cursor).then_some(c)
    })
    .await
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("sqlite").await })*
        }
        mod mariadb {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name("mariadb").await })*
        }
    };
}

both_stores!(
    ten_thousand_messages_arrive_in_order_with_consecutive_seqs,
    two_devices_keep_independent_cursors,
    reconnecting_mid_stream_with_last_seq_resumes_exactly,
    acked_messages_are_not_replayed,
    the_same_id_twice_is_stored_and_delivered_once,
    one_envelope_reaches_a_thousand_users,
    an_offline_backlog_of_fifty_thousand_arrives_in_order_in_bounded_memory,
    expired_messages_never_arrive,
    replay_and_live_traffic_interleave_without_gaps_or_repeats,
    a_sigkill_loses_no_accepted_message_and_reuses_no_seq,
    bad_acks_are_refused_and_change_nothing,
);

async fn ten_thousand_messages_arrive_in_order_with_consecutive_seqs(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    let mut client = n.gw.connect_token(&n.gw.token("reader", Some("d1"), &[])).await;
    const COUNT: u64 = 10_000;
    const PUBLISHERS: u64 = 16;
    let (_, messages) =
        tokio::join!(publish_many(&n.gw, "reader", COUNT, PUBLISHERS), read_consecutive(&mut client, 0, COUNT));
    // Each publisher's messages arrive in the order it sent them.
    let mut last = vec![None::<u64>; PUBLISHERS as usize];
    for m in &messages {
        let (p, n) = (m["data"]["p"].as_u64().unwrap() as usize, m["data"]["n"].as_u64().unwrap());
        assert!(last[p].is_none_or(|l| n > l), "publisher {p}: {n} after {:?}", last[p]);
        last[p] = Some(n);
    }
    let distinct: HashSet<u64> = messages.iter().map(|m| m["data"]["n"].as_u64().unwrap()).collect();
    assert_eq!(distinct.len() as u64, COUNT);
}

async fn two_devices_keep_independent_cursors(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    publish_many(&n.gw, "dual", 10, 1).await;
    let mut a = n.gw.connect_token(&n.gw.token("dual", Some("a"), &[])).await;
    assert_eq!(a.welcome.as_ref().unwrap()["last_seq"], 0);
    read_consecutive(&mut a, 0, 10).await;
    a.send_json(&json!({"type": "ack", "seq": 6})).await;
    a.close().await;
    // A device that never acked starts after what any device acked.
    let mut b = connect_at_cursor(&n.gw, "dual", "b", 6).await;
    read_consecutive(&mut b, 6, 4).await;
    b.send_json(&json!({"type": "ack", "seq": 8})).await;
    b.close().await;
    let mut a = connect_at_cursor(&n.gw, "dual", "a", 6).await;
    read_consecutive(&mut a, 6, 4).await;
    let mut b = connect_at_cursor(&n.gw, "dual", "b", 8).await;
    read_consecutive(&mut b, 8, 2).await;
}

async fn reconnecting_mid_stream_with_last_seq_resumes_exactly(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    publish_many(&n.gw, "mid", 100, 4).await;
    let token = n.gw.token("mid", Some("p"), &[]);
    let mut c = n.gw.connect_token(&token).await;
    read_consecutive(&mut c, 0, 40).await;
    drop(c);
    let mut c = n.gw.connect_token(&format!("{token}&last_seq=40")).await;
    assert_eq!(c.welcome.as_ref().unwrap()["last_seq"], 40);
    read_consecutive(&mut c, 40, 60).await;
    publish(&n.gw, json!({"to": {"users": ["mid"]}, "data": "marker"})).await;
    assert_eq!(c.next_of_type("message").await["seq"], 101, "nothing beyond 100 was replayed");
    // A last_seq above the newest replays nothing, and the cursor is lowered to the newest so
    // that the next message arrives.
    let mut c = n.gw.connect_token(&format!("{token}&last_seq=5000")).await;
    assert_eq!(c.welcome.as_ref().unwrap()["last_seq"], 101);
    publish(&n.gw, json!({"to": {"users": ["mid"]}, "data": "live"})).await;
    let m = c.next_of_type("message").await;
    assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(102), Some("live")));
}

async fn acked_messages_are_not_replayed(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    publish_many(&n.gw, "acker", 20, 2).await;
    let mut c = n.gw.connect_token(&n.gw.token("acker", Some("tab"), &[])).await;
    read_consecutive(&mut c, 0, 20).await;
    c.send_json(&json!({"type": "ack", "seq": 20})).await;
    c.close().await;
    let mut c = connect_at_cursor(&n.gw, "acker", "tab", 20).await;
    publish(&n.gw, json!({"to": {"users": ["acker"]}, "data": "new"})).await;
    let m = c.next_of_type("message").await;
    assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(21), Some("new")));
}

async fn the_same_id_twice_is_stored_and_delivered_once(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    let mut c = n.gw.connect("idem").await;
    let first = publish(&n.gw, json!({"id": "order-42", "to": {"users": ["idem"]}, "data": 1})).await;
    let second = publish(&n.gw, json!({"id": "order-42", "to": {"users": ["idem"]}, "data": 2})).await;
    assert_eq!((first["id"].as_str(), second["id"].as_str()), (Some("order-42"), Some("order-42")));
    assert_eq!(second["duplicate"], true);
    publish(&n.gw, json!({"id": "order-43", "to": {"users": ["idem"]}, "data": 3})).await;
    let m1 = c.next_of_type("message").await;
    let m2 = c.next_of_type("message").await;
    assert_eq!((m1["id"].as_str(), m1["seq"].as_u64(), m1["data"].as_i64()), (Some("order-42"), Some(1), Some(1)));
    assert_eq!((m2["id"].as_str(), m2["seq"].as_u64()), (Some("order-43"), Some(2)));
}

async fn one_envelope_reaches_a_thousand_users(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    let users: Vec<String> = (0..1000).map(|i| format!("crowd-{i}")).collect();
    let mut clients = join_all(users.iter().map(|u| n.gw.connect(u))).await;
    publish(&n.gw, json!({"to": {"users": users}, "data": "hello, all"})).await;
    join_all(clients.iter_mut().map(|c| async move {
        let m = c.next_of_type("message").await;
        assert_eq!((m["seq"].as_u64(), m["data"].as_str()), (Some(1), Some("hello, all")));
    }))
    .await;
}

fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb: u64 =
        status.lines().find(|l| l.starts_with("VmRSS:")).unwrap().split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

async fn an_offline_backlog_of_fifty_thousand_arrives_in_order_in_bounded_memory(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    const COUNT: u64 = 50_000;
    publish_many(&n.gw, "offline", COUNT, 32).await;
    let pid = n.gw.pid();
    let before = rss_bytes(pid);
    let mut c = n.gw.connect_token(&n.gw.token("offline", Some("phone"), &[])).await;
    let mut peak = before;
    for chunk in 0..COUNT / 1000 {
        read_consecutive(&mut c, chunk * 1000, 1000).await;
        peak = peak.max(rss_bytes(pid));
    }
    let growth = peak.saturating_sub(before);
    assert!(growth < 48 * 1024 * 1024, "replaying grew the gateway by {} MiB", growth / 1048576);
    eprintln!("replay of {COUNT}: gateway RSS {} MiB → peak {} MiB", before / 1048576, peak / 1048576);
}

async fn expired_messages_never_arrive(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    publish(&n.gw, json!({"to": {"users": ["late"]}, "data": "kept", "ttl_s": 3600})).await;
    publish(&n.gw, json!({"to": {"users": ["late"]}, "data": "brief", "ttl_s": 1})).await;
    publish(&n.gw, json!({"to": {"users": ["late"]}, "data": "kept too", "ttl_s": 3600})).await;
    // Wait until the second message's time-to-live is over.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let mut c = n.gw.connect("late").await;
    let first = c.next_of_type("message").await;
    let second = c.next_of_type("message").await;
    assert_eq!((first["seq"].as_u64(), first["data"].as_str()), (Some(1), Some("kept")));
    assert_eq!((second["seq"].as_u64(), second["data"].as_str()), (Some(3), Some("kept too")));
}

async fn replay_and_live_traffic_interleave_without_gaps_or_repeats(kind: &str) {
    // A small outbox makes live frames overflow while the replay runs.
    let n = node(kind, GatewayOptions::default().set("outbox_max_frames", 16).set("replay_page", 64)).await;
    publish_many(&n.gw, "busy", 3000, 16).await;
    let token = n.gw.token("busy", Some("x"), &[]);
    let c = n.gw.connect_token(&token).await;
    let live = async {
        join_all((0..8u64).map(|p| {
            let gw = &n.gw;
            async move {
                for i in 0..250u64 {
                    publish(gw, json!({"to": {"users": ["busy"]}, "data": {"live": p * 1000 + i}})).await;
                }
            }
        }))
        .await
    };
    let (_, messages) = tokio::join!(live, read_resuming(&n.gw, &token, c, 5000));
    assert_eq!(messages.len(), 5000);
}

/// Reads `count` messages from `seq` 1 on and checks they follow one another without a gap or a
/// repeat — across reconnects: closed as a slow consumer (4001: after the replay, live frames
/// overflow a small outbox when the client falls behind, as on a loaded machine), it reconnects
/// with `last_seq` and resumes, as the SPEC tells a client to (close codes; §6).
async fn read_resuming(gw: &Gateway, token: &str, mut client: Client, count: u64) -> Vec<Value> {
    const MAX_RECONNECTS: u32 = 50;
    let mut messages: Vec<Value> = Vec::with_capacity(count as usize);
    let mut reconnects = 0;
    while (messages.len() as u64) < count {
        match client.next().await {
            Received::Frame(frame) if frame["type"] == "message" => {
                assert_eq!(frame["seq"].as_u64(), Some(messages.len() as u64 + 1), "after {:?}", messages.last());
                messages.push(frame);
            }
            Received::Frame(_) => {}
            Received::Close(4001, _) if reconnects < MAX_RECONNECTS => {
                reconnects += 1;
                client = gw.connect_token(&format!("{token}&last_seq={}", messages.len())).await;
            }
            other => panic!("expected a message frame after {} messages, got {other:?}", messages.len()),
        }
    }
    messages
}

async fn a_sigkill_loses_no_accepted_message_and_reuses_no_seq(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    let data_dir = n.gw.data_dir.clone();
    let accepted = std::sync::Mutex::new(Vec::<String>::new());
    // Eight publishers stream until the gateway dies under them.
    let stream = join_all((0..8).map(|p| {
        let accepted = &accepted;
        let gw = &n.gw;
        async move {
            for i in 0.. {
                let id = format!("kill-{p}-{i}");
                let sent = reqwest::Client::new()
                    .post(gw.admin_url("/v1/publish"))
                    .body(json!({"id": id, "to": {"users": ["victim"]}, "data": {"id": id}}).to_string())
                    .send()
                    .await;
                match sent {
                    Ok(r) if r.status() == 202 => accepted.lock().unwrap().push(id),
                    _ => break,
                }
            }
        }
    }));
    let killer = async {
        eventually(WAIT, "some accepted messages", || async { (accepted.lock().unwrap().len() >= 300).then_some(()) })
            .await;
        n.gw.signal("KILL");
    };
    tokio::join!(stream, killer);
    let before_kill = accepted.lock().unwrap().clone();
    // Restart on the same data dir (or database) and go on publishing.
    let mut options = GatewayOptions { data_dir: Some(data_dir), ..Default::default() };
    if let Some(db) = &n.db {
        options = options.set("store_url", &db.url);
    }
    let gw = Gateway::start_with(options).await;
    for i in 0..50 {
        publish(
            &gw,
            json!({"id": format!("after-{i}"), "to": {"users": ["victim"]}, "data": {"id": format!("after-{i}")}}),
        )
        .await;
    }
    let mut c = gw.connect("victim").await;
    let mut seen = HashSet::new();
    let mut seq = 0;
    loop {
        let m = c.next_of_type("message").await;
        seq += 1;
        assert_eq!(m["seq"].as_u64(), Some(seq), "no seq reused or skipped");
        let id = m["id"].as_str().unwrap().to_owned();
        assert!(seen.insert(id.clone()), "{id} delivered twice");
        if id == "after-49" {
            break;
        }
    }
    let missing: Vec<&String> = before_kill.iter().filter(|id| !seen.contains(*id)).collect();
    assert!(missing.is_empty(), "{} accepted messages lost: {:?}", missing.len(), &missing[..missing.len().min(5)]);
    drop(n);
}

async fn bad_acks_are_refused_and_change_nothing(kind: &str) {
    let n = node(kind, GatewayOptions::default()).await;
    publish_many(&n.gw, "careful", 5, 1).await;
    let mut c = n.gw.connect_token(&n.gw.token("careful", Some("d"), &[])).await;
    read_consecutive(&mut c, 0, 5).await;
    c.send_json(&json!({"type": "ack", "seq": 3})).await;
    for bad in [
        json!({"type": "ack", "seq": 6}),
        json!({"type": "ack", "seq": -1}),
        json!({"type": "ack", "seq": 2.5}),
        json!({"type": "ack", "seq": "4"}),
    ] {
        c.send_json(&bad).await;
        assert_eq!(c.expect("error").await["code"], "bad_frame", "{bad}");
    }
    c.close().await;
    let mut c = connect_at_cursor(&n.gw, "careful", "d", 3).await;
    read_consecutive(&mut c, 3, 2).await;
    // last_seq that is not a number: 400 before the upgrade.
    let token = n.gw.token("careful", Some("d"), &[]);
    assert!(Client::connect(&format!("{}?token={token}&last_seq=soon", n.gw.ws_url())).await.is_err());
}
