//! Measures the session log's write path alone (a measurement aid, `BENCHMARKS.md`): the process's
//! CPU time (the runtime's threads and SQLite's) and the wall time per line, for a connect flood's
//! worth of lines written in batches, against a SQLite store in a temporary directory.
//!
//! `cargo run --release -p pushgate-dispatcher --example session_log [ROUNDS=5] [BATCH=250]`

use std::time::Instant;

use pushgate_dispatcher::store::{AnyStore, SessionEvent, SessionEventKind, Store};
use pushgate_protocol::{DeviceId, UserId, now_ms};

const LINES: usize = 120_000;

/// The process's CPU time so far (every thread), in seconds, from `/proc/self/stat`.
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").expect("/proc/self/stat is readable");
    let fields: Vec<&str> = stat.rsplit_once(')').expect("a stat line").1.split_whitespace().collect();
    let ticks: f64 = fields[11].parse::<f64>().expect("utime") + fields[12].parse::<f64>().expect("stime");
    ticks / 100.0
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map_or(5, |a| a.parse().expect("ROUNDS is a number"));
    let batch: usize = args.next().map_or(250, |a| a.parse().expect("BATCH is a number"));
    let dir = tempfile::tempdir().expect("a temporary directory");
    let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
    let store = AnyStore::open(&url, 4).await.expect("the store opens");
    let events: Vec<SessionEvent> = (0..LINES)
        .map(|i| SessionEvent {
            at_ms: now_ms(),
            kind: if i % 2 == 0 { SessionEventKind::Open } else { SessionEventKind::Close { code: 1000 } },
            session: format!("{:016x}", i * 7919),
            node: "node-1".to_owned(),
            user: UserId::new(&format!("lt1-{i}")).expect("a valid user id"),
            device: Some(DeviceId::new(&format!("dev-{i}")).expect("a valid device id")),
        })
        .collect();
    for round in 1..=rounds {
        let (cpu, wall) = (cpu_seconds(), Instant::now());
        for chunk in events.chunks(batch) {
            store.log_sessions(chunk).await.expect("the lines are written");
        }
        let per_line = |s: f64| s / LINES as f64 * 1e6;
        let (cpu, wall) = (per_line(cpu_seconds() - cpu), per_line(wall.elapsed().as_secs_f64()));
        println!("round {round}: {LINES} lines in batches of {batch}: CPU {cpu:.2} µs, wall {wall:.2} µs per line");
    }
}
