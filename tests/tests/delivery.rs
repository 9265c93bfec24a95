//! Delivery on one node: to every device of a user, to a channel's subscribers, to everyone —
//! exactly the right sessions, once each — and the slow-consumer policy (`gap` frames).
#![allow(clippy::unwrap_used)]

use futures_util::future::join_all;
use pushgate_tests::{Client, Gateway, GatewayOptions, RawClient, WAIT};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// Publishes a marker to `user` and checks it is the next message `client` sees, proving that
/// nothing published before it reached this client.
async fn assert_nothing_before_marker(gw: &Gateway, client: &mut Client, user: &str) {
    let (status, _) = gw.publish(&json!({"to": {"users": [user]}, "data": "marker", "persist": false})).await;
    assert_eq!(status, 202);
    let m = client.next_of_type("message").await;
    assert_eq!(m["data"], "marker", "{user} received {m}");
}

#[tokio::test]
async fn a_user_message_reaches_every_device_of_that_user_only() {
    let gw = Gateway::start().await;
    let mut phone = gw.connect_token(&gw.token("u1", Some("phone"), &[])).await;
    let mut laptop = gw.connect_token(&gw.token("u1", Some("laptop"), &[])).await;
    let mut other = gw.connect("u2").await;

    let (status, body) =
        gw.publish(&json!({"id": "hello-1", "to": {"users": ["u1"]}, "data": {"text": "hi"}, "persist": false})).await;
    assert_eq!((status, body["id"].as_str()), (202, Some("hello-1")));
    for device in [&mut phone, &mut laptop] {
        let m = device.next_of_type("message").await;
        assert_eq!((m["id"].as_str(), m["data"]["text"].as_str()), (Some("hello-1"), Some("hi")));
        assert!(m["ts"].as_u64().unwrap() > 1_600_000_000_000);
        assert!(m.get("channel").is_none());
    }
    assert_nothing_before_marker(&gw, &mut other, "u2").await;
    // Both devices appear in presence.
    let (_, presence) = gw.get_json("/v1/users/u1/presence").await;
    assert_eq!(presence["online"], true);
    let mut devices: Vec<_> =
        presence["sessions"].as_array().unwrap().iter().map(|s| s["device"].as_str().unwrap().to_owned()).collect();
    devices.sort();
    assert_eq!(devices, vec!["laptop", "phone"]);
}

#[tokio::test]
async fn publishing_to_many_users_reaches_each() {
    let gw = Gateway::start().await;
    let mut clients = join_all((0..20).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("user{i}")).await }
    }))
    .await;
    let users: Vec<String> = (0..20).map(|i| format!("user{i}")).collect();
    let (status, _) = gw.publish(&json!({"to": {"users": users}, "data": 7, "persist": false})).await;
    assert_eq!(status, 202);
    for c in &mut clients {
        assert_eq!(c.next_of_type("message").await["data"], 7);
    }
}

#[tokio::test]
async fn a_channel_message_fans_out_to_its_subscribers_only() {
    let gw = Gateway::start().await;
    const N: usize = 400;
    let mut clients = join_all((0..N).map(|i| {
        let gw = &gw;
        async move {
            let mut c = gw.connect(&format!("fan{i}")).await;
            if i % 2 == 0 {
                assert_eq!(c.subscribe("hot", None).await["type"], "subscribed");
            }
            c
        }
    }))
    .await;
    gw.wait_metric("pushgate_sessions", &[], |v| v as usize == N).await;
    let (status, body) = gw.publish(&json!({"to": {"channel": "hot"}, "data": {"n": 1}})).await;
    assert_eq!(status, 202, "{body}");
    let results = join_all(clients.iter_mut().enumerate().map(|(i, c)| {
        let gw = &gw;
        async move {
            if i % 2 == 0 {
                let m = c.next_of_type("message").await;
                assert_eq!((m["channel"].as_str(), m["data"]["n"].as_i64()), (Some("hot"), Some(1)));
                assert!(m.get("seq").is_none());
            }
            assert_nothing_before_marker(gw, c, &format!("fan{i}")).await;
        }
    }))
    .await;
    assert_eq!(results.len(), N);
    assert!(gw.metric("pushgate_deliveries_total", &[("target", "channel")]).await >= (N / 2) as f64);
}

#[tokio::test]
async fn a_broadcast_reaches_every_session_once() {
    let gw = Gateway::start().await;
    let mut clients = join_all((0..200).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("b{}", i % 50)).await }
    }))
    .await;
    let (status, _) = gw.publish(&json!({"to": {"all": true}, "data": "everyone"})).await;
    assert_eq!(status, 202);
    join_all(clients.iter_mut().enumerate().map(|(i, c)| {
        let gw = &gw;
        async move {
            assert_eq!(c.next_of_type("message").await["data"], "everyone");
            // Once: the next message is the marker, not a second copy.
            assert_nothing_before_marker(gw, c, &format!("b{}", i % 50)).await;
        }
    }))
    .await;
}

/// Channel messages received (their `data.n` checked to be in order) and the drops that `gap`
/// frames announced.
#[derive(Default)]
struct Tally {
    received: u64,
    dropped: u64,
    last_n: Option<u64>,
}

impl Tally {
    /// Counts `v` when it is a message or a `gap` (on `gap_channel`, when given); false for any
    /// other frame.
    fn count(&mut self, v: &Value, gap_channel: Option<&str>) -> bool {
        match v["type"].as_str() {
            Some("message") => {
                let n = v["data"]["n"].as_u64().unwrap();
                assert!(self.last_n.is_none_or(|l| n > l), "in order: {n} after {:?}", self.last_n);
                self.last_n = Some(n);
                self.received += 1;
            }
            Some("gap") => {
                if let Some(channel) = gap_channel {
                    assert_eq!(v["channel"], channel);
                }
                self.dropped += v["dropped"].as_u64().unwrap();
            }
            _ => return false,
        }
        true
    }

    fn accounted(&self) -> u64 {
        self.received + self.dropped
    }
}

/// Reads `slow`'s frames until messages plus the drops its `gap` frames announce account for
/// `sent` channel messages, checking order; returns (received, dropped).
async fn account(client: &mut Client, sent: u64) -> (u64, u64) {
    let mut tally = Tally::default();
    while tally.accounted() < sent {
        let frame = client.next().await;
        let v = frame.json().unwrap_or_else(|| panic!("session ended: {frame:?}"));
        tally.count(v, Some("firehose"));
    }
    assert_eq!(tally.accounted(), sent);
    (tally.received, tally.dropped)
}

#[tokio::test]
async fn a_slow_session_gets_a_gap_for_what_it_missed() {
    let gw = Gateway::start_with(GatewayOptions::default().set("outbox_max_frames", 8)).await;
    let mut slow = gw.connect("slow").await;
    slow.subscribe("firehose", None).await;
    let mut fast = gw.connect("fast").await;
    fast.subscribe("firehose", None).await;

    // ~24 MB of channel messages while `slow` reads nothing: more than the socket buffers hold.
    const SENT: u64 = 400;
    let blob = "x".repeat(60_000);
    let publisher = async {
        for n in 0..SENT {
            let (status, _) = gw.publish(&json!({"to": {"channel": "firehose"}, "data": {"n": n, "blob": blob}})).await;
            assert_eq!(status, 202);
        }
    };
    let reader = async { account(&mut fast, SENT).await };
    let (_, (fast_received, _)) = tokio::join!(publisher, reader);
    assert!(fast_received > 0);

    // Now the slow session reads: messages + announced drops account for every message.
    let (received, dropped) = account(&mut slow, SENT).await;
    assert_eq!(received + dropped, SENT);
    assert!(dropped > 0, "the slow session must have dropped something");
    assert!(gw.metric("pushgate_drops_total", &[("reason", "outbox_full")]).await >= dropped as f64);
    // Still open and serving.
    assert_eq!(slow.ping().await["type"], "pong");
}

#[tokio::test]
async fn frames_written_at_once_never_interleave_with_the_sessions_own_replies() {
    // A channel message reaches an idle session by a direct write from the delivery walk; the
    // session's replies (here `pong`s) are written by its task. Both share one socket: every
    // frame must arrive whole, the messages in order, and every reply exactly once. (The
    // client's rate limit is raised for its hundreds of pings.)
    let gw = Gateway::start_with(
        GatewayOptions::default().set("client_rate_per_s", 10_000).set("client_rate_burst", 10_000),
    )
    .await;
    let mut client = gw.connect("mixer").await;
    client.subscribe("mix", None).await;
    const SENT: u64 = 1500;
    let publisher = async {
        for n in 0..SENT {
            let (status, _) = gw.publish(&json!({"to": {"channel": "mix"}, "data": {"n": n}})).await;
            assert_eq!(status, 202);
        }
    };
    let reader = async {
        let (mut tally, mut pings, mut pongs) = (Tally::default(), 0u64, 0u64);
        while tally.accounted() < SENT || pongs < pings {
            if tally.received % 3 == 0 && pings <= tally.received / 3 {
                pings += 1;
                client.send_json(&json!({"type": "ping", "id": format!("p{pings}")})).await;
            }
            let frame = client.next().await;
            let v = frame.json().unwrap_or_else(|| panic!("session ended: {frame:?}"));
            if tally.count(v, None) {
                continue;
            }
            match v["type"].as_str() {
                Some("pong") => {
                    pongs += 1;
                    assert_eq!(v["id"], format!("p{pongs}"), "replies in order, once each");
                }
                other => panic!("unexpected frame {other:?}: {v}"),
            }
        }
        (tally.received, pings, pongs)
    };
    let (_, (received, pings, pongs)) = tokio::join!(publisher, reader);
    assert!(received > SENT / 2, "most messages arrive (a reader this fast drops few): {received}");
    assert!(pings > 100 && pongs == pings, "{pongs} pongs for {pings} pings");
    // A frame is counted once its write returns, which may be after the client has read it.
    gw.wait_metric("pushgate_frames_out_total", &[], |v| v >= (received + pongs) as f64).await;
}

#[tokio::test]
async fn bytes_out_counts_every_byte_of_frames_the_outbox_wrote_partly_at_once() {
    let gw = Gateway::start_with(
        GatewayOptions::default().set("max_data_bytes", 600_000).set("outbox_max_bytes", 16 * 1024 * 1024),
    )
    .await;
    // A small receive window and a client that does not read yet: broadcasts of 500 KB fill
    // the socket, so a frame goes out partly at once and the session's task writes the rest.
    let mut raw = RawClient::open_with_receive_buffer(gw.client_addr, 4096).await;
    let request = RawClient::upgrade_request(gw.client_addr, &gw.token("slow", None, &[]));
    raw.stream.write_all(request.as_bytes()).await.unwrap();
    let answer = raw.expect_upgraded().await;
    let welcome = raw.read_frame(WAIT).await.expect("welcome");
    // Only the 101 answer and the welcome (one write) were written so far (the counter may
    // trail the bytes by a moment).
    let before = (answer + welcome.wire_len) as f64;
    eprintln!("bytes out: the 101 answer is {answer} bytes, the welcome {}", welcome.wire_len);
    gw.wait_metric("pushgate_bytes_out_total", &[], |v| v == before).await;
    let blob = "b".repeat(500_000);
    for n in 0..12 {
        let (status, _) =
            gw.publish(&json!({"to": {"all": true}, "data": {"n": n, "blob": blob}, "persist": false})).await;
        assert_eq!(status, 202);
    }
    // Everything the gateway wrote (the 12 messages; the outbox is large enough that none is
    // dropped) is read and measured on the wire.
    let mut received = 0;
    for n in 0..12 {
        let frame = raw.read_frame(WAIT).await.expect("every message arrives");
        let m: Value = serde_json::from_slice(&frame.payload).unwrap();
        assert_eq!((m["type"].as_str(), m["data"]["n"].as_u64()), (Some("message"), Some(n)));
        received += frame.wire_len;
    }
    let expected = before + received as f64;
    eprintln!("bytes out: {before} before the messages, {received} of messages read, {expected} in all");
    gw.wait_metric("pushgate_bytes_out_total", &[], |v| v == expected).await;
}
