//! SPEC §4 client and server frames against the real gateway: subscribe authorization,
//! unsubscribe, ping/pong, acks and every error code, each leaving the session open.
#![allow(clippy::unwrap_used)]

use pushgate_tests::{Gateway, GatewayOptions};
use serde_json::json;

#[tokio::test]
async fn subscribe_follows_the_token_patterns_and_channel_tokens() {
    let gw = Gateway::start().await;
    let mut c = gw.connect_token(&gw.token("alice", None, &["news", "room:*"])).await;

    let r = c.subscribe("news", None).await;
    assert_eq!((r["type"].as_str(), r["channel"].as_str()), (Some("subscribed"), Some("news")));
    let r = c.subscribe("room:42", None).await;
    assert_eq!(r["type"], "subscribed");
    // Subscribing twice is answered the same way.
    assert_eq!(c.subscribe("news", None).await["type"], "subscribed");

    let r = c.subscribe("secret", None).await;
    assert_eq!((r["type"].as_str(), r["code"].as_str()), (Some("error"), Some("forbidden")));
    // A channel token for this user and channel opens it…
    let r = c.subscribe("secret", Some(&gw.channel_token("alice", "secret"))).await;
    assert_eq!(r["type"], "subscribed", "{r}");
    // …one for another user or another channel does not.
    let r = c.subscribe("vault", Some(&gw.channel_token("bob", "vault"))).await;
    assert_eq!(r["code"], "forbidden");
    let r = c.subscribe("vault", Some(&gw.channel_token("alice", "other"))).await;
    assert_eq!(r["code"], "forbidden");
    let r = c.subscribe("vault", Some("garbage")).await;
    assert_eq!(r["code"], "forbidden");

    // A malformed name is invalid_channel whatever the permissions.
    let r = c.subscribe("bad name!", None).await;
    assert_eq!(r["code"], "invalid_channel");

    let r = c.unsubscribe("news").await;
    assert_eq!((r["type"].as_str(), r["channel"].as_str()), (Some("unsubscribed"), Some("news")));
    // The session is still fine.
    assert_eq!(c.ping().await["type"], "pong");
}

#[tokio::test]
async fn unsubscribed_channels_stop_delivering() {
    let gw = Gateway::start().await;
    let mut c = gw.connect("alice").await;
    c.subscribe("news", None).await;
    gw.publish(&json!({"to": {"channel": "news"}, "data": 1})).await;
    let m = c.next_of_type("message").await;
    assert_eq!((m["channel"].as_str(), m["data"].as_i64()), (Some("news"), Some(1)));
    c.unsubscribe("news").await;
    gw.publish(&json!({"to": {"channel": "news"}, "data": 2})).await;
    gw.publish(&json!({"to": {"users": ["alice"]}, "data": "marker", "persist": false})).await;
    // The user message published after the channel message arrives first: the channel
    // message never came.
    let m = c.next_of_type("message").await;
    assert_eq!(m["data"], "marker");
}

#[tokio::test]
async fn the_channel_limit_is_enforced() {
    let gw = Gateway::start_with(GatewayOptions::default().set("max_channels_per_session", 3)).await;
    let mut c = gw.connect("alice").await;
    for ch in ["a", "b", "c"] {
        assert_eq!(c.subscribe(ch, None).await["type"], "subscribed");
    }
    let r = c.subscribe("d", None).await;
    assert_eq!(r["code"], "too_many_channels");
    c.unsubscribe("a").await;
    assert_eq!(c.subscribe("d", None).await["type"], "subscribed");
}

#[tokio::test]
async fn bad_frames_get_error_frames_with_the_request_id() {
    let gw = Gateway::start().await;
    let mut c = gw.connect("alice").await;
    let cases = [
        (json!({"type": "dance", "id": "q1"}).to_string(), "unknown_type", Some("q1")),
        (json!({"type": "subscribe", "id": "q2"}).to_string(), "bad_frame", Some("q2")),
        (json!({"type": "subscribe", "channel": 5, "id": "q3"}).to_string(), "bad_frame", Some("q3")),
        (json!({"type": "ack", "seq": -1, "id": "q4"}).to_string(), "bad_frame", Some("q4")),
        (json!({"type": "ack", "seq": 1.5, "id": "q5"}).to_string(), "bad_frame", Some("q5")),
        (json!({"type": "ack", "seq": "7", "id": "q6"}).to_string(), "bad_frame", Some("q6")),
        (json!({"type": "ack", "seq": 1, "id": "q7"}).to_string(), "bad_frame", Some("q7")),
        ("not json".to_owned(), "bad_frame", None),
        ("[1,2,3]".to_owned(), "bad_frame", None),
        (json!({"no": "type"}).to_string(), "bad_frame", None),
    ];
    for (text, code, id) in cases {
        c.send_text(text.clone()).await;
        let e = c.expect("error").await;
        assert_eq!(e["code"].as_str(), Some(code), "{text} → {e}");
        assert_eq!(e["id"].as_str(), id, "{text} → {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    // An ack at or below the cursor is accepted silently.
    c.send_json(&json!({"type": "ack", "seq": 0})).await;
    assert_eq!(c.ping().await["type"], "pong");
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let gw = Gateway::start().await;
    let mut c = gw.connect("alice").await;
    c.send_json(&json!({"type": "ping"})).await;
    let pong = c.expect("pong").await;
    assert!(pong.get("id").is_none());
    c.send_json(&json!({"type": "ping", "id": "p-1"})).await;
    assert_eq!(c.expect("pong").await["id"], "p-1");
    assert!(gw.metric("pushgate_frames_in_total", &[("type", "ping")]).await >= 2.0);
}
