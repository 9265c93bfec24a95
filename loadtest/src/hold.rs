//! The orchestrator: spreads N sessions over worker processes (each under the file limit, each
//! on its own source address), measures how fast they connect, samples the gateway's memory once
//! they are idle, times broadcasts to all of them, and reports. Bounded in time; exits non-zero
//! when it could not hold what it was asked to.

use std::{
    net::{IpAddr, Ipv4Addr},
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::Command,
    sync::mpsc,
};

use crate::{
    now_us,
    stats::{self, Summary},
};

/// Most sessions one worker process opens: one descriptor each, under the 20,000 limit.
pub const MAX_SESSIONS_PER_WORKER: usize = 18_000;

#[derive(Debug, Clone, clap::Args)]
pub struct HoldArgs {
    /// Client endpoint, e.g. ws://127.0.0.1:8080/ws.
    #[arg(long, default_value = "ws://127.0.0.1:8080/ws")]
    pub url: String,
    /// Admin endpoint, for broadcasts.
    #[arg(long, default_value = "http://127.0.0.1:9090")]
    pub admin: String,
    /// API key of the admin API, if it has one.
    #[arg(long, env = "PUSHGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// Sessions to open and hold.
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Worker processes (default: enough for the file limit, at least 2).
    #[arg(long)]
    pub workers: Option<usize>,
    /// New sessions per second, over all workers.
    #[arg(long, default_value_t = 4000)]
    pub ramp_per_s: u32,
    /// How long to hold the sessions (the run stops by itself after this).
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// Broadcasts to time once everything is open.
    #[arg(long, default_value_t = 0)]
    pub broadcasts: usize,
    /// Pause between broadcasts.
    #[arg(long, default_value = "2s")]
    pub broadcast_interval: humantime::Duration,
    /// Gateway process to sample (RSS, CPU).
    #[arg(long)]
    pub gateway_pid: Option<u32>,
    /// Idle time before the memory sample, so that handshake buffers are gone.
    #[arg(long, default_value = "3s")]
    pub settle: humantime::Duration,
    /// HS256 secret of the gateway's tokens.
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the secret (a standalone gateway's `DATA_DIR/jwt_secret`).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
}

/// What one broadcast measured.
#[derive(Debug, Clone, serde::Serialize)]
pub struct BroadcastResult {
    pub id: String,
    pub latency: Summary,
    /// Gateway CPU time spent per delivered frame, in microseconds.
    pub cpu_us_per_frame: Option<f64>,
}

/// The run's figures.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    pub requested: usize,
    pub opened: usize,
    pub failed: usize,
    pub unexpected_closes: usize,
    pub connect_seconds: f64,
    pub handshakes_per_s: f64,
    pub gateway_rss_before: Option<u64>,
    pub gateway_rss_idle: Option<u64>,
    pub rss_bytes_per_session: Option<f64>,
    pub broadcasts: Vec<BroadcastResult>,
}

fn source_ip(worker: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (worker % 253) as u8))
}

pub async fn run(args: HoldArgs) -> anyhow::Result<Report> {
    let secret = match (&args.secret, &args.secret_file) {
        (Some(s), _) => s.clone(),
        (None, Some(path)) => {
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?.trim().to_owned()
        }
        (None, None) => bail!("give the gateway's token secret with --secret, PUSHGATE_JWT_SECRET or --secret-file"),
    };
    let workers = args.workers.unwrap_or_else(|| args.sessions.div_ceil(MAX_SESSIONS_PER_WORKER).max(2)).max(1);
    if args.sessions.div_ceil(workers) > MAX_SESSIONS_PER_WORKER {
        bail!("{} sessions need at least {} workers", args.sessions, args.sessions.div_ceil(MAX_SESSIONS_PER_WORKER));
    }
    let rss_before = args.gateway_pid.and_then(stats::rss_bytes);
    let exe = std::env::current_exe()?;
    let (lines_tx, mut lines) = mpsc::unbounded_channel::<(usize, Value)>();
    let mut children = Vec::new();
    for w in 0..workers {
        let share = args.sessions / workers + usize::from(w < args.sessions % workers);
        let mut child = Command::new(&exe)
            .arg("worker")
            .args(["--url", &args.url, "--sessions", &share.to_string()])
            .args(["--user-prefix", &format!("load-w{w}-"), "--source-ip", &source_ip(w).to_string()])
            .args(["--ramp-per-s", &(args.ramp_per_s / workers as u32).max(1).to_string()])
            .args(["--duration", &humantime::format_duration(args.duration.into()).to_string()])
            .env("PUSHGATE_JWT_SECRET", &secret)
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .context("spawning a worker")?;
        let stdout = child.stdout.take().context("worker stdout")?;
        let tx = lines_tx.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(value) = serde_json::from_str(&line) {
                    let _ = tx.send((w, value));
                }
            }
        });
        children.push(child);
    }
    drop(lines_tx);

    // Connect phase.
    let mut ready = vec![None::<Value>; workers];
    let mut last_progress = Instant::now();
    while ready.iter().any(Option::is_none) {
        let Some((w, line)) = lines.recv().await else { bail!("workers exited before they were ready") };
        match line["type"].as_str() {
            Some("ready") => ready[w] = Some(line),
            Some("progress") if last_progress.elapsed() > Duration::from_secs(1) => {
                last_progress = Instant::now();
                eprintln!("connecting: worker {w}: {} open, {} failed", line["open"], line["failed"]);
            }
            _ => {}
        }
    }
    let opened: usize = ready.iter().flatten().map(|r| r["open"].as_u64().unwrap_or(0) as usize).sum();
    let failed: usize = ready.iter().flatten().map(|r| r["failed"].as_u64().unwrap_or(0) as usize).sum();
    let connect_seconds =
        ready.iter().flatten().map(|r| r["elapsed_ms"].as_f64().unwrap_or(0.0)).fold(0.0, f64::max) / 1000.0;
    let handshakes_per_s = if connect_seconds > 0.0 { opened as f64 / connect_seconds } else { 0.0 };
    eprintln!(
        "open: {opened} of {} ({failed} failed) in {connect_seconds:.2} s — {handshakes_per_s:.0} handshakes/s",
        args.sessions
    );

    tokio::time::sleep(args.settle.into()).await;
    let rss_idle = args.gateway_pid.and_then(stats::rss_bytes);
    let rss_bytes_per_session = match (rss_before, rss_idle) {
        (Some(before), Some(idle)) if opened > 0 => Some((idle.saturating_sub(before)) as f64 / opened as f64),
        _ => None,
    };
    if let (Some(idle), Some(per)) = (rss_idle, rss_bytes_per_session) {
        eprintln!("gateway RSS idle: {:.1} MiB — {per:.0} bytes per session", idle as f64 / 1048576.0);
    }

    // Broadcasts.
    let http = reqwest::Client::new();
    let mut broadcasts = Vec::new();
    for k in 0..args.broadcasts {
        let cpu_before = args.gateway_pid.and_then(stats::cpu_seconds);
        let body = json!({"to": {"all": true}, "data": {"sent_us": now_us(), "k": k}});
        let mut request = http.post(format!("{}/v1/publish", args.admin)).json(&body);
        if let Some(key) = &args.api_key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.context("publishing a broadcast")?;
        if response.status() != 202 {
            bail!("broadcast refused: {} {}", response.status(), response.text().await.unwrap_or_default());
        }
        let id = response.json::<Value>().await?["id"].as_str().unwrap_or_default().to_owned();
        let mut samples = Vec::with_capacity(opened);
        let mut reported = 0;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while reported < workers {
            let Ok(Some((_, line))) = tokio::time::timeout_at(deadline, lines.recv()).await else { break };
            if line["type"] == "latency" && line["id"] == id.as_str() {
                reported += 1;
                samples.extend(line["us"].as_array().into_iter().flatten().filter_map(Value::as_u64));
            }
        }
        let cpu_after = args.gateway_pid.and_then(stats::cpu_seconds);
        let delivered = samples.len();
        let latency = stats::summarize(&mut samples);
        let cpu_us_per_frame = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if delivered > 0 => Some((a - b) * 1e6 / delivered as f64),
            _ => None,
        };
        eprintln!(
            "broadcast {k}: {delivered} of {opened} received — p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
            latency.p50_ms, latency.p99_ms, latency.max_ms
        );
        broadcasts.push(BroadcastResult { id, latency, cpu_us_per_frame });
        tokio::time::sleep(args.broadcast_interval.into()).await;
    }

    // Hold until the workers' duration is over.
    let mut unexpected_closes = 0;
    let mut done = 0;
    while done < workers {
        let Some((_, line)) = lines.recv().await else { break };
        if line["type"] == "done" {
            done += 1;
            unexpected_closes += line["unexpected_closes"].as_u64().unwrap_or(0) as usize;
        }
    }
    for mut child in children {
        let _ = child.wait().await;
    }
    let report = Report {
        requested: args.sessions,
        opened,
        failed,
        unexpected_closes,
        connect_seconds,
        handshakes_per_s,
        gateway_rss_before: rss_before,
        gateway_rss_idle: rss_idle,
        rss_bytes_per_session,
        broadcasts,
    };
    if let Some(path) = &args.report {
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)?;
    }
    Ok(report)
}

impl Report {
    /// Whether the run held what it was asked to.
    pub fn held(&self) -> bool {
        self.opened == self.requested
            && self.unexpected_closes == 0
            && self.broadcasts.iter().all(|b| b.latency.count == self.opened)
    }
}
