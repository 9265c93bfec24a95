//! The scenarios: `soak` (alias `hold`), `fanout`, `publish` and `storm`. Each starts a [`Run`]
//! (workers, monitor, publisher), goes through its phases — every one bounded in time — and ends
//! with [`Run::finish`], which collects the workers' last word, accounts for every durable
//! message, and builds the report.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use anyhow::Context as _;
use futures_util::future::join_all;
use rand::{Rng as _, SeedableRng as _, rngs::StdRng};
use serde_json::{Value, json};
use tokio::{sync::watch, task::JoinHandle, time::Instant};

use crate::{
    args::{Common, FanoutArgs, FanoutTarget, OutputArgs, PublishScenarioArgs, PublishTo, SoakArgs, StormArgs},
    fleet::{Fleet, Monitor, Watched},
    html,
    plan::{Mode, Targets, WorkerPlan, gateway_processes, parse_source_ips, plan_workers},
    progress::Ui,
    publisher::{
        Job, Ledger, PublishStats, Publisher, Via, envelope_all, envelope_channel, envelope_users, paced, send_one,
    },
    report::{
        DurableFigures, LatencyFigures, PublishFigures, Report, SessionFigures, Setup, StormResult, TrackedResult,
        WorkerFigures,
    },
    seq,
    stats::Histogram,
    wire::{Command, ServerKind, StormMethod, WorkerSpec},
};

/// How often workers report.
const REPORT_INTERVAL_MS: u64 = 250;

/// Names and routes of a run's users, channels and messages.
#[derive(Debug, Clone)]
pub struct Namer {
    pub run_id: String,
    pub targets: Targets,
    pub sessions: usize,
}

impl Namer {
    pub fn user_prefix(&self) -> String {
        format!("lt{}-", self.run_id)
    }

    pub fn user(&self, session: usize) -> String {
        format!("lt{}-{session}", self.run_id)
    }

    pub fn channel_prefix(&self) -> String {
        format!("lt{}-ch", self.run_id)
    }

    pub fn channel(&self, c: usize) -> String {
        format!("lt{}-ch{c}", self.run_id)
    }

    /// A durable message to one held session (id `lt{run}-{tag}-{n}`), of latency kind `kind`.
    pub fn durable_job(&self, kind: &str, tag: &str, n: u64, session: usize) -> Job {
        let envelope = envelope_users(
            &format!("lt{}-{tag}-{n}", self.run_id),
            &[self.user(session)],
            json!({"sent_us": crate::now_us(), "kind": kind, "n": n}),
            true,
        );
        Job::new(self.targets.admin_for_node(self.targets.node_of(session)), &envelope, vec![session])
    }

    /// One publish per node that must receive a fan-out message (every standalone node; one
    /// admin API of a cluster), each with its own id `lt{run}-{key}-n{node}`.
    pub fn fanout_jobs(&self, key: &str, envelope: impl Fn(&str) -> serde_json::Value) -> Vec<Job> {
        self.targets
            .fanout_admins()
            .iter()
            .map(|(node, admin)| {
                let id = format!("lt{}-{key}-n{}", self.run_id, node.unwrap_or(0));
                Job::new(admin, &envelope(&id), vec![])
            })
            .collect()
    }

    /// Sessions on `node` (round-robin placement): `node, node + nodes, …`.
    pub fn sessions_on(&self, node: usize) -> usize {
        let nodes = self.targets.urls.len();
        if node >= nodes { 0 } else { self.sessions.saturating_sub(node).div_ceil(nodes) }
    }

    /// Held sessions subscribed to channel `c` of `channels`.
    pub fn subscribers(&self, c: usize, channels: usize) -> u64 {
        if channels == 0 || c >= channels {
            return 0;
        }
        self.sessions.saturating_sub(c).div_ceil(channels) as u64
    }
}

/// The sessions a storm takes down: `k` of `n`, spread evenly, shifted by `offset`.
pub fn storm_pick(n: usize, k: usize, offset: usize) -> Vec<usize> {
    let k = k.min(n);
    let mut picked: Vec<usize> = (0..k).map(|i| (i * n / k.max(1) + offset) % n.max(1)).collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

/// A run in progress.
pub struct Run {
    started: Instant,
    /// What the sessions connect to, and so how broadcasts are published.
    server: ServerKind,
    namer: Namer,
    plans: Vec<WorkerPlan>,
    fleet: Option<Fleet>,
    monitor: Option<Monitor>,
    ui: Arc<Ui>,
    publisher: Option<Arc<Publisher>>,
    ledger: Arc<Ledger>,
    pstats: Arc<PublishStats>,
    http: reqwest::Client,
    api_key: Option<String>,
    report: Report,
    output: OutputArgs,
    settle: Duration,
    ramp_wait: Duration,
    ramp_per_s: f64,
    /// Turns true on the first Ctrl-C: the run ends its phase early, finishes and reports.
    interrupted: watch::Receiver<bool>,
}

impl Run {
    /// Validates nothing (the caller did); resolves the gateways, plans and spawns the workers,
    /// connects the publisher, starts the monitor. `lifetime` bounds the workers.
    async fn start(
        scenario: &'static str,
        common: &Common,
        channels: usize,
        options: Value,
        busy: Duration,
    ) -> anyhow::Result<Self> {
        let started = Instant::now();
        let targets = Targets::new(common.target.urls.clone(), common.target.admins.clone(), common.target.mode)?;
        let sessions = common.load.sessions;
        let gateways = gateway_processes(&common.target.gateway_pids, &targets.urls)?;
        let ips = parse_source_ips(&common.load.source_ips)?;
        let plans = plan_workers(sessions, common.load.workers, &ips)?;
        let server = common.target.server;
        let secret =
            if sessions > 0 && server == ServerKind::Pushgate { common.target.secret()? } else { String::new() };
        let run_id = format!("{:x}", crate::now_us() % 0xff_ffff_ffff);
        let namer = Namer { run_id: run_id.clone(), targets: targets.clone(), sessions };
        let ui = Arc::new(Ui::new(common.output.progress, sessions as u64));
        let publisher = Arc::new(match (server, &common.target.peer_publish) {
            (ServerKind::Peer, Some(url)) => Publisher::peer(&common.publish, url)?,
            _ => Publisher::new(&common.publish, common.target.api_key.clone()).await?,
        });

        let ramp_s = sessions as f64 / f64::from(common.load.ramp_per_s.max(1));
        let connect_timeout = Duration::from(common.load.connect_timeout);
        let ramp_wait = Duration::from_secs_f64(ramp_s * 1.5)
            + (connect_timeout + Duration::from_secs(1)) * common.load.connect_attempts
            + Duration::from_secs(10);
        let settle = Duration::from(common.load.settle);
        let lifetime = ramp_wait + settle + busy + Duration::from_secs(120);
        let workers = plans.len().max(1) as f64;
        let specs: Vec<WorkerSpec> = plans
            .iter()
            .map(|p| WorkerSpec {
                worker: p.index,
                server,
                nodes: targets.urls.clone(),
                user_prefix: namer.user_prefix(),
                channel_prefix: namer.channel_prefix(),
                channels,
                first: p.first,
                count: p.count,
                source_ips: p.source_ips.clone(),
                ramp_per_s: f64::from(common.load.ramp_per_s) / workers,
                max_connecting: common.load.max_connecting.div_ceil(plans.len().max(1)),
                connect_timeout_ms: connect_timeout.as_millis() as u64,
                connect_attempts: common.load.connect_attempts,
                ack_interval_ms: Some(Duration::from(common.load.ack_interval).as_millis() as u64).filter(|ms| *ms > 0),
                reconnect: !common.load.no_reconnect,
                report_interval_ms: REPORT_INTERVAL_MS,
                max_lifetime_ms: lifetime.as_millis() as u64,
                token_ttl_s: lifetime.as_secs() + 3600,
                secret: secret.clone(),
            })
            .collect();
        let setup = Setup {
            mode: targets.mode,
            nodes: targets.urls.clone(),
            admins: targets.admins.clone(),
            workers: plans
                .iter()
                .map(|p| WorkerFigures {
                    index: p.index,
                    sessions: p.count,
                    source_ips: describe_ips(&p.source_ips),
                    rss_peak: 0,
                })
                .collect(),
            options,
        };
        let mut report = Report::new(scenario, &run_id, setup);
        report.sessions.requested = sessions as u64;
        ui.println(&format!(
            "pushgate-loadtest {scenario}: run {run_id}, {sessions} sessions over {} node(s) and {} worker(s); sampling {} gateway process(es)",
            targets.urls.len(),
            plans.len(),
            gateways.len()
        ));
        let interrupted = interrupt_on_ctrl_c(ui.clone());
        let baseline = crate::fleet::baseline(&gateways);
        let fleet = if specs.is_empty() { None } else { Some(Fleet::spawn(specs).await?) };
        let pstats = Arc::new(PublishStats::default());
        let monitor = Monitor::start(Watched {
            started,
            fleet: fleet.as_ref().map(Fleet::state),
            worker_pids: fleet.as_ref().map(Fleet::pids).unwrap_or_default(),
            publish: pstats.clone(),
            gateways,
            baseline,
            target_sessions: sessions as u64,
            interval: common.output.sample_interval.into(),
            ui: ui.clone(),
        });
        Ok(Self {
            started,
            server,
            namer,
            plans,
            fleet,
            monitor: Some(monitor),
            ui,
            publisher: Some(publisher),
            ledger: Arc::new(Ledger::new(sessions)),
            pstats,
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build()?,
            api_key: common.target.api_key.clone(),
            report,
            output: common.output.clone(),
            settle,
            ramp_wait,
            ramp_per_s: f64::from(common.load.ramp_per_s.max(1)),
            interrupted,
        })
    }

    fn t(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn phase(&mut self, name: &str, length: Option<Duration>) {
        let t = self.t();
        self.report.events.push((t, name.to_owned()));
        self.ui.set_phase(name, length);
    }

    fn publisher(&self) -> Arc<Publisher> {
        self.publisher.clone().expect("the publisher lives until finish")
    }

    /// Every worker has exited (nothing more will happen), or the user interrupted the run.
    fn should_stop(&self) -> bool {
        *self.interrupted.borrow() || self.fleet.as_ref().is_some_and(|f| f.lock().ended.iter().all(|e| *e))
    }

    /// Sleeps until `deadline`, or until every worker is gone.
    async fn hold_until(&self, deadline: Instant) {
        while Instant::now() < deadline && !self.should_stop() {
            tokio::time::sleep_until(deadline.min(Instant::now() + Duration::from_millis(250))).await;
        }
    }

    /// Waits until every session is open or given up (bounded), and records the connect figures.
    async fn ramp(&mut self) {
        if self.fleet.is_none() {
            return;
        }
        let sessions = self.namer.sessions;
        self.phase("connect", Some(Duration::from_secs_f64(sessions as f64 / self.ramp_per_s)));
        let Some(fleet) = &self.fleet else { return };
        let deadline = Instant::now() + self.ramp_wait;
        loop {
            let totals = fleet.totals();
            if totals.ramp_done || Instant::now() >= deadline || self.should_stop() {
                let seconds = totals.ramp_ms as f64 / 1000.0;
                let seconds = if seconds > 0.0 { seconds } else { self.t() };
                self.report.connect_seconds = seconds;
                self.report.handshakes_per_s = if seconds > 0.0 { totals.ever_opened as f64 / seconds } else { 0.0 };
                if !totals.ramp_done {
                    self.report.notes.push(format!(
                        "the ramp did not finish within {:.0} s: {} of {sessions} sessions opened",
                        self.ramp_wait.as_secs_f64(),
                        totals.ever_opened
                    ));
                }
                self.ui.println(&format!(
                    "open: {} of {sessions} ({} given up, {} connect errors) in {seconds:.2} s — {:.0} handshakes/s",
                    totals.ever_opened, totals.given_up, totals.connect_errors, self.report.handshakes_per_s
                ));
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Idles, then records each gateway's idle RSS.
    async fn settle(&mut self) {
        if self.settle.is_zero() {
            if let Some(m) = &self.monitor {
                m.mark_idle();
            }
            return;
        }
        self.phase("settle", Some(self.settle));
        self.hold_until(Instant::now() + self.settle).await;
        if let Some(m) = &self.monitor {
            m.mark_idle();
        }
    }

    /// Sessions open now.
    fn open_now(&self) -> u64 {
        self.fleet.as_ref().map_or(0, |f| f.totals().open)
    }

    /// A durable stream to random held sessions in the background, until `duration` is over.
    fn durable_stream(&self, rate: f64, duration: Duration, stop: watch::Receiver<bool>) -> JoinHandle<u64> {
        let namer = self.namer.clone();
        let mut rng = StdRng::from_rng(&mut rand::rng());
        let sessions = self.namer.sessions;
        tokio::spawn(paced(
            self.publisher(),
            crate::publisher::Pace { rate, duration, limit: None },
            move |n| namer.durable_job("durable", "d", n, rng.random_range(0..sessions)),
            self.pstats.clone(),
            Some(self.ledger.clone()),
            stop,
        ))
    }

    /// Publishes one tracked message (one or more publishes), waits until `expected` sessions
    /// have it or the timeout, and returns what it measured.
    async fn tracked(
        &mut self,
        kind: &str,
        key: &str,
        jobs: Vec<Job>,
        expected: u64,
        timeout: Duration,
    ) -> TrackedResult {
        let cpu_before = self.monitor.as_ref().and_then(Monitor::gateway_cpu_seconds);
        let sent_at_s = self.t();
        let publisher = self.publisher();
        let outcomes =
            join_all(jobs.iter().map(|job| send_one(&publisher, job, &self.pstats, Some(&self.ledger)))).await;
        let mut answer_ms: f64 = 0.0;
        let mut publish_failures = 0;
        for o in &outcomes {
            match o {
                crate::publisher::Outcome::Accepted { us, .. } => answer_ms = answer_ms.max(*us as f64 / 1000.0),
                _ => publish_failures += 1,
            }
        }
        let deadline = Instant::now() + timeout;
        let mut delivered = 0;
        if let Some(fleet) = &self.fleet {
            loop {
                delivered = fleet.lock().tracked_count(key);
                if delivered >= expected || Instant::now() >= deadline || self.should_stop() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let cpu_after = self.monitor.as_ref().and_then(Monitor::gateway_cpu_seconds);
        // Taken out of the fleet's state, so that a long soak's broadcasts do not pile up.
        let latency = self
            .fleet
            .as_ref()
            .and_then(|f| f.lock().tracked.remove(key).map(|(_, h)| h.summary()))
            .unwrap_or_default();
        let cpu_us_per_frame = match (cpu_before, cpu_after) {
            (Some(b), Some(a)) if delivered > 0 => Some((a - b) * 1e6 / delivered as f64),
            _ => None,
        };
        if delivered < expected {
            self.ui.println(&format!(
                "{kind} {key}: only {delivered} of {expected} received within {:.0} s",
                timeout.as_secs_f64()
            ));
        }
        TrackedResult {
            id: key.to_owned(),
            kind: kind.to_owned(),
            sent_at_s,
            expected,
            delivered,
            latency,
            publish_answer_ms: answer_ms,
            cpu_us_per_frame,
            publish_failures,
        }
    }

    /// A broadcast to every session (one publish per standalone node; one to a peer server).
    async fn broadcast(&mut self, key: &str, timeout: Duration) -> TrackedResult {
        let payload = || json!({"sent_us": crate::now_us(), "kind": "broadcast", "track": key});
        let jobs: Vec<Job> = match self.server {
            ServerKind::Pushgate => self.namer.fanout_jobs(key, |id| envelope_all(id, payload())),
            ServerKind::Peer => vec![Job::peer(&payload())],
        };
        let expected = self.open_now();
        self.tracked("broadcast", key, jobs, expected, timeout).await
    }

    /// Waits (bounded) until every accepted durable message has arrived.
    async fn drain(&mut self, timeout: Duration) {
        if self.fleet.is_none() || self.ledger.total() == 0 {
            return;
        }
        self.phase("drain", Some(timeout));
        let Some(fleet) = &self.fleet else { return };
        let deadline = Instant::now() + timeout;
        loop {
            let t = fleet.totals();
            let want = self.ledger.total();
            if t.durable_in_order + t.seq_missing >= want || Instant::now() >= deadline || self.should_stop() {
                if t.durable_in_order + t.seq_missing < want {
                    self.ui.println(&format!(
                        "drain: {} of {want} durable messages arrived within {:.0} s",
                        t.durable_in_order,
                        timeout.as_secs_f64()
                    ));
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ends the run: workers finish and report, every durable message is accounted for, the
    /// report is built, judged and written.
    async fn finish(mut self) -> anyhow::Result<Report> {
        self.phase("finish", None);
        // The figures of the run end here: sampling stops before the workers close everything.
        let open_at_end = self.open_now();
        let (timeline, gateways, worker_peaks) = match self.monitor.take() {
            Some(m) => m.stop(self.started).await,
            None => Default::default(),
        };
        let finals = match &mut self.fleet {
            Some(fleet) => fleet.finish(Duration::from_secs(30)).await,
            None => Vec::new(),
        };
        if let Some(p) = self.publisher.take() {
            p.close().await;
        }
        let ui = self.ui.clone();
        ui.finish();
        let placeholder = Report::new("", "", self.report.setup.clone());
        let mut report = std::mem::replace(&mut self.report, placeholder);
        let sessions = self.namer.sessions;
        if let Some(fleet) = &self.fleet {
            let state = fleet.lock();
            let totals = state.totals();
            let peak = timeline.iter().map(|s| s.open).max().unwrap_or(0).max(totals.open);
            report.sessions = SessionFigures::from_progress(sessions as u64, &totals, peak);
            report.sessions.open_at_end = open_at_end;
            report.latency = state.kinds.iter().map(|(k, h)| (k.clone(), LatencyFigures::from_histogram(h))).collect();
            // Durable accounting: what each session was sent against what it has.
            let mut accepted = self.ledger.snapshot();
            let mut last_seq = vec![0; sessions];
            let mut missing = vec![0; sessions];
            let mut unaccounted = 0;
            for (plan, fin) in self.plans.iter().zip(finals.iter()) {
                match fin {
                    Some(f) => {
                        for (i, s) in f.last_seq.iter().enumerate() {
                            if let Some(slot) = last_seq.get_mut(f.first + i) {
                                *slot = *s;
                            }
                        }
                        for &(g, m) in &f.missing {
                            if let Some(slot) = missing.get_mut(g) {
                                *slot = m;
                            }
                        }
                    }
                    None => {
                        unaccounted += plan.count as u64;
                        for slot in accepted.iter_mut().skip(plan.first).take(plan.count) {
                            *slot = 0;
                        }
                    }
                }
            }
            if self.ledger.total() > 0 || totals.durable_in_order > 0 {
                report.durable = Some(DurableFigures {
                    accepted: self.ledger.total(),
                    received_in_order: totals.durable_in_order,
                    duplicates: totals.duplicates,
                    seq_gaps: totals.seq_gaps,
                    loss: seq::account(&accepted, &last_seq, &missing),
                    unaccounted_sessions: unaccounted,
                });
            }
            if totals.given_up > 0 && self.ledger.total() > 0 {
                report.notes.push(format!(
                    "{} sessions never opened; durable messages published to them count as lost",
                    totals.given_up
                ));
            }
            drop(state);
            report.worker_errors = fleet.stderr_tail();
            for (w, fin) in finals.iter().enumerate() {
                if fin.is_none() {
                    report.worker_errors.push(format!("worker {w}: exited without its final report"));
                }
            }
        }
        for (w, peak) in report.setup.workers.iter_mut().zip(worker_peaks) {
            w.rss_peak = peak;
        }
        if *self.interrupted.borrow() {
            report.failures.push("interrupted (Ctrl-C) before the end".into());
        }
        report.gateways = gateways;
        report.timeline = timeline;
        report.seconds = self.started.elapsed().as_secs_f64();
        report.derive_totals();
        report.judge();
        write_outputs(&report, &self.output)?;
        Ok(report)
    }
}

/// First Ctrl-C: finish early (and still report); second: exit at once.
fn interrupt_on_ctrl_c(ui: Arc<Ui>) -> watch::Receiver<bool> {
    let (tx, rx) = watch::channel(false);
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
        ui.println("interrupted: finishing the run and writing the report (Ctrl-C again to quit at once)");
        let _ = tx.send(true);
        if tokio::signal::ctrl_c().await.is_ok() {
            std::process::exit(130);
        }
    });
    rx
}

fn describe_ips(ips: &[std::net::IpAddr]) -> String {
    match ips {
        [] => "—".into(),
        [one] => one.to_string(),
        [first, .., last] if ips.len() > 4 => format!("{first} … {last} ({} addresses)", ips.len()),
        _ => ips.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "),
    }
}

/// Writes the JSON and HTML reports where asked, and prints the summary (or the JSON) on stdout.
pub fn write_outputs(report: &Report, output: &OutputArgs) -> anyhow::Result<()> {
    if let Some(path) = &output.report {
        std::fs::write(path, serde_json::to_vec_pretty(report)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    if let Some(path) = &output.html {
        std::fs::write(path, html::render(report)).with_context(|| format!("writing {}", path.display()))?;
    }
    if output.json {
        println!("{}", serde_json::to_string_pretty(report)?);
    } else {
        print!("{}", report.human());
        for (what, path) in [("JSON report", &output.report), ("HTML report", &output.html)] {
            if let Some(p) = path {
                println!("  {what:<11} {}", p.display());
            }
        }
    }
    Ok(())
}

fn options_of<T: serde::Serialize>(scenario: &T) -> Value {
    serde_json::to_value(scenario).unwrap_or(Value::Null)
}

fn common_options(common: &Common) -> Value {
    let mut v = options_of(&common.load);
    v["server"] = json!(common.target.server);
    if let Some(url) = &common.target.peer_publish {
        v["peer_publish"] = json!(url);
    }
    v["urls"] = json!(common.target.urls);
    v["admins"] = json!(common.target.admins);
    v["mode"] = json!(common.target.mode);
    v["gateway_pids"] = json!(common.target.gateway_pids);
    v["publish_via"] = json!(common.publish.via);
    v["max_in_flight"] = json!(common.publish.max_in_flight);
    if common.publish.via == Via::Amqp {
        v["amqp_url"] = json!(pushgate_dispatcher::redact(&common.publish.amqp_url));
        v["amqp_exchange"] = json!(common.publish.amqp_exchange);
    }
    v
}

/// `soak`: hold N sessions for a duration, with an optional durable stream and broadcasts.
pub async fn soak(args: SoakArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let duration = Duration::from(args.duration);
    let mut options = common_options(&args.common);
    options["duration"] = json!(args.duration.to_string());
    options["durable_rate"] = json!(args.durable_rate);
    options["broadcast_interval"] = json!(args.broadcast_interval.map(|d| d.to_string()));
    options["broadcasts"] = json!(args.broadcasts);
    let busy = duration + Duration::from(args.drain_timeout) + Duration::from(args.delivery_timeout);
    let mut run = Run::start("soak", &args.common, 0, options, busy).await?;
    run.ramp().await;
    run.settle().await;

    run.phase("hold", Some(duration));
    let hold_end = Instant::now() + duration;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stream = (args.durable_rate > 0.0).then(|| run.durable_stream(args.durable_rate, duration, stop_rx));
    let mut stream_seconds = duration.as_secs_f64();
    let stream_started = Instant::now();
    if let Some((interval, count)) = args.broadcast_plan() {
        let mut k = 0;
        while Instant::now() < hold_end && count.is_none_or(|c| k < c) && !run.should_stop() {
            let next = Instant::now() + interval;
            let result = run.broadcast(&format!("b{k}"), args.delivery_timeout.into()).await;
            run.report.broadcasts.push(result);
            k += 1;
            run.hold_until(next.min(hold_end)).await;
        }
    }
    run.hold_until(hold_end).await;
    let _ = stop_tx.send(true);
    if let Some(stream) = stream {
        let sent = stream.await.unwrap_or(0);
        stream_seconds = stream_started.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(1e-3);
        let mut figures = publish_figures(&run, args.durable_rate, stream_seconds);
        figures.achieved_rate = sent as f64 / stream_seconds;
        figures.stream_sent = sent;
        run.report.publish = Some(figures);
    }
    let _ = stream_seconds;
    run.drain(args.drain_timeout.into()).await;
    run.finish().await
}

fn publish_figures(run: &Run, rate: f64, seconds: f64) -> PublishFigures {
    let summary = run.pstats.summary(run.publisher.as_ref().map(|p| p.via));
    PublishFigures {
        stream_sent: 0,
        requested_rate: rate,
        achieved_rate: summary.published as f64 / seconds.max(1e-3),
        seconds,
        summary,
    }
}

/// `fanout`: broadcast, channel and user-targeted delivery latency.
pub async fn fanout(args: FanoutArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let mut options = common_options(&args.common);
    options["targets"] = json!(args.targets);
    options["messages"] = json!(args.messages);
    options["interval"] = json!(args.interval.to_string());
    options["channels"] = json!(args.channels);
    options["users_per_message"] = json!(args.users_per_message);
    options["user_persist"] = json!(args.user_persist);
    let per_message = Duration::from(args.interval) + Duration::from(args.delivery_timeout);
    let busy = per_message * (args.messages * args.targets.len()) as u32;
    let channels = if args.targets.contains(&FanoutTarget::Channel) { args.channels } else { 0 };
    let mut run = Run::start("fanout", &args.common, channels, options, busy).await?;
    run.ramp().await;
    run.settle().await;
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let timeout = Duration::from(args.delivery_timeout);
    for target in &args.targets {
        let name = match target {
            FanoutTarget::Broadcast => "broadcast",
            FanoutTarget::Channel => "channel",
            FanoutTarget::User => "user",
        };
        run.phase(&format!("fanout {name}"), Some(Duration::from(args.interval) * args.messages as u32));
        for m in 0..args.messages {
            if run.should_stop() {
                break;
            }
            let next = Instant::now() + Duration::from(args.interval);
            let result = match target {
                FanoutTarget::Broadcast => run.broadcast(&format!("b{m}"), timeout).await,
                FanoutTarget::Channel => {
                    let c = m % args.channels;
                    let key = format!("c{m}");
                    let channel = run.namer.channel(c);
                    let jobs = run.namer.fanout_jobs(&key, |id| {
                        let data = json!({"sent_us": crate::now_us(), "kind": "channel", "track": key});
                        envelope_channel(id, &channel, data)
                    });
                    let expected = run.namer.subscribers(c, args.channels);
                    run.tracked("channel", &key, jobs, expected, timeout).await
                }
                FanoutTarget::User => {
                    let key = format!("u{m}");
                    let k = args.users_per_message.min(run.namer.sessions);
                    let picked = rand::seq::index::sample(&mut rng, run.namer.sessions, k).into_vec();
                    let mut by_admin: BTreeMap<String, Vec<usize>> = BTreeMap::new();
                    for g in picked {
                        let admin = match run.namer.targets.mode {
                            Mode::Standalone => run.namer.targets.admin_for_node(run.namer.targets.node_of(g)),
                            Mode::Cluster => run.namer.targets.admins[0].as_str(),
                        };
                        by_admin.entry(admin.to_owned()).or_default().push(g);
                    }
                    let jobs: Vec<Job> = by_admin
                        .into_iter()
                        .enumerate()
                        .map(|(i, (admin, group))| {
                            let users: Vec<String> = group.iter().map(|g| run.namer.user(*g)).collect();
                            let id = format!("lt{}-{key}-{i}", run.namer.run_id);
                            let data = json!({"sent_us": crate::now_us(), "kind": "user", "track": key});
                            let durable = if args.user_persist { group } else { vec![] };
                            Job::new(&admin, &envelope_users(&id, &users, data, args.user_persist), durable)
                        })
                        .collect();
                    run.tracked("user", &key, jobs, k as u64, timeout).await
                }
            };
            run.report.fanout.push(result);
            run.hold_until(next).await;
        }
    }
    run.drain(Duration::from_secs(10)).await;
    run.finish().await
}

/// `publish`: a paced publish stream over HTTP or AMQP, optionally to held sessions.
pub async fn publish(args: PublishScenarioArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let duration = Duration::from(args.duration);
    let mut options = common_options(&args.common);
    options["rate"] = json!(args.rate);
    options["duration"] = json!(args.duration.to_string());
    options["to"] = json!(args.to);
    options["users_per_message"] = json!(args.users_per_message);
    options["users"] = json!(args.users);
    options["channels"] = json!(args.channels);
    options["persist"] = json!(args.persist);
    options["payload_bytes"] = json!(args.payload_bytes);
    let channels = if args.to == PublishTo::Channel && args.common.load.sessions > 0 { args.channels } else { 0 };
    let busy = duration + Duration::from(args.drain_timeout) + Duration::from(args.common.publish.publish_timeout);
    let mut run = Run::start("publish", &args.common, channels, options, busy).await?;
    if let (Some(kind), Some(amqp)) = (args.amqp_declare, run.publisher().amqp()) {
        let kind = match kind {
            crate::args::DeclareKind::Topic => lapin::ExchangeKind::Topic,
            crate::args::DeclareKind::Direct => lapin::ExchangeKind::Direct,
            crate::args::DeclareKind::Fanout => lapin::ExchangeKind::Fanout,
        };
        amqp.declare(kind, args.amqp_queue.as_deref()).await?;
    }
    if run.namer.sessions > 0 {
        run.ramp().await;
        run.settle().await;
    }
    if run.namer.targets.mode == Mode::Standalone && run.namer.targets.urls.len() > 1 && args.to != PublishTo::Users {
        run.report.notes.push("standalone nodes: each channel/broadcast publish goes to one node in turn and reaches that node's sessions".into());
    }
    run.phase("publish", Some(duration));
    let namer = run.namer.clone();
    let mut rng = StdRng::from_rng(&mut rand::rng());
    let pad = "x".repeat(args.payload_bytes);
    let admins = namer.targets.admins.clone();
    let held = namer.sessions;
    let nodes = namer.targets.urls.len();
    let (to, per_message, users, persist, channel_count) =
        (args.to, args.users_per_message, args.users, args.persist, args.channels);
    let make = move |n: u64| {
        let mut data = json!({"sent_us": crate::now_us(), "kind": "publish", "n": n});
        if !pad.is_empty() {
            data["pad"] = json!(pad);
        }
        let id = format!("lt{}-p{n}", namer.run_id);
        match to {
            PublishTo::Users if held > 0 => {
                let node = rng.random_range(0..nodes);
                let on_node = namer.sessions_on(node);
                let k = per_message.min(on_node);
                let group: Vec<usize> =
                    rand::seq::index::sample(&mut rng, on_node, k).into_iter().map(|j| node + j * nodes).collect();
                let names: Vec<String> = group.iter().map(|g| namer.user(*g)).collect();
                let admin = namer.targets.admin_for_node(node).to_owned();
                Job::new(&admin, &envelope_users(&id, &names, data, persist), if persist { group } else { vec![] })
            }
            PublishTo::Users => {
                let names: Vec<String> =
                    (0..per_message).map(|_| format!("lt{}-u{}", namer.run_id, rng.random_range(0..users))).collect();
                Job::new(&admins[n as usize % admins.len()], &envelope_users(&id, &names, data, persist), vec![])
            }
            PublishTo::Channel => {
                let channel = namer.channel(n as usize % channel_count);
                Job::new(&admins[n as usize % admins.len()], &envelope_channel(&id, &channel, data), vec![])
            }
            PublishTo::All => Job::new(&admins[n as usize % admins.len()], &envelope_all(&id, data), vec![]),
        }
    };
    let (_stop_tx, stop_rx) = watch::channel(false);
    let started = Instant::now();
    let sent = paced(
        run.publisher(),
        crate::publisher::Pace { rate: args.rate, duration, limit: None },
        make,
        run.pstats.clone(),
        Some(run.ledger.clone()),
        stop_rx,
    )
    .await;
    let seconds = started.elapsed().as_secs_f64().min(duration.as_secs_f64()).max(1e-3);
    let mut figures = publish_figures(&run, args.rate, seconds);
    figures.achieved_rate = sent as f64 / seconds;
    figures.stream_sent = sent;
    run.report.publish = Some(figures);
    run.drain(args.drain_timeout.into()).await;
    run.finish().await
}

/// `storm`: take K sessions down at once, time their return and resume, check nothing is lost.
pub async fn storm(args: StormArgs) -> anyhow::Result<Report> {
    args.validate()?;
    let mut options = common_options(&args.common);
    for (k, v) in [
        ("storm_sessions", json!(args.storm_sessions)),
        ("method", json!(args.method)),
        ("storms", json!(args.storms)),
        ("storm_interval", json!(args.storm_interval.to_string())),
        ("storm_messages", json!(args.storm_messages)),
        ("reconnect_jitter", json!(args.reconnect_jitter.to_string())),
        ("storm_timeout", json!(args.storm_timeout.to_string())),
        ("durable_rate", json!(args.durable_rate)),
    ] {
        options[k] = v;
    }
    let storm_timeout = Duration::from(args.storm_timeout);
    let per_storm = storm_timeout + Duration::from(args.storm_interval) + Duration::from_secs(10);
    let busy = per_storm * args.storms as u32 + Duration::from(args.drain_timeout);
    let mut run = Run::start("storm", &args.common, 0, options, busy).await?;
    run.ramp().await;
    run.settle().await;
    let (stop_tx, stop_rx) = watch::channel(false);
    let stream = (args.durable_rate > 0.0).then(|| run.durable_stream(args.durable_rate, busy, stop_rx));
    let stream_started = Instant::now();
    for id in 1..=args.storms as u64 {
        if run.should_stop() {
            break;
        }
        let result = one_storm(&mut run, &args, id).await;
        run.ui.println(&format!(
            "storm {id}: {} of {} back in {}, {} resumed in {}",
            result.reconnected,
            result.sessions,
            result.all_back_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "—".into()),
            result.resumed,
            result.all_resumed_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "—".into()),
        ));
        run.report.storms.push(result);
        if id < args.storms as u64 {
            run.phase("calm", Some(args.storm_interval.into()));
            run.hold_until(Instant::now() + Duration::from(args.storm_interval)).await;
        }
    }
    let _ = stop_tx.send(true);
    if let Some(stream) = stream {
        let sent = stream.await.unwrap_or(0);
        let seconds = stream_started.elapsed().as_secs_f64().max(1e-3);
        let mut figures = publish_figures(&run, args.durable_rate, seconds);
        figures.achieved_rate = sent as f64 / seconds;
        figures.stream_sent = sent;
        run.report.publish = Some(figures);
    }
    run.drain(args.drain_timeout.into()).await;
    run.finish().await
}

async fn one_storm(run: &mut Run, args: &StormArgs, id: u64) -> StormResult {
    let timeout = Duration::from(args.storm_timeout);
    let method_name = format!("{:?}", args.method).to_lowercase();
    run.phase(&format!("storm {id} ({method_name})"), Some(timeout));
    let picked = storm_pick(run.namer.sessions, args.storm_sessions, (id as usize - 1) * 7919);
    let started_at_s = run.t();
    let t0_us = crate::now_us();
    let started = Instant::now();
    let deadline = started + timeout;
    let Some(fleet) = run.fleet.as_mut() else { return StormResult::default() };
    let by_worker: Vec<Vec<usize>> = run
        .plans
        .iter()
        .map(|p| picked.iter().copied().filter(|g| (p.first..p.first + p.count).contains(g)).collect())
        .collect();
    for (w, sessions) in by_worker.into_iter().enumerate() {
        let command = Command::Storm {
            id,
            method: args.method,
            sessions,
            t0_us,
            jitter_ms: Duration::from(args.reconnect_jitter).as_millis() as u64,
            timeout_ms: timeout.as_millis() as u64,
        };
        fleet.send(w, &command).await;
    }
    // Every worker armed before the gateway is asked to close anything.
    let workers = fleet.len();
    while fleet.lock().storm(id).1 < workers && Instant::now() < started + Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut disconnect_failures = 0;
    if args.method == StormMethod::Admin {
        let requests = picked.iter().map(|&g| {
            let admin = run.namer.targets.admin_for_node(run.namer.targets.node_of(g)).to_owned();
            let mut request = run.http.post(format!("{admin}/v1/users/{}/disconnect", run.namer.user(g)));
            if let Some(key) = &run.api_key {
                request = request.bearer_auth(key);
            }
            request
        });
        let semaphore = Arc::new(tokio::sync::Semaphore::new(64));
        let results = join_all(requests.map(|r| {
            let semaphore = semaphore.clone();
            async move {
                let _permit = semaphore.acquire().await;
                r.send().await.map(|resp| resp.status().as_u16() == 202).unwrap_or(false)
            }
        }))
        .await;
        disconnect_failures = results.iter().filter(|ok| !**ok).count() as u64;
    }
    // Messages for the stormed users while they are away.
    let (mut messages_accepted, mut messages_failed) = (0, 0);
    if args.storm_messages > 0 {
        let publisher = run.publisher();
        let jobs: Vec<Job> = picked
            .iter()
            .flat_map(|&g| (0..args.storm_messages).map(move |m| (g, m)))
            .map(|(g, m)| run.namer.durable_job("storm", &format!("s{id}"), (g * args.storm_messages + m) as u64, g))
            .collect();
        let outcomes = join_all(jobs.iter().map(|job| send_one(&publisher, job, &run.pstats, Some(&run.ledger)))).await;
        for o in outcomes {
            if matches!(o, crate::publisher::Outcome::Accepted { .. }) {
                messages_accepted += 1;
            } else {
                messages_failed += 1;
            }
        }
    }
    let targets: Vec<(usize, u64)> = picked.iter().map(|&g| (g, run.ledger.get(g))).collect();
    let Some(fleet) = run.fleet.as_mut() else { return StormResult::default() };
    for (w, p) in run.plans.iter().enumerate() {
        let mine: Vec<(usize, u64)> =
            targets.iter().copied().filter(|(g, _)| (p.first..p.first + p.count).contains(g)).collect();
        fleet.send(w, &Command::Expect { id, targets: mine }).await;
    }
    let k = picked.len() as u64;
    loop {
        let (s, _) = fleet.lock().storm(id);
        let gone = fleet.lock().ended.iter().all(|e| *e) || *run.interrupted.borrow();
        if s.resumed >= k || Instant::now() >= deadline || gone {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // One more report, so that the last sessions' times are in.
    tokio::time::sleep(Duration::from_millis(REPORT_INTERVAL_MS * 2)).await;
    let (s, _) = fleet.lock().storm(id);
    let reconnect = Histogram::from_sparse(&s.reconnect_us);
    let resume = Histogram::from_sparse(&s.resume_us);
    StormResult {
        id,
        method: method_name,
        started_at_s,
        sessions: k,
        down: s.down,
        reconnected: s.reconnected,
        resumed: s.resumed,
        connect_errors: s.connect_errors,
        all_back_ms: (s.reconnected >= k && k > 0).then(|| reconnect.max() as f64 / 1000.0),
        all_resumed_ms: (s.resumed >= k && k > 0).then(|| resume.max() as f64 / 1000.0),
        reconnect: reconnect.summary(),
        resume: resume.summary(),
        messages_accepted,
        messages_failed,
        disconnect_failures,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namer(sessions: usize, nodes: usize) -> Namer {
        let urls = (0..nodes).map(|n| format!("ws://127.0.0.1:{}/ws", 1000 + n)).collect();
        let admins = (0..nodes).map(|n| format!("http://127.0.0.1:{}", 2000 + n)).collect();
        Namer { run_id: "r1".into(), targets: Targets::new(urls, admins, Mode::Standalone).unwrap(), sessions }
    }

    #[test]
    fn names_are_valid_ids_and_messages_go_to_the_users_node() {
        let n = namer(10, 3);
        assert_eq!(n.user(7), "ltr1-7");
        assert!(pushgate_protocol::UserId::new(&n.user(99_999)).is_ok());
        assert_eq!(n.channel(2), "ltr1-ch2");
        let job = n.durable_job("durable", "d", 5, 4);
        assert_eq!(job.admin, "http://127.0.0.1:2001");
        assert_eq!(job.durable_to, vec![4]);
        assert_eq!(job.routing_key, "ltr1-4");
        let body: Value = serde_json::from_slice(&job.body).unwrap();
        assert_eq!(body["id"], "ltr1-d-5");
        assert_eq!(body["persist"], true);
        assert_eq!(body["data"]["kind"], "durable");
        assert!(body["data"]["sent_us"].as_u64().unwrap() > 0);
    }

    #[test]
    fn counts_per_node_and_channel_add_up() {
        let n = namer(10, 3);
        assert_eq!((0..3).map(|node| n.sessions_on(node)).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(n.sessions_on(3), 0);
        assert_eq!((0..4).map(|c| n.subscribers(c, 4)).sum::<u64>(), 10);
        assert_eq!(n.subscribers(0, 4), 3);
        assert_eq!(n.subscribers(3, 4), 2);
        assert_eq!(n.subscribers(0, 0), 0);
    }

    #[test]
    fn storms_pick_distinct_spread_sessions() {
        let p = storm_pick(10_000, 2_000, 0);
        assert_eq!(p.len(), 2_000);
        assert_eq!(p[..3], [0, 5, 10]);
        assert!(p.iter().all(|g| *g < 10_000));
        let q = storm_pick(10, 10, 3);
        assert_eq!(q, (0..10).collect::<Vec<_>>());
        assert_eq!(storm_pick(5, 9, 0).len(), 5);
        // Across nodes (round-robin placement) as well as workers.
        let nodes: std::collections::BTreeSet<usize> = storm_pick(3000, 30, 1).iter().map(|g| g % 3).collect();
        assert_eq!(nodes.len(), 3);
    }
}
