//! The admin API (SPEC §5 HTTP publish, §7): validation with the field at fault, the API key,
//! health and readiness, presence, metrics that move.
#![allow(clippy::unwrap_used)]

use pushgate_tests::{Gateway, GatewayOptions};
use serde_json::json;

#[tokio::test]
async fn publish_refuses_bad_envelopes_naming_the_field() {
    let gw = Gateway::start_with(GatewayOptions::default().set("max_data_bytes", 1000).set("max_data_depth", 3)).await;
    let cases = [
        ("{not json", 400, None),
        ("[1]", 400, None),
        (r#"{"data":1}"#, 400, Some("to")),
        (r#"{"to":{"users":[]},"data":1}"#, 400, Some("to.users")),
        (r#"{"to":{"users":["bad id"]},"data":1}"#, 400, Some("to.users")),
        (r#"{"to":{"channel":"news","all":true},"data":1}"#, 400, Some("to")),
        (r#"{"to":{"channel":"news"},"data":1,"persist":true}"#, 400, Some("persist")),
        (r#"{"to":{"all":true}}"#, 400, Some("data")),
        (r#"{"to":{"all":true},"data":1,"ttl_s":"soon"}"#, 400, Some("ttl_s")),
        (r#"{"to":{"all":true},"data":1,"colour":"red"}"#, 400, Some("colour")),
        (r#"{"to":{"all":true},"to":{"users":["x"]},"data":1}"#, 400, Some("to")),
        (r#"{"to":{"channel":"a","channel":"b"},"data":1}"#, 400, Some("to.channel")),
        (r#"{"to":{"all":true},"data":[{"a":[[]]}]}"#, 400, Some("data")),
        (r#"{"to":{"all":true},"data":{"name":"\ud800"}}"#, 400, Some("data")),
        (r#"{"to":{"all":true},"data":[1e400]}"#, 400, Some("data")),
    ];
    for (body, status, field) in cases {
        let (got, answer) = gw.post_json("/v1/publish", body.to_owned()).await;
        assert_eq!(got, status, "{body} → {answer}");
        assert_eq!(answer["error"], "bad_envelope", "{body} → {answer}");
        assert_eq!(answer["field"].as_str(), field, "{body} → {answer}");
    }
    // As deep as `max_data_depth` is taken, brackets inside strings are text.
    let (status, answer) = gw.publish(&json!({"to": {"all": true}, "data": [{"a": ["]]]"]}]})).await;
    assert_eq!(status, 202, "{answer}");
    let big = json!({"to": {"all": true}, "data": "x".repeat(2000)});
    let (status, answer) = gw.publish(&big).await;
    assert_eq!((status, answer["error"].as_str(), answer["field"].as_str()), (413, Some("too_large"), Some("data")));
    let huge = format!(r#"{{"to":{{"all":true}},"data":"{}"}}"#, "x".repeat(1 << 20));
    // A body over the limit is refused — the rest of it read and thrown away, so that the client,
    // still sending, reads the answer rather than a reset connection — and the answer says the
    // connection closes, so the client's next request goes down a fresh one.
    for _ in 0..3 {
        let response = gw.post("/v1/publish", huge.clone()).await;
        assert_eq!(response.status(), 413);
        assert_eq!(response.headers().get("connection").map(|v| v.as_bytes()), Some(&b"close"[..]));
        assert_eq!(gw.get_json("/healthz").await.0, 200);
    }
    assert!(gw.metric("pushgate_publish_refusals_total", &[("error", "bad_envelope")]).await >= 10.0);
}

#[tokio::test]
async fn the_api_key_guards_every_v1_route() {
    let gw = Gateway::start_with(GatewayOptions::default().set("api_key", "s3cret-key")).await;
    let http = reqwest::Client::new();
    for (method, path) in [
        ("POST", "/v1/publish"),
        ("GET", "/v1/users/u/presence"),
        ("POST", "/v1/users/u/disconnect"),
        ("POST", "/v1/drain"),
    ] {
        let request = http.request(method.parse().unwrap(), gw.admin_url(path));
        let response = request.try_clone().unwrap().send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} without a key");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        let response = request.try_clone().unwrap().bearer_auth("wrong").send().await.unwrap();
        assert_eq!(response.status(), 401, "{method} {path} with a wrong key");
    }
    let ok = http
        .post(gw.admin_url("/v1/publish"))
        .bearer_auth("s3cret-key")
        .body(r#"{"to":{"all":true},"data":1}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 202);
    // Health, readiness and metrics need no key.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(http.get(gw.admin_url(path)).send().await.unwrap().status(), 200, "{path}");
    }
}

#[tokio::test]
async fn presence_lists_this_nodes_sessions() {
    let gw = Gateway::start().await;
    let (status, p) = gw.get_json("/v1/users/nobody/presence").await;
    assert_eq!((status, p["online"].as_bool()), (200, Some(false)));
    assert_eq!(p["sessions"], json!([]));
    let before = pushgate_protocol::now_ms();
    let c = gw.connect_token(&gw.token("carol", Some("tablet"), &[])).await;
    let (_, p) = gw.get_json("/v1/users/carol/presence").await;
    assert_eq!(p["user"], "carol");
    assert_eq!(p["online"], true);
    let s = &p["sessions"][0];
    assert_eq!(s["session"], c.welcome.as_ref().unwrap()["session"]);
    assert_eq!(s["node"], gw.node_id.as_str());
    assert_eq!(s["device"], "tablet");
    assert!(s["since"].as_u64().unwrap() >= before);
    let (status, _) = gw.get_json("/v1/users/bad%20id/presence").await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn every_refusal_is_the_apis_json_error() {
    let gw = Gateway::start().await;
    let http = reqwest::Client::new();
    // A path that decodes to bytes that are not UTF-8, or to a bad id: 400 bad_user. A method a
    // path does not take: 405, with the methods it takes in Allow. Each in the API's JSON.
    for (method, path, status, error, allow) in [
        ("GET", "/v1/users/%ff/presence", 400, "bad_user", None),
        ("POST", "/v1/users/%ff/disconnect", 400, "bad_user", None),
        ("GET", "/v1/users/bad%20id/presence", 400, "bad_user", None),
        ("POST", "/v1/users/%E2%82%AC/disconnect", 400, "bad_user", None),
        ("GET", "/v1/publish", 405, "method_not_allowed", Some("POST")),
        ("DELETE", "/v1/users/u/presence", 405, "method_not_allowed", Some("GET,HEAD")),
    ] {
        let response = http.request(method.parse().unwrap(), gw.admin_url(path)).send().await.unwrap();
        assert_eq!(response.status(), status, "{method} {path}");
        assert_eq!(response.headers().get("allow").map(|v| v.to_str().unwrap()), allow, "{method} {path}");
        let body: serde_json::Value = response.json().await.unwrap();
        assert_eq!(body["error"], error, "{method} {path} → {body}");
    }
    // A compressed publish is refused by name rather than read as broken JSON; nothing is sent.
    let mut c = gw.connect("encoded").await;
    let envelope = r#"{"to":{"users":["encoded"]},"data":"plain"}"#;
    let publish = |encoding: &'static str| {
        http.post(gw.admin_url("/v1/publish")).header("content-encoding", encoding).body(envelope).send()
    };
    let response = publish("gzip").await.unwrap();
    assert_eq!(response.status(), 415);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "unsupported_encoding", "{body}");
    assert_eq!(publish("identity").await.unwrap().status(), 202);
    let m = c.next_of_type("message").await;
    assert_eq!(
        (m["seq"].as_u64(), m["data"].as_str()),
        (Some(1), Some("plain")),
        "only the uncompressed one was taken"
    );
    assert_eq!(gw.metric("pushgate_publish_refusals_total", &[("error", "unsupported_encoding")]).await, 1.0);
}

#[tokio::test]
async fn metrics_move_with_traffic() {
    let gw = Gateway::start().await;
    let text = gw.metrics().await;
    assert!(
        text.lines().filter(|l| !l.starts_with('#') && !l.is_empty()).all(|l| l.starts_with("pushgate_")),
        "{text}"
    );
    let mut c = gw.connect("m").await;
    c.subscribe("news", None).await;
    gw.publish(&json!({"to": {"channel": "news"}, "data": 1})).await;
    c.next_of_type("message").await;
    gw.wait_metric("pushgate_connects_total", &[], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_cursor_lookups_total", &[], |v| v == 1.0).await;
    gw.wait_metric("pushgate_cursor_lookup_queries_total", &[], |v| v == 1.0).await;
    gw.wait_metric("pushgate_sessions", &[], |v| v == 1.0).await;
    gw.wait_metric("pushgate_frames_in_total", &[("type", "subscribe")], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_frames_out_total", &[], |v| v >= 3.0).await;
    gw.wait_metric("pushgate_messages_published_total", &[("target", "channel")], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_delivery_latency_seconds_count", &[], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_handshake_duration_seconds_count", &[], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_channels", &[], |v| v == 1.0).await;
    c.close().await;
    gw.wait_metric("pushgate_closes_total", &[("code", "1000"), ("by", "client")], |v| v >= 1.0).await;
    gw.wait_metric("pushgate_sessions", &[], |v| v == 0.0).await;
}

#[tokio::test]
async fn health_and_readiness() {
    let gw = Gateway::start().await;
    assert_eq!(gw.get_json("/healthz").await.0, 200);
    let (status, body) = gw.get_json("/readyz").await;
    assert_eq!((status, body["status"].as_str()), (200, Some("ready")));
    let (status, _) = gw.get_json("/nope").await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn the_demo_pages_publish_answers_like_the_admin_api() {
    let gw = Gateway::start_with(GatewayOptions::default().set("max_data_bytes", 1000)).await;
    let http = reqwest::Client::new();
    let url = format!("http://{}/dev/publish", gw.client_addr);
    let publish = |body: serde_json::Value| {
        let request = http.post(&url).header("content-type", "application/json").body(body.to_string());
        async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<serde_json::Value>().await.unwrap())
        }
    };
    let envelope = json!({"id": "demo-1", "to": {"users": ["dora"]}, "data": 1});
    assert_eq!(publish(envelope.clone()).await, (202, json!({"id": "demo-1"})));
    assert_eq!(publish(envelope).await, (202, json!({"id": "demo-1", "duplicate": true})));
    let (status, answer) = publish(json!({"to": {"all": true}, "data": "x".repeat(2000)})).await;
    assert_eq!((status, answer["error"].as_str(), answer["field"].as_str()), (413, Some("too_large"), Some("data")));
    let (status, answer) = publish(json!({"to": {"users": []}, "data": 1})).await;
    assert_eq!(
        (status, answer["error"].as_str(), answer["field"].as_str()),
        (400, Some("bad_envelope"), Some("to.users"))
    );
}

#[tokio::test]
async fn data_deeper_than_clients_parse_is_refused_and_nothing_is_stored() {
    // Python's json stops near 1,000 levels, serde_json at 128, Ruby at 100: a durable message
    // nested deeper would reach a client that can never read it — and come back at every
    // reconnect. The default bound, 64, refuses it when published.
    let gw = Gateway::start().await;
    let nested = |depth: usize| {
        format!(r#"{{"to":{{"users":["deep"]}},"data":{}"bottom"{}}}"#, "[".repeat(depth), "]".repeat(depth))
    };
    for depth in [65, 1_000, 10_000] {
        let (status, answer) = gw.post_json("/v1/publish", nested(depth)).await;
        assert_eq!(
            (status, answer["error"].as_str(), answer["field"].as_str()),
            (400, Some("bad_envelope"), Some("data")),
            "{depth} levels → {answer}"
        );
        assert!(answer["message"].as_str().unwrap().contains("64 deep"), "{answer}");
    }
    let (status, answer) = gw.post_json("/v1/publish", nested(64)).await;
    assert_eq!(status, 202, "{answer}");
    // Only the message within the bound was stored: it is the one the user gets, at seq 1.
    let mut c = gw.connect("deep").await;
    let m = c.next_of_type("message").await;
    assert_eq!(m["seq"], 1);
    let mut data = &m["data"];
    for _ in 0..64 {
        data = &data[0];
    }
    assert_eq!(data, "bottom");
}
