//! `soak --server peer` end to end: the real binary and its worker processes against a minimal
//! broadcast server started here — plain WebSocket sessions, and `POST /pub` whose body goes to
//! every one of them as a text frame — the shape of the peers `ops/bench/peers.sh` measures.
#![allow(clippy::unwrap_used)]

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use futures_util::{SinkExt as _, StreamExt as _};
use serde_json::Value;
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::{TcpListener, TcpStream},
    sync::mpsc,
};
use tokio_tungstenite::tungstenite::Message;

/// Frames waiting for one slow session: the test's broadcasts are a handful.
const SESSION_QUEUE: usize = 64;

/// The sessions' outgoing queues.
type Sessions = Arc<Mutex<Vec<mpsc::Sender<String>>>>;

/// A broadcast server on ephemeral ports: its WebSocket address and its publish address.
async fn start_peer() -> (SocketAddr, SocketAddr) {
    let sessions: Sessions = Arc::default();
    let ws = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let publish = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addrs = (ws.local_addr().unwrap(), publish.local_addr().unwrap());
    let held = sessions.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = ws.accept().await {
            tokio::spawn(session(stream, held.clone()));
        }
    });
    tokio::spawn(async move {
        while let Ok((stream, _)) = publish.accept().await {
            tokio::spawn(publish_one(stream, sessions.clone()));
        }
    });
    addrs
}

async fn session(stream: TcpStream, sessions: Sessions) {
    let Ok(ws) = tokio_tungstenite::accept_async(stream).await else { return };
    let (mut sink, mut source) = ws.split();
    let (tx, mut rx) = mpsc::channel::<String>(SESSION_QUEUE);
    sessions.lock().unwrap().push(tx);
    loop {
        tokio::select! {
            frame = rx.recv() => match frame {
                Some(text) => if sink.send(Message::text(text)).await.is_err() { return },
                None => return,
            },
            incoming = source.next() => match incoming {
                Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return,
                Some(Ok(_)) => {}
            },
        }
    }
}

/// One HTTP/1.1 request: the body goes to every session; answered 202 and closed.
async fn publish_one(mut stream: TcpStream, sessions: Sessions) {
    let mut request = Vec::new();
    let mut chunk = [0u8; 4096];
    let (head_end, length) = loop {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&chunk[..n]);
        if let Some(end) = request.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&request[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
    };
    while request.len() < head_end + length {
        let Ok(n) = stream.read(&mut chunk).await else { return };
        if n == 0 {
            return;
        }
        request.extend_from_slice(&chunk[..n]);
    }
    let body = String::from_utf8_lossy(&request[head_end..head_end + length]).into_owned();
    let queues: Vec<_> = sessions.lock().unwrap().clone();
    for queue in queues {
        let _ = queue.try_send(body.clone());
    }
    let _ = stream.write_all(b"HTTP/1.1 202 Accepted\r\ncontent-length: 0\r\nconnection: close\r\n\r\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_measures_a_peer_broadcast_server() {
    let (ws, publish) = start_peer().await;
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_pushgate-loadtest"))
        .args(["soak", "--server", "peer", "--url", &format!("ws://{ws}/ws")])
        .args(["--peer-publish", &format!("http://{publish}/pub")])
        .args(["--sessions", "40", "--workers", "2", "--settle", "0s", "--duration", "3s"])
        .args(["--broadcasts", "2", "--broadcast-interval", "500ms", "--delivery-timeout", "5s"])
        .args(["--gateway-pid", &std::process::id().to_string(), "--progress", "none", "--json"])
        .env_remove("PUSHGATE_JWT_SECRET")
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "exit {:?}: {stderr}", output.status);
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["setup"]["options"]["server"], "peer");
    assert_eq!((report["requested"].as_u64(), report["opened"].as_u64()), (Some(40), Some(40)));
    assert_eq!(report["unexpected_closes"], 0);
    let broadcasts = report["broadcasts"].as_array().unwrap();
    assert_eq!(broadcasts.len(), 2);
    for b in broadcasts {
        assert_eq!((b["expected"].as_u64(), b["delivered"].as_u64()), (Some(40), Some(40)), "{b}");
        assert_eq!(b["publish_failures"], 0);
        assert_eq!(b["latency"]["count"], 40);
    }
    assert_eq!(report["latency"]["broadcast"]["summary"]["count"], 80);
    assert!(report["handshakes_per_s"].as_f64().unwrap() > 0.0);
    assert_eq!(report["passed"], true);
}
