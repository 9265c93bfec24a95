//! Durable-path measurements: how fast the store takes durable messages (`store`), how long a
//! durable message takes from HTTP publish to the client at a steady rate (`latency`), and how
//! fast an offline user's backlog replays (`replay`).

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use futures_util::StreamExt;
use pushgate_dispatcher::{
    Message,
    ingest::{BatchConfig, Ingest},
    store::AnyStore,
};
use pushgate_protocol::{Envelope, EnvelopeLimits};
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message as WsMessage;

use crate::{
    now_us,
    stats::{self, Summary},
    token_minter,
};

#[derive(Debug, Clone, clap::Args)]
pub struct StoreArgs {
    /// `sqlite://path/inbox.db` or `mysql://user@host:port/database` (created by migrations).
    #[arg(long)]
    pub store: String,
    /// Durable messages to append.
    #[arg(long, default_value_t = 100_000)]
    pub messages: u64,
    /// Messages per transaction (the gateway's `store_batch_max`).
    #[arg(long, default_value_t = 1000)]
    pub batch: usize,
    /// Submissions in flight (publishers waiting for their commit).
    #[arg(long, default_value_t = 4000)]
    pub in_flight: usize,
    /// Distinct receivers (each message goes to one).
    #[arg(long, default_value_t = 10_000)]
    pub users: u64,
    /// Store connections.
    #[arg(long, default_value_t = 8)]
    pub pool: u32,
}

/// Appends through the same batched write path the gateway uses and reports messages/s.
pub async fn store(args: StoreArgs) -> anyhow::Result<Value> {
    let store = AnyStore::open(&args.store, args.pool).await.context("opening the store")?;
    let ingest = Ingest::start(store, BatchConfig { max_messages: args.batch, ..BatchConfig::default() });
    let slots = Arc::new(Semaphore::new(args.in_flight));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.messages as usize);
    for n in 0..args.messages {
        let permit = slots.clone().acquire_owned().await?;
        let ingest = ingest.clone();
        let user = format!("bench-{}", n % args.users);
        tasks.push(tokio::spawn(async move {
            let envelope = json!({"to": {"users": [user]}, "data": {"n": n, "text": "a durable benchmark message"}});
            let envelope = Envelope::decode(envelope.to_string().as_bytes(), &EnvelopeLimits::default())?;
            let result = ingest.append(Message::accept(envelope, pushgate_protocol::now_ms())).await;
            drop(permit);
            result.map(|_| ()).map_err(anyhow::Error::from)
        }));
    }
    for task in tasks {
        task.await??;
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = args.messages as f64 / seconds;
    eprintln!("{} durable messages in {seconds:.2} s: {rate:.0} msg/s (batch {})", args.messages, args.batch);
    Ok(json!({"messages": args.messages, "batch": args.batch, "seconds": seconds, "messages_per_s": rate}))
}

#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Receiving sessions (one user each).
    #[arg(long, default_value_t = 200)]
    pub sessions: usize,
    /// Durable messages published per second (to random users among the sessions).
    #[arg(long, default_value_t = 1000)]
    pub rate: u32,
    #[arg(long, default_value = "20s")]
    pub duration: humantime::Duration,
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long)]
    pub secret_file: Option<std::path::PathBuf>,
}

fn read_secret(secret: &Option<String>, file: &Option<std::path::PathBuf>) -> anyhow::Result<String> {
    match (secret, file) {
        (Some(s), _) => Ok(s.clone()),
        (None, Some(p)) => Ok(std::fs::read_to_string(p)?.trim().to_owned()),
        (None, None) => bail!("give the token secret with --secret or --secret-file"),
    }
}

/// Publishes durable messages over HTTP at a steady rate and measures publish → receive.
pub async fn latency(args: LatencyArgs) -> anyhow::Result<Value> {
    let mint = token_minter(&read_secret(&args.secret, &args.secret_file)?);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<u64>();
    // Users of this run only: another run's messages to the same users would be replayed.
    let run = now_us();
    for i in 0..args.sessions {
        let url = format!("{}?token={}", args.url, mint(&format!("lat-{run}-{i}")));
        let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.context("connecting")?;
        let tx = tx.clone();
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if let WsMessage::Text(text) = frame {
                    let received = now_us();
                    if let Ok(v) = serde_json::from_str::<Value>(text.as_str())
                        && let Some(sent) = v["data"]["sent_us"].as_u64()
                    {
                        let _ = tx.send(received.saturating_sub(sent));
                    }
                }
            }
        });
    }
    let http = reqwest::Client::new();
    let interval = Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1)));
    let total = (Duration::from(args.duration).as_secs_f64() * f64::from(args.rate)) as u64;
    let started = tokio::time::Instant::now();
    let mut publishes = Vec::with_capacity(total as usize);
    for n in 0..total {
        tokio::time::sleep_until(started + interval * n as u32).await;
        let user = format!("lat-{run}-{}", n as usize % args.sessions);
        let body = json!({"to": {"users": [user]}, "data": {"sent_us": now_us(), "n": n}});
        let request = http.post(format!("{}/v1/publish", args.admin)).json(&body);
        publishes.push(tokio::spawn(async move {
            let sent = now_us();
            let status = request.send().await.map(|r| r.status().as_u16()).unwrap_or(0);
            (status, now_us().saturating_sub(sent))
        }));
    }
    let mut refused = 0;
    let mut accepted_us = Vec::with_capacity(total as usize);
    for p in publishes {
        let (status, took) = p.await.unwrap_or((0, 0));
        if status == 202 {
            accepted_us.push(took);
        } else {
            refused += 1;
        }
    }
    let accept = stats::summarize(&mut accepted_us);
    let mut samples = Vec::with_capacity(total as usize);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while (samples.len() as u64) < total - refused {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(us)) => samples.push(us),
            _ => break,
        }
    }
    let received = samples.len();
    let summary: Summary = stats::summarize(&mut samples);
    eprintln!(
        "{total} durable messages at {}/s: {received} received, {refused} refused — publish → receive p50 {:.2} ms, \
         p99 {:.2} ms, max {:.2} ms; publish → 202 p50 {:.2} ms, p99 {:.2} ms",
        args.rate, summary.p50_ms, summary.p99_ms, summary.max_ms, accept.p50_ms, accept.p99_ms
    );
    Ok(
        json!({"published": total, "refused": refused, "received": received, "rate": args.rate, "latency": summary, "accepted": accept}),
    )
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReplayArgs {
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// Messages queued for the offline user before it connects.
    #[arg(long, default_value_t = 50_000)]
    pub backlog: u64,
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    #[arg(long)]
    pub secret_file: Option<std::path::PathBuf>,
}

/// Queues a backlog for an offline user, connects, and times the replay.
pub async fn replay(args: ReplayArgs) -> anyhow::Result<Value> {
    let mint = token_minter(&read_secret(&args.secret, &args.secret_file)?);
    let user = format!("replay-{}", now_us());
    let http = reqwest::Client::new();
    let publishers = 32u64;
    let published = Instant::now();
    let handles: Vec<_> = (0..publishers)
        .map(|p| {
            let (http, admin, user) = (http.clone(), args.admin.clone(), user.clone());
            let backlog = args.backlog;
            tokio::spawn(async move {
                let mut n = p;
                while n < backlog {
                    let body = json!({"to": {"users": [user]}, "data": {"n": n, "text": "queued while offline"}});
                    let status = http.post(format!("{admin}/v1/publish")).json(&body).send().await?.status();
                    anyhow::ensure!(status == 202, "publish refused: {status}");
                    n += publishers;
                }
                anyhow::Ok(())
            })
        })
        .collect();
    for h in handles {
        h.await??;
    }
    let publish_s = published.elapsed().as_secs_f64();
    let started = Instant::now();
    let url = format!("{}?token={}", args.url, mint(&user));
    let (mut ws, _) = tokio_tungstenite::connect_async(url.as_str()).await.context("connecting")?;
    let mut expected = 1u64;
    while expected <= args.backlog {
        match tokio::time::timeout(Duration::from_secs(30), ws.next()).await {
            Ok(Some(Ok(WsMessage::Text(text)))) => {
                let v: Value = serde_json::from_str(text.as_str())?;
                if v["type"] == "message" {
                    anyhow::ensure!(v["seq"] == expected, "expected seq {expected}, got {}", v["seq"]);
                    expected += 1;
                }
            }
            Ok(Some(Ok(_))) => {}
            other => bail!("replay stopped at seq {expected}: {other:?}"),
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    let rate = args.backlog as f64 / seconds;
    eprintln!(
        "replayed {} messages in {seconds:.2} s: {rate:.0} msg/s (queued in {publish_s:.1} s over HTTP)",
        args.backlog
    );
    Ok(json!({"backlog": args.backlog, "seconds": seconds, "messages_per_s": rate, "publish_seconds": publish_s}))
}
