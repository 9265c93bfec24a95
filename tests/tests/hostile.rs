//! Hostile input: each case gets a clear answer (an `error` frame or a close code) and leaves
//! the gateway serving everyone else, which a witness session checks after every case.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::future::join_all;
use pushgate_protocol::ws::OpCode;
use pushgate_tests::{Client, Gateway, GatewayOptions, RawClient, WAIT};
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

/// The witness still gets a published message promptly.
async fn still_serving(gw: &Gateway, witness: &mut Client) {
    let (status, _) = gw.publish(&json!({"to": {"users": ["witness"]}, "data": "still here", "persist": false})).await;
    assert_eq!(status, 202);
    assert_eq!(witness.next_of_type("message").await["data"], "still here");
}

#[tokio::test]
async fn invalid_utf8_closes_with_1007() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("evil", None, &[])).await;
    raw.send(OpCode::Text, true, &[b'{', 0xff, 0xfe, b'}']).await;
    assert_eq!(raw.read_until_close(WAIT).await, Some(1007));
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn binary_non_json_and_nested_frames_get_error_frames() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    let mut c = gw.connect("evil").await;
    c.send_binary(vec![0, 1, 2, 3]).await;
    assert_eq!(c.expect("error").await["code"], "bad_frame");
    c.send_text("{this is not json").await;
    assert_eq!(c.expect("error").await["code"], "bad_frame");
    // 30,000 levels of nesting, as the whole frame and inside a field.
    let deep = format!("{}{}", "[".repeat(30_000), "]".repeat(30_000));
    c.send_text(deep.clone()).await;
    assert_eq!(c.expect("error").await["code"], "bad_frame");
    c.send_text(format!(r#"{{"type":"subscribe","channel":{deep}}}"#)).await;
    assert_eq!(c.expect("error").await["code"], "bad_frame");
    // A field given twice: which one counts is not guessed.
    c.send_text(r#"{"type":"subscribe","channel":"a","channel":"b","id":"twice"}"#).await;
    let error = c.expect("error").await;
    assert_eq!((error["code"].as_str(), error["id"].as_str()), (Some("bad_frame"), Some("twice")), "{error}");
    assert_eq!(c.ping().await["type"], "pong", "the session stays up");
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn a_one_megabyte_id_is_too_large() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    let mut c = gw.connect("evil").await;
    c.send_json(&json!({"type": "ping", "id": "i".repeat(1 << 20)})).await;
    assert_eq!(c.expect_close().await, 1009);
    // Within the frame limit, an over-long id is a bad frame and is not echoed.
    let mut c = gw.connect("evil").await;
    c.send_json(&json!({"type": "ping", "id": "i".repeat(1000)})).await;
    let e = c.expect("error").await;
    assert_eq!(e["code"], "bad_frame");
    assert!(e.get("id").is_none());
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn thousands_of_subscribes_are_rate_limited_and_closed() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("evil", None, &["*"])).await;
    let mut burst = Vec::new();
    for i in 0..5000 {
        let text = json!({"type": "subscribe", "channel": format!("ch{i}")}).to_string();
        burst.extend(pushgate_protocol::ws::encode_client(OpCode::Text, true, text.as_bytes(), [1, 2, 3, 4]));
    }
    // The server may close while we are still writing; that is fine.
    let _ = raw.stream.write_all(&burst).await;
    let (mut subscribed, mut errors, mut close) = (0, 0, None);
    while let Some(frame) = raw.read_frame(WAIT).await {
        match frame.opcode {
            OpCode::Close => {
                close = frame.close_code();
                break;
            }
            OpCode::Text => {
                let v: Value = serde_json::from_str(frame.text()).unwrap();
                match v["type"].as_str() {
                    Some("subscribed") => subscribed += 1,
                    Some("error") => errors += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    assert_eq!(close, Some(4008));
    assert_eq!(subscribed, 128, "the channel limit holds");
    assert!(errors > 0);
    // The registry let go of the channels when the session closed.
    gw.wait_metric("pushgate_channels", &[], |v| v == 0.0).await;
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn half_open_handshakes_time_out_and_do_not_block_others() {
    let gw = Gateway::start_with(GatewayOptions::default().set("handshake_timeout", "1s")).await;
    let mut half_open = join_all((0..300).map(|i| {
        let addr = gw.client_addr;
        async move {
            let mut raw = RawClient::open(addr).await;
            // Some send nothing, some a partial request line.
            if i % 2 == 0 {
                raw.stream.write_all(b"GET /ws?tok").await.unwrap();
            }
            raw
        }
    }))
    .await;
    // Meanwhile, real clients connect and get served.
    let mut witness = gw.connect("witness").await;
    still_serving(&gw, &mut witness).await;
    // Each half-open connection is closed by the server after the handshake timeout.
    let closed = join_all(half_open.iter_mut().map(|raw| raw.wait_closed(Duration::from_secs(5)))).await;
    assert!(closed.iter().all(|c| *c), "every half-open handshake was closed");
    gw.wait_metric("pushgate_handshake_failures_total", &[("reason", "timeout")], |v| v >= 300.0).await;
    gw.wait_metric("pushgate_connections", &[], |v| v == 1.0).await;
}

#[tokio::test]
async fn requests_that_arrive_slowly_hold_no_setup_slot() {
    // One set-up at a time: were a slow request to take the only slot while it arrives, every
    // other connection would wait for its handshake timeout (10 s) behind it.
    let gw = Gateway::start_with(GatewayOptions::default().set("setup_concurrency", 1)).await;
    let request = RawClient::upgrade_request(gw.client_addr, &gw.token("slow", None, &[]));
    let (first_part, rest) = request.split_at(request.len() / 2);
    let mut slow = join_all((0..20).map(|_| async {
        let mut raw = RawClient::open(gw.client_addr).await;
        raw.stream.write_all(first_part.as_bytes()).await.unwrap();
        raw
    }))
    .await;
    // Meanwhile 200 clients arrive at once, are set up one after the other, and each gets its
    // welcome (`connect` checks it).
    let started = std::time::Instant::now();
    let fast = join_all((0..200).map(|i| {
        let gw = &gw;
        async move { gw.connect(&format!("fast{i}")).await }
    }))
    .await;
    assert_eq!(fast.len(), 200);
    assert!(started.elapsed() < Duration::from_secs(5), "set-ups took {:?}", started.elapsed());
    let mut witness = gw.connect("witness").await;
    still_serving(&gw, &mut witness).await;
    // The slow requests, completed in a second write, are answered and welcomed too.
    for raw in &mut slow {
        raw.stream.write_all(rest.as_bytes()).await.unwrap();
    }
    for raw in &mut slow {
        raw.expect_upgraded().await;
        let welcome = raw.read_frame(WAIT).await.expect("a welcome frame");
        assert_eq!(serde_json::from_str::<Value>(welcome.text()).unwrap()["type"], "welcome");
    }
    gw.wait_metric("pushgate_sessions", &[], |v| v == 221.0).await;
    assert_eq!(gw.metric("pushgate_setups_waiting", &[]).await, 0.0);
}

#[tokio::test]
async fn a_held_setup_slot_delays_only_admitted_set_ups_and_a_wait_given_up_is_uncounted() {
    let gw = Gateway::start_with(
        GatewayOptions::default().set("setup_concurrency", 1).set("handshake_timeout", "2s").set("max_connections", 3),
    )
    .await;
    let mut witness = gw.connect("witness").await;
    // Accepted first, its request sent later: its handshake deadline is the earliest, 200 ms
    // before the holder's (a spacing of deadlines, not a wait for anything).
    let mut late = RawClient::open(gw.client_addr).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Takes the only slot: its head announces a body (larger than what is looked at before a
    // set-up) that never comes, so its set-up waits for it until its deadline.
    let mut holder = RawClient::open(gw.client_addr).await;
    holder.stream.write_all(b"POST /dev/token HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n").await.unwrap();
    // Nothing shows that a set-up holds a slot (the waiting line does, once `late` writes; it
    // must not win the slot): give the holder time to take it.
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Over the limit (3 sockets open): refused with 503 at once, without waiting for the slot.
    let request = RawClient::upgrade_request(gw.client_addr, &gw.token("over", None, &[]));
    let started = std::time::Instant::now();
    let (status, _, body) = RawClient::http(gw.client_addr, &request).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("node_full"), "{body}");
    assert!(started.elapsed() < Duration::from_secs(1), "the refusal took {:?}", started.elapsed());
    // The late request arrives while the slot is held, and its deadline passes while it waits.
    late.stream.write_all(request.as_bytes()).await.unwrap();
    gw.wait_metric("pushgate_setups_waiting", &[], |v| v == 1.0).await;
    assert!(late.wait_closed(Duration::from_secs(5)).await, "the late request was dropped at its deadline");
    assert!(holder.wait_closed(Duration::from_secs(5)).await, "the holder was dropped at its deadline");
    gw.wait_metric("pushgate_handshake_failures_total", &[("reason", "timeout")], |v| v >= 2.0).await;
    assert_eq!(gw.metric("pushgate_setups_waiting", &[]).await, 0.0, "the wait given up is no longer counted");
    still_serving(&gw, &mut witness).await;
    // The slot is free again.
    gw.wait_metric("pushgate_connections", &[], |v| v == 1.0).await;
    let _again = gw.connect("again").await;
}

#[tokio::test]
async fn a_request_cut_short_by_the_client_is_dropped_at_once() {
    // The handshake timeout is 10 s: only a connection given up at once closes within 2 s.
    let gw = Gateway::start().await;
    let mut cut = join_all((0..20).map(|_| async {
        let mut raw = RawClient::open(gw.client_addr).await;
        raw.stream.write_all(b"GET /ws?token=abc HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        raw.stream.shutdown().await.unwrap();
        raw
    }))
    .await;
    let closed = join_all(cut.iter_mut().map(|raw| raw.wait_closed(Duration::from_secs(2)))).await;
    assert!(closed.iter().all(|c| *c), "every request cut short was dropped at once");
    gw.wait_metric("pushgate_connections", &[], |v| v == 0.0).await;
    let mut witness = gw.connect("witness").await;
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn a_client_that_never_reads_does_not_hold_up_others() {
    let gw = Gateway::start_with(GatewayOptions::default().set("outbox_max_frames", 16)).await;
    let never_reads = RawClient::connect(gw.client_addr, &gw.token("sponge", None, &[])).await;
    let mut witness = gw.connect("witness").await;
    let blob = "z".repeat(50_000);
    let started = std::time::Instant::now();
    let publisher = async {
        for n in 0..300 {
            let (status, _) = gw.publish(&json!({"to": {"all": true}, "data": {"n": n, "blob": blob}})).await;
            assert_eq!(status, 202);
        }
    };
    let reader = async {
        for n in 0..300 {
            let m = witness.next_of_type("message").await;
            assert_eq!(m["data"]["n"], n);
        }
    };
    tokio::join!(publisher, reader);
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    assert!(gw.metric("pushgate_drops_total", &[("reason", "outbox_full")]).await > 0.0);
    still_serving(&gw, &mut witness).await;
    drop(never_reads);
}

#[tokio::test]
async fn garbage_instead_of_http_is_refused() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    let (status, _, body) = RawClient::http(gw.client_addr, "\x16\x03\x01\x02\x00garbage\r\n\r\n").await;
    assert_eq!(status, 400, "{body}");
    let (status, _, _) =
        RawClient::http(gw.client_addr, &format!("GET /ws?{} HTTP/1.1\r\n\r\n", "a".repeat(10_000))).await;
    assert_eq!(status, 400);
    still_serving(&gw, &mut witness).await;
}

#[tokio::test]
async fn protocol_violations_close_with_1002() {
    let gw = Gateway::start().await;
    let mut witness = gw.connect("witness").await;
    // An unmasked client frame.
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("evil", None, &[])).await;
    raw.read_frame(WAIT).await.expect("welcome");
    raw.stream.write_all(&[0x81, 0x02, b'h', b'i']).await.unwrap();
    assert_eq!(raw.read_until_close(WAIT).await, Some(1002));
    // A reserved opcode.
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("evil", None, &[])).await;
    raw.read_frame(WAIT).await.expect("welcome");
    raw.stream.write_all(&[0x83, 0x80, 1, 2, 3, 4]).await.unwrap();
    assert_eq!(raw.read_until_close(WAIT).await, Some(1002));
    // A continuation without a message.
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("evil", None, &[])).await;
    raw.read_frame(WAIT).await.expect("welcome");
    raw.send(OpCode::Continuation, true, b"x").await;
    assert_eq!(raw.read_until_close(WAIT).await, Some(1002));
    still_serving(&gw, &mut witness).await;
}
