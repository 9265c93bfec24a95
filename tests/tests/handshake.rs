//! SPEC §3 against the real gateway: every refusal before the upgrade with its status and JSON
//! body, in the SPEC's order, and the accepted upgrade.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use pushgate_protocol::now_ms;
use pushgate_tests::{Client, Gateway, GatewayOptions, RawClient, WAIT};
use serde_json::Value;

fn upgrade(path: &str, extra: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n{extra}\r\n"
    )
}

async fn refusal(gw: &Gateway, request: &str) -> (u16, String, Value) {
    let (status, head, body) = RawClient::http(gw.client_addr, request).await;
    let json: Value = serde_json::from_str(&body).unwrap_or_else(|_| panic!("JSON body expected, got {body:?}"));
    assert!(json["message"].is_string(), "{json}");
    (status, head, json)
}

#[tokio::test]
async fn each_refusal_has_its_status_and_json_body() {
    let gw = Gateway::start_with(GatewayOptions::default().set("allowed_origins", "https://app.example")).await;
    let token = gw.token("alice", None, &[]);

    let (status, _, body) = refusal(&gw, &upgrade(&format!("/nope?token={token}"), "")).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));

    let (status, _, body) = refusal(&gw, "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));

    let (status, _, body) = refusal(&gw, &upgrade(&format!("/ws?token={token}&last_seq=-3"), "")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("bad_request")));
    let (status, _, _) = refusal(&gw, &upgrade(&format!("/ws?token={token}&last_seq=abc"), "")).await;
    assert_eq!(status, 400);

    let (status, head, body) =
        refusal(&gw, &upgrade("/ws", "Sec-WebSocket-Version: 8\r\n").replace("Version: 13\r\n", "")).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("unsupported_version")));
    assert!(head.to_ascii_lowercase().contains("sec-websocket-version: 13"), "{head}");

    let (status, _, body) =
        refusal(&gw, &upgrade(&format!("/ws?token={token}"), "Origin: https://evil.example\r\n")).await;
    assert_eq!((status, body["error"].as_str()), (403, Some("origin_not_allowed")));

    let (status, _, body) = refusal(&gw, &upgrade("/ws", "Origin: https://app.example\r\n")).await;
    assert_eq!(
        (status, body["error"].as_str(), body["message"].as_str()),
        (401, Some("unauthorized"), Some("missing token"))
    );

    let (status, _, body) = refusal(&gw, &upgrade("/ws?token=not.a.jwt", "")).await;
    assert_eq!(status, 401);
    assert!(body["message"].as_str().unwrap().starts_with("invalid token"), "{body}");

    let expired = gw.token_expiring("alice", None, &[], now_ms() / 1000 - 3600);
    let (status, _, body) = refusal(&gw, &upgrade(&format!("/ws?token={expired}"), "")).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("token expired")));

    let foreign = {
        let other = pushgate_gateway::auth::Auth::new(b"some-other-secret-0123456789", Duration::ZERO);
        other.mint_session(&pushgate_protocol::SessionClaims {
            sub: pushgate_protocol::UserId::new("alice").unwrap(),
            exp: now_ms() / 1000 + 60,
            dev: None,
            chs: vec![],
        })
    };
    let (status, _, body) = refusal(&gw, &upgrade(&format!("/ws?token={foreign}"), "")).await;
    assert_eq!((status, body["message"].as_str()), (401, Some("invalid token: bad signature")));

    // The allowed origin, with the token in the Authorization header, is upgraded.
    let request = upgrade("/ws", &format!("Origin: https://app.example\r\nAuthorization: Bearer {token}\r\n"));
    let mut ok = RawClient::upgrade(gw.client_addr, &request).await;
    let welcome = ok.read_frame(WAIT).await.expect("welcome frame");
    let welcome: Value = serde_json::from_str(welcome.text()).unwrap();
    assert_eq!((welcome["type"].as_str(), welcome["user"].as_str()), (Some("welcome"), Some("alice")));

    assert!(gw.metric("pushgate_handshake_refusals_total", &[("status", "401")]).await >= 4.0);
    assert!(gw.metric("pushgate_handshake_refusals_total", &[("status", "403")]).await >= 1.0);
}

#[tokio::test]
async fn the_spec_order_decides_between_several_faults() {
    let gw = Gateway::start_with(GatewayOptions::default().set("allowed_origins", "https://app.example")).await;
    // Unknown path and no token: 404 first.
    let (status, _, _) = refusal(&gw, &upgrade("/other", "Origin: https://evil.example\r\n")).await;
    assert_eq!(status, 404);
    // Bad query, bad origin, no token: 400 first.
    let (status, _, _) = refusal(&gw, &upgrade("/ws?last_seq=x", "Origin: https://evil.example\r\n")).await;
    assert_eq!(status, 400);
    // Bad origin and no token: 403 before 401.
    let (status, _, _) = refusal(&gw, &upgrade("/ws", "Origin: https://evil.example\r\n")).await;
    assert_eq!(status, 403);
}

#[tokio::test]
async fn a_full_node_answers_503_with_retry_after() {
    let gw = Gateway::start_with(GatewayOptions::default().set("max_connections", 2)).await;
    let _a = gw.connect("a").await;
    let _b = gw.connect("b").await;
    let token = gw.token("c", None, &[]);
    // A full node says 503 before it looks at the token.
    let (status, head, body) = refusal(&gw, &upgrade(&format!("/ws?token={token}"), "")).await;
    assert_eq!((status, body["error"].as_str()), (503, Some("node_full")));
    assert!(head.to_ascii_lowercase().contains("retry-after: 5"), "{head}");
    drop(_a);
    // Once a slot frees, the next client gets in.
    pushgate_tests::eventually(WAIT, "a free slot", || async {
        Client::connect(&format!("{}?token={token}", gw.ws_url())).await.ok()
    })
    .await;
}

#[tokio::test]
async fn welcome_describes_the_session() {
    let gw = Gateway::start_with(GatewayOptions::default().set("heartbeat", "7s")).await;
    let client = gw.connect_token(&gw.token("alice", Some("phone"), &[])).await;
    let welcome = client.welcome.clone().unwrap();
    assert_eq!(welcome["user"], "alice");
    assert_eq!(welcome["node"], gw.node_id.as_str());
    assert_eq!(welcome["heartbeat_s"], 7);
    assert_eq!(welcome["last_seq"], 0);
    assert_eq!(welcome["session"].as_str().unwrap().len(), 16);
    // The cursor of `last_seq`; lowered to the newest seq when it is above it.
    for n in 0..50 {
        gw.publish(&serde_json::json!({"to": {"users": ["alice"]}, "data": n})).await;
    }
    let with_cursor = gw.connect_token(&format!("{}&last_seq=42", gw.token("alice", None, &[]))).await;
    assert_eq!(with_cursor.welcome.unwrap()["last_seq"], 42);
    let beyond = gw.connect_token(&format!("{}&last_seq=4200", gw.token("alice", None, &[]))).await;
    assert_eq!(beyond.welcome.unwrap()["last_seq"], 50);
}
