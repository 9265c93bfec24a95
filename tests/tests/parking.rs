//! Parked sessions (`park_idle_sessions`): an idle session held without a task still gets every
//! delivery, answers its client, keeps its heartbeat, closes when asked and ends when its client
//! closes or goes away (the lot itself answers a valid Close); with parking off, sessions stay
//! running.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushgate_protocol::ws::{self, OpCode};
use pushgate_tests::{Gateway, GatewayOptions, RawClient, RawFrame, Received};
use serde_json::json;
use tokio::io::AsyncWriteExt;

const PARKED: &str = "pushgate_sessions_parked";
const UNPARKS: &str = "pushgate_unparks_total";
const CLOSES: &str = "pushgate_closes_total";
const WAIT: Duration = Duration::from_secs(5);

/// A gateway whose heartbeat Pings do not come during a test: a Ping racing a session's parking
/// unparks it (it finds the Ping queued), which would make the unpark counts here uncertain.
async fn quiet_gateway() -> Gateway {
    Gateway::start_with(GatewayOptions::default().set("heartbeat", "1h")).await
}

#[tokio::test]
async fn a_parked_session_gets_deliveries_answers_requests_and_closes_when_asked() {
    let gw = quiet_gateway().await;
    let mut client = gw.connect("parked").await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    let unparks = gw.metric(UNPARKS, &[]).await;

    // A non-durable message is written to the parked socket directly: the session stays parked.
    let (status, _) = gw.publish(&json!({"to": {"users": ["parked"]}, "data": "direct", "persist": false})).await;
    assert_eq!(status, 202);
    assert_eq!(client.next_of_type("message").await["data"], "direct");
    assert_eq!(gw.metric(UNPARKS, &[]).await, unparks, "a direct write needs no task");
    assert_eq!(gw.metric(PARKED, &[]).await, 1.0);

    // A durable message goes through the task (it checks the seq): unparked, then parked again.
    let (status, _) = gw.publish(&json!({"to": {"users": ["parked"]}, "data": "durable", "persist": true})).await;
    assert_eq!(status, 202);
    let m = client.next_of_type("message").await;
    assert_eq!((m["data"].as_str(), m["seq"].as_u64()), (Some("durable"), Some(1)));
    gw.wait_metric(UNPARKS, &[], |v| v >= unparks + 1.0).await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;

    // A client request makes the socket readable: unparked, answered, parked again.
    let unparks = gw.metric(UNPARKS, &[]).await;
    assert_eq!(client.ping().await["type"], "pong");
    assert_eq!(client.subscribe("news", None).await["type"], "subscribed");
    gw.wait_metric(UNPARKS, &[], |v| v >= unparks + 1.0).await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    let (status, _) = gw.publish(&json!({"to": {"channel": "news"}, "data": "on news"})).await;
    assert_eq!(status, 202);
    assert_eq!(client.next_of_type("message").await["data"], "on news");

    // A close request wakes it.
    let (status, _) = gw.post_json("/v1/users/parked/disconnect", String::new()).await;
    assert_eq!(status, 202);
    assert_eq!(client.expect_close().await, 4000);
    drop(client);
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    assert_eq!(gw.metric(PARKED, &[]).await, 0.0);
}

#[tokio::test]
async fn a_parked_session_keeps_its_heartbeat_without_being_unparked() {
    let gw = Gateway::start_with(GatewayOptions::default().set("heartbeat", "200ms")).await;
    let mut client = gw.connect("beating").await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    let unparks = gw.metric(UNPARKS, &[]).await;
    // Silence for 2.5 heartbeats closes a session: this one answers the server's Pings (the
    // client reads, and so pongs) through 8 heartbeats, and the parking lot reads the Pongs
    // itself — the session stays parked and open.
    assert!(matches!(client.next_within(Duration::from_millis(1600)).await, Received::Timeout));
    assert_eq!(gw.metric(UNPARKS, &[]).await, unparks, "Pongs are read without unparking");
    assert_eq!(gw.metric(PARKED, &[]).await, 1.0);
    assert_eq!(client.ping().await["type"], "pong", "still open");
    assert_eq!(gw.metric("pushgate_sessions", &[]).await, 1.0);
}

#[tokio::test]
async fn a_pong_glued_to_a_request_unparks_the_session_for_both() {
    let gw = quiet_gateway().await;
    let mut raw = parked_raw_client(&gw, "glued").await;
    let key = [9, 8, 7, 6];
    let glued = [
        ws::encode_client(OpCode::Pong, true, b"", key),
        ws::encode_client(OpCode::Text, true, br#"{"type":"ping","id":"after-pong"}"#, key),
    ]
    .concat();
    raw.stream.write_all(&glued).await.unwrap();
    let reply = next_data_frame(&mut raw).await;
    assert!(reply.text().contains(r#""id":"after-pong""#), "{}", reply.text());
    assert_eq!(gw.metric(UNPARKS, &[]).await, 1.0);
    // A Pong cut in two: the lot leaves it to the task, which keeps the first half — and reads it
    // at once, though the runtime, which has just taken the socket back, may not know it is
    // readable yet (else the session would park unread, be unparked again, and so on: under
    // load, this count ran up).
    let pong = ws::encode_client(OpCode::Pong, true, b"beat", key);
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    raw.stream.write_all(&pong[..3]).await.unwrap();
    gw.wait_metric(UNPARKS, &[], |v| v == 2.0).await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    raw.stream.write_all(&pong[3..]).await.unwrap();
    raw.send_text(r#"{"type":"ping","id":"after-halves"}"#).await;
    let reply = next_data_frame(&mut raw).await;
    assert!(reply.text().contains(r#""id":"after-halves""#), "{}", reply.text());
}

#[tokio::test]
async fn a_request_longer_than_the_lots_read_is_handed_to_the_task_whole() {
    let gw = quiet_gateway().await;
    let mut raw = parked_raw_client(&gw, "long").await;
    // The lot reads 512 bytes at once: this request arrives in one write and is cut there; the
    // task takes in what the lot read, then the rest from the socket.
    let padding = " ".repeat(2_000);
    raw.send_text(&format!(r#"{{"type":"ping",{padding}"id":"long"}}"#)).await;
    let reply = next_data_frame(&mut raw).await;
    assert!(reply.text().contains(r#""id":"long""#), "{}", reply.text());
    assert_eq!(gw.metric(UNPARKS, &[]).await, 1.0);
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    // Two whole requests in one write, read by the lot together: both answered, in order.
    let key = [1, 2, 3, 4];
    let two = [
        ws::encode_client(OpCode::Text, true, br#"{"type":"ping","id":"first"}"#, key),
        ws::encode_client(OpCode::Text, true, br#"{"type":"ping","id":"second"}"#, key),
    ]
    .concat();
    raw.stream.write_all(&two).await.unwrap();
    assert!(next_data_frame(&mut raw).await.text().contains(r#""id":"first""#));
    assert!(next_data_frame(&mut raw).await.text().contains(r#""id":"second""#));
}

/// A raw client of `user`, welcomed, whose session (the gateway's only one) has parked.
async fn parked_raw_client(gw: &Gateway, user: &str) -> RawClient {
    let mut raw = RawClient::connect(gw.client_addr, &gw.token(user, None, &[])).await;
    let welcome = raw.read_frame(Duration::from_secs(5)).await.unwrap();
    assert!(welcome.text().contains("welcome"), "{}", welcome.text());
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    raw
}

/// The next frame but heartbeat Pings.
async fn next_data_frame(raw: &mut RawClient) -> RawFrame {
    loop {
        let frame = raw.read_frame(Duration::from_secs(5)).await.expect("a frame");
        if frame.opcode != OpCode::Ping {
            return frame;
        }
    }
}

#[tokio::test]
async fn a_parked_session_ends_when_its_client_goes_away() {
    let gw = quiet_gateway().await;
    let mut raw = parked_raw_client(&gw, "gone").await;
    // Half a frame, then the connection ends: the session (parked on an incomplete frame, then
    // woken by EOF) ends and nothing stays parked.
    raw.stream.write_all(&[0x81, 0x85, 1, 2]).await.unwrap();
    gw.wait_metric(UNPARKS, &[], |v| v >= 1.0).await;
    gw.wait_metric(PARKED, &[], |v| v == 1.0).await;
    drop(raw);
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    assert_eq!(gw.metric(PARKED, &[]).await, 0.0);
    assert_eq!(gw.metric("pushgate_closes_total", &[("by", "network")]).await, 1.0);
}

#[tokio::test]
async fn a_parked_session_closed_by_its_client_is_answered_and_ended_without_unparking() {
    let gw = quiet_gateway().await;
    let key = [4, 3, 2, 1];
    // A Close with a code and a reason, behind a heartbeat Pong: the client's code comes back.
    let mut raw = parked_raw_client(&gw, "leaver").await;
    let close = [&3001u16.to_be_bytes()[..], b"bye"].concat();
    let glued = [ws::encode_client(OpCode::Pong, true, b"", key), ws::encode_client(OpCode::Close, true, &close, key)];
    raw.stream.write_all(&glued.concat()).await.unwrap();
    assert_eq!(raw.read_until_close(WAIT).await, Some(3001));
    assert!(raw.wait_closed(WAIT).await, "the server closes the TCP connection");
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    gw.wait_metric(CLOSES, &[("code", "3xxx"), ("by", "client")], |v| v == 1.0).await;
    // A Close without a code: answered with 1000, counted as 1005 (no status received).
    let mut raw = parked_raw_client(&gw, "quiet-leaver").await;
    raw.send(OpCode::Close, true, b"").await;
    assert_eq!(raw.read_until_close(WAIT).await, Some(1000));
    assert!(raw.wait_closed(WAIT).await);
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    gw.wait_metric(CLOSES, &[("code", "1005"), ("by", "client")], |v| v == 1.0).await;
    // Gone without a Close: ended as a network close.
    let raw = parked_raw_client(&gw, "vanisher").await;
    drop(raw);
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    gw.wait_metric(CLOSES, &[("by", "network")], |v| v == 1.0).await;
    assert_eq!(gw.metric(UNPARKS, &[]).await, 0.0, "the lot ended all three itself");
    assert_eq!(gw.metric(PARKED, &[]).await, 0.0);
}

#[tokio::test]
async fn a_parked_session_leaves_a_close_it_must_refuse_to_its_task() {
    let gw = quiet_gateway().await;
    let mut raw = parked_raw_client(&gw, "bad-leaver").await;
    raw.send(OpCode::Close, true, &999u16.to_be_bytes()).await;
    assert_eq!(raw.read_until_close(WAIT).await, Some(1002), "an invalid close code is a protocol error");
    drop(raw);
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
    assert_eq!(gw.metric(UNPARKS, &[]).await, 1.0);
    assert_eq!(gw.metric(PARKED, &[]).await, 0.0);
}

#[tokio::test]
async fn sessions_stay_running_when_parking_is_off() {
    let gw = Gateway::start_with(GatewayOptions::default().set("park_idle_sessions", "false")).await;
    let mut client = gw.connect("running").await;
    let (status, _) = gw.publish(&json!({"to": {"users": ["running"]}, "data": 1, "persist": true})).await;
    assert_eq!(status, 202);
    assert_eq!(client.next_of_type("message").await["data"], 1);
    for _ in 0..3 {
        assert_eq!(client.ping().await["type"], "pong");
    }
    assert_eq!(gw.metric(PARKED, &[]).await, 0.0);
    assert_eq!(gw.metric(UNPARKS, &[]).await, 0.0);
}
