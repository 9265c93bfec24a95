//! The orchestrator's side of the worker processes: spawns them (spec on stdin), merges what
//! they report into one [`FleetState`], sends them commands, and collects their last word. The
//! [`Monitor`] samples the fleet, the publishers and every gateway process (RSS, CPU) into the
//! run's timeline, and drives the progress display.

use std::{
    collections::{BTreeMap, HashMap, VecDeque},
    process::Stdio,
    sync::{Arc, Mutex, MutexGuard, atomic::Ordering::Relaxed},
    time::Duration,
};

use anyhow::Context as _;
use serde::Serialize;
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    process::{Child, ChildStdin},
    sync::watch,
    task::JoinHandle,
    time::Instant,
};

use crate::{
    plan::GatewayProc,
    progress::{Snapshot, Ui},
    publisher::PublishStats,
    stats::{self, Histogram},
    wire::{Command, Event, Final, Progress, StormProgress, WorkerSpec},
};

/// What the workers have reported so far.
#[derive(Debug, Default)]
pub struct FleetState {
    /// Latest counters of each worker.
    pub progress: Vec<Progress>,
    /// Latencies over the run, by kind.
    pub kinds: BTreeMap<String, Histogram>,
    /// Latencies of every kind since the monitor's last sample.
    pub window: Histogram,
    /// Latencies by tracked message: `(kind, histogram)`.
    pub tracked: HashMap<String, (String, Histogram)>,
    /// Storm progress by storm id and worker.
    pub storms: BTreeMap<u64, BTreeMap<usize, StormProgress>>,
    pub finals: Vec<Option<Final>>,
    /// A worker's stdout closed (it exited).
    pub ended: Vec<bool>,
    /// The last lines each worker wrote on stderr.
    pub stderr: Vec<VecDeque<String>>,
}

impl FleetState {
    fn new(workers: usize) -> Self {
        Self {
            progress: vec![Progress::default(); workers],
            finals: vec![None; workers],
            ended: vec![false; workers],
            stderr: vec![VecDeque::new(); workers],
            ..Self::default()
        }
    }

    pub fn apply(&mut self, worker: usize, event: Event) {
        match event {
            Event::Progress(p) => self.progress[worker] = p,
            Event::Latency(delta) => {
                for (kind, sparse) in delta.kinds {
                    let h = Histogram::from_sparse(&sparse);
                    self.window.merge(&h);
                    self.kinds.entry(kind).or_default().merge(&h);
                }
                for t in delta.tracked {
                    let h = Histogram::from_sparse(&t.hist);
                    self.tracked.entry(t.key).or_insert_with(|| (t.kind, Histogram::new())).1.merge(&h);
                }
            }
            Event::Storm(s) => {
                self.storms.entry(s.id).or_default().insert(worker, s);
            }
            Event::Final(f) => self.finals[worker] = Some(f),
        }
    }

    pub fn totals(&self) -> Progress {
        Progress::total(&self.progress)
    }

    /// Deliveries of a tracked message so far.
    pub fn tracked_count(&self, key: &str) -> u64 {
        self.tracked.get(key).map_or(0, |(_, h)| h.count())
    }

    /// A storm's progress summed over workers, and how many workers have reported it.
    pub fn storm(&self, id: u64) -> (StormProgress, usize) {
        let mut total = StormProgress { id, ..StormProgress::default() };
        let (mut reconnect, mut resume) = (Histogram::new(), Histogram::new());
        let Some(by_worker) = self.storms.get(&id) else { return (total, 0) };
        for s in by_worker.values() {
            total.sessions += s.sessions;
            total.down += s.down;
            total.reconnected += s.reconnected;
            total.resumed += s.resumed;
            total.connect_errors += s.connect_errors;
            reconnect.merge(&Histogram::from_sparse(&s.reconnect_us));
            resume.merge(&Histogram::from_sparse(&s.resume_us));
        }
        total.reconnect_us = reconnect.to_sparse();
        total.resume_us = resume.to_sparse();
        (total, by_worker.len())
    }
}

struct WorkerProc {
    child: Child,
    stdin: Option<ChildStdin>,
    pid: Option<u32>,
}

/// The running worker processes.
pub struct Fleet {
    workers: Vec<WorkerProc>,
    state: Arc<Mutex<FleetState>>,
}

impl Fleet {
    /// Spawns one process per spec (`pushgate-loadtest worker`, this executable).
    pub async fn spawn(specs: Vec<WorkerSpec>) -> anyhow::Result<Self> {
        let exe = std::env::current_exe().context("finding this executable")?;
        let state = Arc::new(Mutex::new(FleetState::new(specs.len())));
        let mut workers = Vec::with_capacity(specs.len());
        for (w, spec) in specs.into_iter().enumerate() {
            let mut child = tokio::process::Command::new(&exe)
                .arg("worker")
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .context("spawning a worker process")?;
            let mut stdin = child.stdin.take().context("worker stdin")?;
            let mut line = serde_json::to_vec(&spec)?;
            line.push(b'\n');
            stdin.write_all(&line).await.context("sending a worker its spec")?;
            let stdout = child.stdout.take().context("worker stdout")?;
            let stderr = child.stderr.take().context("worker stderr")?;
            let st = state.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stdout).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if let Ok(event) = serde_json::from_str::<Event>(&line) {
                        lock(&st).apply(w, event);
                    }
                }
                lock(&st).ended[w] = true;
            });
            let st = state.clone();
            tokio::spawn(async move {
                let mut lines = BufReader::new(stderr).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    let mut s = lock(&st);
                    let tail = &mut s.stderr[w];
                    if tail.len() >= 20 {
                        tail.pop_front();
                    }
                    tail.push_back(line);
                }
            });
            let pid = child.id();
            workers.push(WorkerProc { child, stdin: Some(stdin), pid });
        }
        Ok(Self { workers, state })
    }

    pub fn len(&self) -> usize {
        self.workers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.workers.is_empty()
    }

    pub fn pids(&self) -> Vec<u32> {
        self.workers.iter().filter_map(|w| w.pid).collect()
    }

    pub fn state(&self) -> Arc<Mutex<FleetState>> {
        self.state.clone()
    }

    pub fn lock(&self) -> MutexGuard<'_, FleetState> {
        lock(&self.state)
    }

    pub fn totals(&self) -> Progress {
        self.lock().totals()
    }

    /// Sends a command to one worker (ignored if it is gone).
    pub async fn send(&mut self, worker: usize, command: &Command) {
        let Some(stdin) = self.workers.get_mut(worker).and_then(|w| w.stdin.as_mut()) else { return };
        let Ok(mut line) = serde_json::to_vec(command) else { return };
        line.push(b'\n');
        if stdin.write_all(&line).await.is_err() || stdin.flush().await.is_err() {
            self.workers[worker].stdin = None;
        }
    }

    pub async fn send_all(&mut self, command: &Command) {
        for w in 0..self.workers.len() {
            self.send(w, command).await;
        }
    }

    /// Tells every worker to finish, waits (bounded) for their last reports and exits, and kills
    /// what is left. Returns each worker's final report.
    pub async fn finish(&mut self, timeout: Duration) -> Vec<Option<Final>> {
        self.send_all(&Command::Finish).await;
        let deadline = Instant::now() + timeout;
        for w in &mut self.workers {
            // Closing stdin also tells a worker to finish.
            w.stdin = None;
            if tokio::time::timeout_at(deadline, w.child.wait()).await.is_err() {
                let _ = w.child.start_kill();
                let _ = w.child.wait().await;
            }
        }
        // Let the readers take the last lines.
        let settle = Instant::now() + Duration::from_secs(2);
        while Instant::now() < settle && !self.lock().ended.iter().all(|e| *e) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        self.lock().finals.clone()
    }

    /// The stderr tail of workers that wrote anything, for error messages.
    pub fn stderr_tail(&self) -> Vec<String> {
        let s = self.lock();
        s.stderr
            .iter()
            .enumerate()
            .flat_map(|(w, lines)| lines.iter().map(move |l| format!("worker {w}: {l}")))
            .collect()
    }
}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// One point of the run's timeline.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Sample {
    /// Seconds since the run started.
    pub t_s: f64,
    pub open: u64,
    pub connects_per_s: f64,
    pub received_per_s: f64,
    pub published_per_s: f64,
    /// Cumulative counts of trouble.
    pub unexpected_closes: u64,
    pub connect_errors: u64,
    /// `seq` gaps plus duplicates.
    pub seq_problems: u64,
    pub error_frames: u64,
    pub gap_frames: u64,
    pub publish_failures: u64,
    /// Delivery latency of what arrived since the previous sample.
    pub latency_p50_ms: Option<f64>,
    pub latency_p99_ms: Option<f64>,
    /// Per gateway process (in the order of the report's `gateways`).
    pub gateway_rss: Vec<Option<u64>>,
    pub gateway_cpu_pct: Vec<Option<f64>>,
    /// All worker processes together.
    pub workers_rss: u64,
}

/// Per gateway process, over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct GatewayFigures {
    pub pid: u32,
    pub label: String,
    pub rss_start: Option<u64>,
    /// After the sessions opened and settled (set by the scenario).
    pub rss_idle: Option<u64>,
    pub rss_peak: Option<u64>,
    pub rss_end: Option<u64>,
    pub cpu_seconds: f64,
    pub cpu_avg_pct: f64,
    pub cpu_peak_pct: f64,
    /// Seconds into the run when it was found gone.
    pub exited_at_s: Option<f64>,
}

struct GatewayTrack {
    figures: GatewayFigures,
    cpu_first: Option<f64>,
    cpu_last: Option<(Instant, f64)>,
}

/// Each gateway's RSS and CPU seconds now: taken before the workers start, so that the run's
/// "before" figures have no session in them.
pub fn baseline(gateways: &[GatewayProc]) -> Vec<(Option<u64>, Option<f64>)> {
    gateways.iter().map(|g| (stats::rss_bytes(g.pid), stats::cpu_seconds(g.pid))).collect()
}

/// Samples the run and drives the progress display until stopped.
pub struct Monitor {
    stop: watch::Sender<bool>,
    handle: Option<JoinHandle<()>>,
    samples: Arc<Mutex<Vec<Sample>>>,
    gateways: Arc<Mutex<Vec<GatewayTrack>>>,
    workers_rss_peak: Arc<Mutex<Vec<u64>>>,
}

/// What the monitor watches.
pub struct Watched {
    pub started: Instant,
    pub fleet: Option<Arc<Mutex<FleetState>>>,
    pub worker_pids: Vec<u32>,
    pub publish: Arc<PublishStats>,
    pub gateways: Vec<GatewayProc>,
    /// Each gateway's RSS and CPU seconds before anything started (see [`baseline`]).
    pub baseline: Vec<(Option<u64>, Option<f64>)>,
    pub target_sessions: u64,
    pub interval: Duration,
    pub ui: Arc<Ui>,
}

impl Monitor {
    pub fn start(w: Watched) -> Self {
        let (stop, mut stopped) = watch::channel(false);
        let samples = Arc::new(Mutex::new(Vec::new()));
        let gateways = Arc::new(Mutex::new(
            w.gateways
                .iter()
                .enumerate()
                .map(|(i, g)| {
                    let (rss, cpu) = w.baseline.get(i).copied().unwrap_or((None, None));
                    GatewayTrack {
                        figures: GatewayFigures {
                            pid: g.pid,
                            label: g.label.clone(),
                            rss_start: rss,
                            rss_peak: rss,
                            rss_end: rss,
                            ..GatewayFigures::default()
                        },
                        cpu_first: cpu,
                        cpu_last: cpu.map(|c| (Instant::now(), c)),
                    }
                })
                .collect::<Vec<_>>(),
        ));
        let workers_rss_peak = Arc::new(Mutex::new(vec![0; w.worker_pids.len()]));
        let handle = {
            let (samples, gateways, workers_rss_peak) = (samples.clone(), gateways.clone(), workers_rss_peak.clone());
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(250));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut next_sample = Instant::now();
                // (when, connects, received, published) a second ago, for rates.
                let mut history: VecDeque<(Instant, u64, u64, u64)> = VecDeque::new();
                let mut last_sample: Option<(Instant, u64, u64, u64)> = None;
                let mut gw_now: Vec<(Option<u64>, Option<f64>)> = Vec::new();
                loop {
                    tokio::select! {
                        _ = tick.tick() => {}
                        _ = stopped.changed() => break,
                    }
                    let now = Instant::now();
                    let (totals, window) = match &w.fleet {
                        Some(f) => {
                            let mut s = lock(f);
                            let window =
                                if now >= next_sample { std::mem::take(&mut s.window) } else { Histogram::new() };
                            (s.totals(), window)
                        }
                        None => (Progress::default(), Histogram::new()),
                    };
                    let published = w.publish.published.load(Relaxed);
                    let publish_failures = w.publish.refused.load(Relaxed) + w.publish.errors.load(Relaxed);
                    history.push_back((now, totals.connects, totals.received, published));
                    while history.len() > 1 && now.duration_since(history[0].0) > Duration::from_millis(1100) {
                        history.pop_front();
                    }
                    let rate = |pick: fn(&(Instant, u64, u64, u64)) -> u64| {
                        let (first, last) = (history.front().copied(), history.back().copied());
                        match (first, last) {
                            (Some(a), Some(b)) if b.0 > a.0 => {
                                pick(&b).saturating_sub(pick(&a)) as f64 / b.0.duration_since(a.0).as_secs_f64()
                            }
                            _ => 0.0,
                        }
                    };
                    if now >= next_sample {
                        next_sample = now + w.interval;
                        gw_now = sample_gateways(&gateways, w.started);
                        let mut workers_rss = 0;
                        {
                            let mut peaks = lock(&workers_rss_peak);
                            for (i, pid) in w.worker_pids.iter().enumerate() {
                                let rss = stats::rss_bytes(*pid).unwrap_or(0);
                                workers_rss += rss;
                                peaks[i] = peaks[i].max(rss);
                            }
                        }
                        let per_s = |a: u64, b: u64, secs: f64| {
                            if secs > 0.0 { a.saturating_sub(b) as f64 / secs } else { 0.0 }
                        };
                        let (connects_per_s, received_per_s, published_per_s) = match last_sample {
                            Some((t, c, r, p)) => {
                                let secs = now.duration_since(t).as_secs_f64();
                                (
                                    per_s(totals.connects, c, secs),
                                    per_s(totals.received, r, secs),
                                    per_s(published, p, secs),
                                )
                            }
                            None => (0.0, 0.0, 0.0),
                        };
                        last_sample = Some((now, totals.connects, totals.received, published));
                        let sample = Sample {
                            t_s: now.duration_since(w.started).as_secs_f64(),
                            open: totals.open,
                            connects_per_s,
                            received_per_s,
                            published_per_s,
                            unexpected_closes: totals.unexpected_closes,
                            connect_errors: totals.connect_errors,
                            seq_problems: totals.seq_gaps + totals.duplicates,
                            error_frames: totals.error_frames,
                            gap_frames: totals.gap_frames,
                            publish_failures,
                            latency_p50_ms: (!window.is_empty()).then(|| window.quantile(0.5) as f64 / 1000.0),
                            latency_p99_ms: (!window.is_empty()).then(|| window.quantile(0.99) as f64 / 1000.0),
                            gateway_rss: gw_now.iter().map(|g| g.0).collect(),
                            gateway_cpu_pct: gw_now.iter().map(|g| g.1).collect(),
                            workers_rss,
                        };
                        lock(&samples).push(sample);
                    }
                    w.ui.update(&Snapshot {
                        open: totals.open,
                        target: w.target_sessions,
                        connects_per_s: rate(|h| h.1),
                        received_per_s: rate(|h| h.2),
                        published_per_s: rate(|h| h.3),
                        connect_errors: totals.connect_errors,
                        unexpected_closes: totals.unexpected_closes,
                        seq_problems: totals.seq_gaps + totals.duplicates,
                        publish_failures,
                        gateway_rss: gw_now.iter().filter_map(|g| g.0).sum(),
                        gateway_cpu_pct: gw_now.iter().filter_map(|g| g.1).sum(),
                        gateways: gw_now.len(),
                    });
                }
            })
        };
        Self { stop, handle: Some(handle), samples, gateways, workers_rss_peak }
    }

    /// Records each gateway's RSS now as its idle figure.
    pub fn mark_idle(&self) {
        for g in lock(&self.gateways).iter_mut() {
            g.figures.rss_idle = stats::rss_bytes(g.figures.pid);
        }
    }

    /// CPU seconds of all gateway processes together, now.
    pub fn gateway_cpu_seconds(&self) -> Option<f64> {
        let pids: Vec<u32> = lock(&self.gateways).iter().map(|g| g.figures.pid).collect();
        if pids.is_empty() {
            return None;
        }
        Some(pids.iter().filter_map(|p| stats::cpu_seconds(*p)).sum())
    }

    /// Gateways that have exited so far.
    pub fn exited_gateways(&self) -> Vec<(u32, String)> {
        lock(&self.gateways)
            .iter()
            .filter(|g| !stats::alive(g.figures.pid))
            .map(|g| (g.figures.pid, g.figures.label.clone()))
            .collect()
    }

    /// Stops sampling and returns the timeline, gateway figures and peak RSS of each worker.
    pub async fn stop(mut self, started: Instant) -> (Vec<Sample>, Vec<GatewayFigures>, Vec<u64>) {
        let _ = self.stop.send(true);
        if let Some(handle) = self.handle.take() {
            let _ = handle.await;
        }
        sample_gateways(&self.gateways, started);
        let samples = std::mem::take(&mut *lock(&self.samples));
        let gateways = lock(&self.gateways).iter().map(|g| g.figures.clone()).collect();
        let peaks = lock(&self.workers_rss_peak).clone();
        (samples, gateways, peaks)
    }
}

/// Reads every gateway's RSS and CPU (percent of one core since the last sample).
fn sample_gateways(gateways: &Mutex<Vec<GatewayTrack>>, started: Instant) -> Vec<(Option<u64>, Option<f64>)> {
    let now = Instant::now();
    let mut out = Vec::new();
    for g in lock(gateways).iter_mut() {
        let pid = g.figures.pid;
        if g.figures.exited_at_s.is_some() || !stats::alive(pid) {
            g.figures.exited_at_s.get_or_insert(now.duration_since(started).as_secs_f64());
            out.push((None, None));
            continue;
        }
        let rss = stats::rss_bytes(pid);
        let cpu = stats::cpu_seconds(pid);
        if let Some(rss) = rss {
            g.figures.rss_end = Some(rss);
            g.figures.rss_peak = Some(g.figures.rss_peak.unwrap_or(0).max(rss));
        }
        let pct = match (cpu, g.cpu_last) {
            (Some(c), Some((t, last))) if now > t => {
                let secs = now.duration_since(t).as_secs_f64();
                (secs >= 0.2).then(|| ((c - last) / secs * 100.0).max(0.0))
            }
            _ => None,
        };
        if let Some(c) = cpu {
            if pct.is_some() || g.cpu_last.is_none() {
                g.cpu_last = Some((now, c));
            }
            if let Some(first) = g.cpu_first {
                g.figures.cpu_seconds = c - first;
                let elapsed = now.duration_since(started).as_secs_f64();
                if elapsed > 0.0 {
                    g.figures.cpu_avg_pct = g.figures.cpu_seconds / elapsed * 100.0;
                }
            }
        }
        if let Some(p) = pct {
            g.figures.cpu_peak_pct = g.figures.cpu_peak_pct.max(p);
        }
        out.push((rss, pct));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        stats::Histogram,
        wire::{LatencyDelta, TrackedDelta},
    };

    #[test]
    fn the_state_merges_latencies_tracked_messages_and_storms_from_all_workers() {
        let mut s = FleetState::new(2);
        let mut h = Histogram::new();
        h.record(1000);
        h.record(3000);
        for w in 0..2 {
            s.apply(
                w,
                Event::Latency(LatencyDelta {
                    kinds: BTreeMap::from([("broadcast".to_owned(), h.to_sparse())]),
                    tracked: vec![TrackedDelta { key: "b0".into(), kind: "broadcast".into(), hist: h.to_sparse() }],
                }),
            );
            s.apply(w, Event::Storm(StormProgress { id: 1, sessions: 5, reconnected: 4, ..StormProgress::default() }));
            s.apply(w, Event::Progress(Progress { ramp_done: true, open: 10, ..Progress::default() }));
        }
        assert_eq!(s.kinds["broadcast"].count(), 4);
        assert_eq!(s.window.count(), 4);
        assert_eq!(s.tracked_count("b0"), 4);
        assert_eq!(s.tracked_count("b1"), 0);
        let (storm, reported) = s.storm(1);
        assert_eq!((storm.sessions, storm.reconnected, reported), (10, 8, 2));
        assert_eq!(s.storm(2).1, 0);
        let t = s.totals();
        assert_eq!((t.open, t.ramp_done), (20, true));
    }
}
