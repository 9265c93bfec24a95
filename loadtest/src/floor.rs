//! The loopback floor: what this machine's kernel alone costs to deliver one small frame to each
//! of N TCP connections — no WebSocket, no gateway, no task per session on the sending side. A
//! plain thread writes the frame to every connection with one blocking `write` each (the least
//! any server can do); async readers on this process's runtime read it (as the load workers do).
//! The figures bound every broadcast measured here from below: no server can deliver a broadcast
//! to N sessions in less CPU than `N × cpu_per_frame`, and two cores share it.

use std::{
    io::Write,
    net::{TcpListener, TcpStream},
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering::Relaxed},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use serde_json::json;
use tokio::{io::AsyncReadExt, sync::Notify};

use crate::{now_us, stats};

/// Each connection costs two files in this process (both ends); stay under the 20,000 limit.
const MAX_CONNECTIONS: usize = 9_500;
/// A round that has not delivered everything by then has failed.
const ROUND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, clap::Args)]
pub struct FloorArgs {
    /// Connections (both ends live in this process: at most 9,500).
    #[arg(long, default_value_t = 9_000)]
    pub connections: usize,
    /// Frame size in bytes (a broadcast's WebSocket frame is about this).
    #[arg(long, default_value_t = 100)]
    pub bytes: usize,
    /// Broadcast rounds; CPU is summed over all of them, latency is the median round's.
    #[arg(long, default_value_t = 10)]
    pub rounds: usize,
    /// Quiet time before each round, so that one round's stragglers (ACKs, wake-ups) do not
    /// land in the next.
    #[arg(long, default_value = "300ms")]
    pub pause: humantime::Duration,
}

/// What the receivers share: the latencies of the current round and when it is complete.
struct Inbox {
    latencies_us: Mutex<Vec<u64>>,
    received: AtomicUsize,
    expected: usize,
    complete: Notify,
}

/// Runs the rounds and returns the report.
pub async fn run(args: FloorArgs) -> anyhow::Result<serde_json::Value> {
    anyhow::ensure!(
        (1..=MAX_CONNECTIONS).contains(&args.connections),
        "--connections must be 1 to {MAX_CONNECTIONS} (two files each, under the 20,000-file limit)"
    );
    anyhow::ensure!((8..=65_536).contains(&args.bytes), "--bytes must be 8 to 65536 (the frame carries a timestamp)");
    anyhow::ensure!((1..=1000).contains(&args.rounds), "--rounds must be 1 to 1000");
    let _ = rlimit::increase_nofile_limit(u64::MAX);

    let listener = TcpListener::bind("127.0.0.1:0").context("binding a loopback listener")?;
    let addr = listener.local_addr()?;
    let inbox = Arc::new(Inbox {
        latencies_us: Mutex::new(Vec::with_capacity(args.connections)),
        received: AtomicUsize::new(0),
        expected: args.connections,
        complete: Notify::new(),
    });
    let mut senders = Vec::with_capacity(args.connections);
    for _ in 0..args.connections {
        let reader = TcpStream::connect(addr).context("connecting over loopback")?;
        let (writer, _) = listener.accept().context("accepting over loopback")?;
        writer.set_nodelay(true)?;
        reader.set_nodelay(true)?;
        reader.set_nonblocking(true)?;
        tokio::spawn(read_frames(tokio::net::TcpStream::from_std(reader)?, args.bytes, inbox.clone()));
        senders.push(writer);
    }

    let process = std::process::id();
    let mut frame = vec![0u8; args.bytes];
    let mut rounds = Vec::with_capacity(args.rounds);
    let mut summaries = Vec::with_capacity(args.rounds);
    let (mut sender_cpu_s, mut process_cpu_s, mut frames) = (0.0, 0.0, 0usize);
    for round in 0..args.rounds {
        tokio::time::sleep(*args.pause).await;
        inbox.received.store(0, Relaxed);
        inbox.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let complete = inbox.complete.notified();
        let cpu_before = stats::cpu_seconds(process).unwrap_or(0.0);
        let start = Instant::now();
        frame[..8].copy_from_slice(&now_us().to_le_bytes());
        // The sender: one thread, one write per connection.
        let (streams, write_wall, write_cpu) = tokio::task::spawn_blocking({
            let frame = frame.clone();
            move || -> std::io::Result<(Vec<TcpStream>, Duration, f64)> {
                let cpu = thread_cpu_seconds();
                let began = Instant::now();
                for stream in &mut senders {
                    stream.write_all(&frame)?;
                }
                Ok((senders, began.elapsed(), thread_cpu_seconds() - cpu))
            }
        })
        .await??;
        senders = streams;
        tokio::time::timeout(ROUND_TIMEOUT, complete)
            .await
            .with_context(|| format!("round {round}: not every connection got the frame within {ROUND_TIMEOUT:?}"))?;
        let wall = start.elapsed();
        let cpu = stats::cpu_seconds(process).unwrap_or(0.0) - cpu_before;
        let mut latencies = std::mem::take(&mut *inbox.latencies_us.lock().unwrap_or_else(|e| e.into_inner()));
        let summary = stats::summarize(&mut latencies);
        summaries.push(summary);
        sender_cpu_s += write_cpu;
        process_cpu_s += cpu;
        frames += args.connections;
        eprintln!(
            "round {round}: {} frames, writes {:.1} ms, last read {:.1} ms, p50 {:.1} ms, p99 {:.1} ms",
            args.connections,
            write_wall.as_secs_f64() * 1000.0,
            wall.as_secs_f64() * 1000.0,
            summary.p50_ms,
            summary.p99_ms
        );
        rounds.push(json!({
            "write_ms": write_wall.as_secs_f64() * 1000.0,
            "last_read_ms": wall.as_secs_f64() * 1000.0,
            "latency": summary,
        }));
    }
    let p50 = stats::median(&mut summaries.iter().map(|s| s.p50_ms).collect::<Vec<_>>());
    let p99 = stats::median(&mut summaries.iter().map(|s| s.p99_ms).collect::<Vec<_>>());
    let sender_us = sender_cpu_s * 1e6 / frames as f64;
    let process_us = process_cpu_s * 1e6 / frames as f64;
    eprintln!(
        "floor: {} connections × {} rounds: sender {sender_us:.2} µs CPU per frame, sender + readers \
         {process_us:.2} µs CPU per frame; median p50 {p50:.1} ms, p99 {p99:.1} ms",
        args.connections, args.rounds,
    );
    Ok(json!({
        "connections": args.connections,
        "bytes": args.bytes,
        "rounds": args.rounds,
        "median_p50_ms": p50,
        "median_p99_ms": p99,
        "sender_cpu_us_per_frame": sender_us,
        "process_cpu_us_per_frame": process_us,
        "per_round": rounds,
    }))
}

/// One reader: every frame's latency from the timestamp it carries.
async fn read_frames(mut stream: tokio::net::TcpStream, bytes: usize, inbox: Arc<Inbox>) {
    let mut buf = vec![0u8; bytes];
    while stream.read_exact(&mut buf).await.is_ok() {
        let mut sent = [0u8; 8];
        sent.copy_from_slice(&buf[..8]);
        let latency = now_us().saturating_sub(u64::from_le_bytes(sent));
        inbox.latencies_us.lock().unwrap_or_else(|e| e.into_inner()).push(latency);
        if inbox.received.fetch_add(1, Relaxed) + 1 == inbox.expected {
            inbox.complete.notify_one();
        }
    }
}

/// CPU time of the calling thread, in seconds.
fn thread_cpu_seconds() -> f64 {
    stats::cpu_seconds_of("/proc/thread-self/stat").unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_connection_gets_every_round() {
        let report =
            run(FloorArgs { connections: 50, bytes: 64, rounds: 2, pause: Duration::ZERO.into() }).await.unwrap();
        assert_eq!(report["per_round"].as_array().unwrap().len(), 2);
        for round in report["per_round"].as_array().unwrap() {
            assert_eq!(round["latency"]["count"], 50);
        }
        assert!(report["median_p99_ms"].as_f64().unwrap() >= report["median_p50_ms"].as_f64().unwrap());
    }

    #[tokio::test]
    async fn out_of_range_arguments_are_refused() {
        let pause = Duration::ZERO.into();
        assert!(run(FloorArgs { connections: 20_000, bytes: 100, rounds: 1, pause }).await.is_err());
        assert!(run(FloorArgs { connections: 10, bytes: 4, rounds: 1, pause }).await.is_err());
    }
}
