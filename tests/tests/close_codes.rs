//! Every close code of SPEC §4 that a client or an operator can provoke, against the real
//! gateway, and the metrics that count them.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushgate_protocol::{now_ms, ws::OpCode};
use pushgate_tests::{Gateway, GatewayOptions, RawClient, WAIT};
use serde_json::json;

#[tokio::test]
async fn an_oversized_frame_closes_with_1009() {
    let gw = Gateway::start_with(GatewayOptions::default().set("max_frame_bytes", 1024)).await;
    let mut c = gw.connect("alice").await;
    c.send_text(format!(r#"{{"type":"ping","pad":"{}"}}"#, "x".repeat(2000))).await;
    assert_eq!(c.expect_close().await, 1009);
    gw.wait_metric("pushgate_closes_total", &[("code", "1009")], |v| v >= 1.0).await;
}

#[tokio::test]
async fn a_flood_of_frames_is_refused_then_closed_with_4008() {
    let gw =
        Gateway::start_with(GatewayOptions::default().set("client_rate_per_s", 5).set("client_rate_burst", 10)).await;
    let mut c = gw.connect("alice").await;
    for i in 0..40 {
        c.send_json(&json!({"type": "ping", "id": i.to_string()})).await;
    }
    let (mut pongs, mut limited) = (0, 0);
    let code = loop {
        let got = c.next().await;
        match got.frame_type() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(got.json().unwrap()["code"], "rate_limited");
                limited += 1;
            }
            _ => break got.close_code().expect("a close frame"),
        }
    };
    assert_eq!(code, 4008);
    assert_eq!(pongs, 10, "the burst passes");
    assert_eq!(limited, 10, "one more bucket of refusals, then the close");
}

#[tokio::test]
async fn silence_closes_with_4002() {
    let gw = Gateway::start_with(GatewayOptions::default().set("heartbeat", "1s")).await;
    // A raw client that never answers the server's Pings.
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("quiet", None, &[])).await;
    let started = std::time::Instant::now();
    let mut pings = 0;
    let code = loop {
        let frame = raw.read_frame(WAIT).await.expect("the server closes the session");
        match frame.opcode {
            OpCode::Ping => pings += 1,
            OpCode::Close => break frame.close_code(),
            _ => {}
        }
    };
    assert_eq!(code, Some(4002));
    assert!(pings >= 1, "the server pinged before giving up");
    assert!(started.elapsed() >= Duration::from_millis(2400), "closed after 2.5 heartbeats, not before");
}

#[tokio::test]
async fn a_client_answering_pings_stays_open() {
    let gw = Gateway::start_with(GatewayOptions::default().set("heartbeat", "1s")).await;
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("chatty", None, &[])).await;
    let deadline = std::time::Instant::now() + Duration::from_millis(4000);
    let mut pings = 0;
    while std::time::Instant::now() < deadline {
        match raw.read_frame(Duration::from_millis(500)).await {
            Some(f) if f.opcode == OpCode::Ping => {
                pings += 1;
                raw.send(OpCode::Pong, true, &f.payload).await;
            }
            Some(f) => assert_ne!(f.opcode, OpCode::Close, "closed: {:?}", f.close_code()),
            None => {}
        }
    }
    assert!(pings >= 3, "pinged about once a second, got {pings}");
}

#[tokio::test]
async fn the_admin_api_disconnects_a_user_with_4000() {
    let gw = Gateway::start().await;
    let mut a = gw.connect_token(&gw.token("victim", Some("a"), &[])).await;
    let mut b = gw.connect_token(&gw.token("victim", Some("b"), &[])).await;
    let mut bystander = gw.connect("bystander").await;
    let (status, body) = gw.post_json("/v1/users/victim/disconnect", String::new()).await;
    assert_eq!((status, body["sessions"].as_u64()), (202, Some(2)));
    assert_eq!(a.expect_close().await, 4000);
    assert_eq!(b.expect_close().await, 4000);
    assert_eq!(bystander.ping().await["type"], "pong");
    gw.wait_metric("pushgate_closes_total", &[("code", "4000")], |v| v >= 2.0).await;
    let (_, presence) = gw.get_json("/v1/users/victim/presence").await;
    assert_eq!(presence["online"], false);
}

#[tokio::test]
async fn an_expired_token_closes_with_1008_when_enforced() {
    let gw = Gateway::start_with(
        GatewayOptions::default().set("close_on_token_expiry", true).set("token_leeway", "0s").set("heartbeat", "1s"),
    )
    .await;
    let mut c = gw.connect_token(&gw.token_expiring("brief", None, &[], now_ms() / 1000 + 2)).await;
    let mut lasting = gw.connect("lasting").await;
    // The token runs out 1–2 s from now and the wheel notices within a heartbeat; meanwhile the
    // lasting session keeps talking (a client that read nothing for 2.5 heartbeats would be
    // closed for silence, which is not what this test is about).
    let expired = c.expect_close();
    tokio::pin!(expired);
    let code = loop {
        tokio::select! {
            code = &mut expired => break code,
            () = tokio::time::sleep(Duration::from_millis(300)) => {
                assert_eq!(lasting.ping().await["type"], "pong", "the unexpired session stays open");
            }
        }
    };
    assert_eq!(code, 1008);
    assert_eq!(lasting.ping().await["type"], "pong");
}

#[tokio::test]
async fn a_client_close_is_echoed() {
    let gw = Gateway::start().await;
    let mut raw = RawClient::connect(gw.client_addr, &gw.token("leaver", None, &[])).await;
    raw.read_frame(WAIT).await.expect("welcome");
    raw.send(OpCode::Close, true, &3001u16.to_be_bytes()).await;
    assert_eq!(raw.read_until_close(WAIT).await, Some(3001));
    assert!(raw.wait_closed(WAIT).await, "the server closes the TCP connection");
    gw.wait_metric("pushgate_closes_total", &[("code", "3xxx"), ("by", "client")], |v| v >= 1.0).await;
}

/// Clients choose their close codes: a client cycling through them must not grow the gateway's
/// metrics without bound. Each application range counts as one series; RFC 6455's codes keep
/// theirs.
#[tokio::test]
async fn client_close_codes_count_in_a_bounded_set_of_series() {
    let gw = Gateway::start().await;
    let codes: Vec<u16> = (3000..3015).chain(4100..4115).chain([1001]).collect();
    for (i, code) in codes.iter().enumerate() {
        let mut raw = RawClient::connect(gw.client_addr, &gw.token(&format!("chooser-{i}"), None, &[])).await;
        raw.read_frame(WAIT).await.expect("welcome");
        raw.send(OpCode::Close, true, &code.to_be_bytes()).await;
        assert_eq!(raw.read_until_close(WAIT).await, Some(*code), "the client's code is echoed");
    }
    gw.wait_metric("pushgate_closes_total", &[("code", "3xxx"), ("by", "client")], |v| v == 15.0).await;
    gw.wait_metric("pushgate_closes_total", &[("code", "4xxx"), ("by", "client")], |v| v == 15.0).await;
    gw.wait_metric("pushgate_closes_total", &[("code", "1001"), ("by", "client")], |v| v == 1.0).await;
    let text = gw.metrics().await;
    let series: Vec<&str> = text.lines().filter(|l| l.starts_with("pushgate_closes_total{")).collect();
    assert_eq!(series.len(), 3, "one series per label, not per code: {series:?}");
}

#[tokio::test]
async fn a_socket_that_stops_draining_is_closed_as_a_slow_consumer() {
    // Heartbeat 4 s: the wheel visits every 4 s, so the stall (1 s) is caught well before the
    // stuck client's silence (10 s) would close it with 4002.
    let gw =
        Gateway::start_with(GatewayOptions::default().set("slow_consumer_timeout", "1s").set("heartbeat", "4s")).await;
    // Answers nothing and reads nothing while ~20 MB of broadcasts pile up.
    let _stuck = RawClient::connect(gw.client_addr, &gw.token("stuck", None, &[])).await;
    let mut healthy = gw.connect("healthy").await;
    let blob = "y".repeat(60_000);
    let publisher = async {
        for _ in 0..300 {
            assert_eq!(gw.publish(&json!({"to": {"all": true}, "data": blob})).await.0, 202);
        }
    };
    // Every message reaches the healthy client, which reads as they come.
    let reader = async {
        for _ in 0..300 {
            healthy.next_of_type("message").await;
        }
    };
    tokio::join!(publisher, reader);
    gw.wait_metric("pushgate_closes_total", &[("code", "4001")], |v| v >= 1.0).await;
    assert_eq!(healthy.ping().await["type"], "pong");
}
