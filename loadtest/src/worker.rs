//! One worker process: opens its share of sessions from one source address at a bounded rate,
//! keeps them open (reading answers the server's Pings), timestamps every delivery that carries
//! `data.sent_us`, and reports JSON lines on stdout for the orchestrator. It stops by itself
//! when its duration is over.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::net::TcpSocket;
use tokio_tungstenite::tungstenite::{Message, client::IntoClientRequest, protocol::WebSocketConfig};

use crate::{now_us, token_minter};

/// What one worker is asked to do.
#[derive(Debug, Clone, clap::Args)]
pub struct WorkerArgs {
    /// Client endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long)]
    pub url: String,
    /// Sessions this worker opens (keep it under ~19,000: one file descriptor each).
    #[arg(long)]
    pub sessions: usize,
    /// Prefix of the user ids (`PREFIX0`, `PREFIX1`, …).
    #[arg(long, default_value = "load-")]
    pub user_prefix: String,
    /// Source address of this worker's connections (127.0.0.2–127.0.0.254 spread ephemeral ports).
    #[arg(long, default_value = "127.0.0.2")]
    pub source_ip: IpAddr,
    /// New sessions per second.
    #[arg(long, default_value_t = 2000)]
    pub ramp_per_s: u32,
    /// How long to hold the sessions.
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// HS256 secret of the gateway's tokens.
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: String,
}

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    failed: AtomicUsize,
    /// Sessions the server closed (or that broke) before the worker's duration ended.
    unexpected: AtomicUsize,
    /// Delivery latencies (µs) per message id, until reported.
    latencies: Mutex<HashMap<String, (Instant, Vec<u64>)>>,
    /// Close codes seen, for the report.
    close_codes: Mutex<HashMap<u16, usize>>,
}

fn emit(line: Value) {
    println!("{line}");
}

/// Read and write buffers of a load session: small, since the load client should not be what
/// runs out of memory.
fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default().read_buffer_size(4096).write_buffer_size(0).max_write_buffer_size(64 * 1024)
}

pub async fn run(args: WorkerArgs) -> anyhow::Result<()> {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let addr = server_addr(&args.url)?;
    let counters = Arc::new(Counters::default());
    let mint = token_minter(&args.secret);
    let started = Instant::now();
    let stop_at = started + Duration::from(args.duration);

    // Progress once a second, latencies as soon as a message has reached every open session.
    let reporter = {
        let counters = counters.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut last_progress = Instant::now();
            loop {
                tick.tick().await;
                let open = counters.open.load(Ordering::Relaxed);
                let mut done = Vec::new();
                {
                    let mut map = counters.latencies.lock().unwrap_or_else(|e| e.into_inner());
                    map.retain(|id, (first, samples)| {
                        let complete = samples.len() >= open || first.elapsed() > Duration::from_secs(30);
                        if complete {
                            done.push((id.clone(), std::mem::take(samples)));
                        }
                        !complete
                    });
                }
                for (id, samples) in done {
                    emit(json!({"type": "latency", "id": id, "us": samples}));
                }
                if last_progress.elapsed() >= Duration::from_secs(1) {
                    last_progress = Instant::now();
                    emit(progress(&counters, "progress"));
                }
            }
        })
    };

    let pace = Duration::from_secs_f64(1.0 / f64::from(args.ramp_per_s.max(1)));
    let mut tasks = Vec::with_capacity(args.sessions);
    for i in 0..args.sessions {
        let due = started + pace * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let url = format!("{}?token={}", args.url, mint(&format!("{}{i}", args.user_prefix)));
        tasks.push(tokio::spawn(session(url, addr, args.source_ip, counters.clone(), stop_at)));
    }
    // Every session is open or has failed.
    while counters.open.load(Ordering::Relaxed) + counters.failed.load(Ordering::Relaxed) < args.sessions {
        if Instant::now() > stop_at {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut ready = progress(&counters, "ready");
    ready["elapsed_ms"] = (started.elapsed().as_millis() as u64).into();
    emit(ready);

    for task in tasks {
        let _ = task.await;
    }
    // Let the reporter flush what is complete.
    tokio::time::sleep(Duration::from_millis(250)).await;
    reporter.abort();
    emit(progress(&counters, "done"));
    Ok(())
}

fn progress(counters: &Counters, kind: &str) -> Value {
    let codes = counters.close_codes.lock().map(|m| m.clone()).unwrap_or_default();
    json!({
        "type": kind,
        "open": counters.open.load(Ordering::Relaxed),
        "failed": counters.failed.load(Ordering::Relaxed),
        "unexpected_closes": counters.unexpected.load(Ordering::Relaxed),
        "close_codes": codes,
    })
}

fn server_addr(url: &str) -> anyhow::Result<SocketAddr> {
    let rest = url.strip_prefix("ws://").context("the url must start with ws://")?;
    let host_port = rest.split('/').next().unwrap_or(rest);
    host_port.parse().with_context(|| format!("{host_port} is not an ip:port"))
}

async fn session(url: String, addr: SocketAddr, source: IpAddr, counters: Arc<Counters>, stop_at: Instant) {
    let connected = async {
        let socket = if source.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
        socket.bind(SocketAddr::new(source, 0))?;
        let stream = socket.connect(addr).await?;
        stream.set_nodelay(true)?;
        let request = url.into_client_request()?;
        let (ws, _) = tokio_tungstenite::client_async_with_config(request, stream, Some(ws_config())).await?;
        anyhow::Ok(ws)
    };
    let mut ws = match tokio::time::timeout(Duration::from_secs(30), connected).await {
        Ok(Ok(ws)) => ws,
        _ => {
            counters.failed.fetch_add(1, Ordering::Relaxed);
            return;
        }
    };
    counters.open.fetch_add(1, Ordering::Relaxed);
    let mut unexpected = None;
    loop {
        let next = tokio::select! {
            next = ws.next() => next,
            () = tokio::time::sleep_until(stop_at.into()) => break,
        };
        match next {
            Some(Ok(Message::Text(text))) => record(&counters, text.as_str()),
            Some(Ok(Message::Close(frame))) => {
                unexpected = Some(frame.map(|f| u16::from(f.code)).unwrap_or(1005));
                break;
            }
            Some(Ok(_)) => {}
            Some(Err(_)) | None => {
                unexpected = Some(1006);
                break;
            }
        }
    }
    counters.open.fetch_sub(1, Ordering::Relaxed);
    if let Some(code) = unexpected {
        counters.unexpected.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut codes) = counters.close_codes.lock() {
            *codes.entry(code).or_default() += 1;
        }
    } else {
        let _ = ws.close(None).await;
    }
}

fn record(counters: &Counters, text: &str) {
    let received = now_us();
    let Ok(frame) = serde_json::from_str::<Value>(text) else { return };
    if frame["type"] != "message" {
        return;
    }
    let (Some(id), Some(sent)) = (frame["id"].as_str(), frame["data"]["sent_us"].as_u64()) else { return };
    if let Ok(mut map) = counters.latencies.lock() {
        map.entry(id.to_owned()).or_insert_with(|| (Instant::now(), Vec::new())).1.push(received.saturating_sub(sent));
    }
}
