//! The report of a run: every figure (JSON), the verdict — whether the run held what it was
//! asked to — with the reasons when it did not, and a human summary.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;
use serde_json::Value;

use crate::{
    fleet::{GatewayFigures, Sample},
    plan::Mode,
    progress::{mib, thousands},
    publisher::PublishSummary,
    seq::Loss,
    stats::{Histogram, Summary},
    wire::Progress,
};

/// One tracked message (a broadcast, a channel or a user fan-out message): who should have had
/// it, who had it, how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct TrackedResult {
    /// The tracking key (`data.track`).
    pub id: String,
    pub kind: String,
    /// Seconds into the run when it was published.
    pub sent_at_s: f64,
    /// Sessions that should receive it (those open, subscribed or targeted when it was sent).
    pub expected: u64,
    pub delivered: u64,
    /// Publish timestamp → receive, per session; `max_ms` is when the last session had it.
    pub latency: Summary,
    /// Longest publish → 202 / confirm of its publishes.
    pub publish_answer_ms: f64,
    /// Gateway CPU time per delivered frame while it was delivered, µs (approximate: includes
    /// whatever else the gateways did meanwhile).
    pub cpu_us_per_frame: Option<f64>,
    /// Publishes refused or failed.
    pub publish_failures: u64,
}

/// One reconnect storm.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct StormResult {
    pub id: u64,
    pub method: String,
    pub started_at_s: f64,
    pub sessions: u64,
    pub down: u64,
    pub reconnected: u64,
    pub resumed: u64,
    pub connect_errors: u64,
    /// Storm start → the last session open again / resumed (all expected `seq`s received).
    pub all_back_ms: Option<f64>,
    pub all_resumed_ms: Option<f64>,
    pub reconnect: Summary,
    pub resume: Summary,
    /// Durable messages published to the stormed users while they were away.
    pub messages_accepted: u64,
    pub messages_failed: u64,
    /// `POST /v1/users/{user}/disconnect` calls that failed (method `admin`).
    pub disconnect_failures: u64,
}

/// Session figures over the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SessionFigures {
    pub requested: u64,
    /// Open at least once.
    pub opened: u64,
    /// First connection failed every attempt.
    pub given_up: u64,
    pub peak_open: u64,
    pub open_at_end: u64,
    pub connects: u64,
    pub reconnects: u64,
    pub connect_errors: u64,
    pub connect_error_kinds: BTreeMap<String, u64>,
    pub unexpected_closes: u64,
    /// Unexpected closes by close code (1006: broken without a Close frame).
    pub close_codes: BTreeMap<String, u64>,
    pub cursor_mismatches: u64,
    pub received: u64,
    pub acks_sent: u64,
    pub error_frames: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub gap_frames: u64,
    pub gap_dropped: u64,
}

impl SessionFigures {
    pub fn from_progress(requested: u64, p: &Progress, peak_open: u64) -> Self {
        Self {
            requested,
            opened: p.ever_opened,
            given_up: p.given_up,
            peak_open,
            open_at_end: p.open,
            connects: p.connects,
            reconnects: p.reconnects,
            connect_errors: p.connect_errors,
            connect_error_kinds: p.connect_error_kinds.clone(),
            unexpected_closes: p.unexpected_closes,
            close_codes: p.close_codes.clone(),
            cursor_mismatches: p.cursor_mismatches,
            received: p.received,
            acks_sent: p.acks_sent,
            error_frames: p.error_frames,
            error_codes: p.error_codes.clone(),
            gap_frames: p.gap_frames,
            gap_dropped: p.gap_dropped,
        }
    }
}

/// Durable messages to held users.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct DurableFigures {
    /// Deliveries accepted by the gateway (a message to k users counts k).
    pub accepted: u64,
    pub received_in_order: u64,
    pub duplicates: u64,
    pub seq_gaps: u64,
    pub loss: Loss,
    /// Sessions whose worker sent no final report: not accounted.
    pub unaccounted_sessions: u64,
}

/// A paced publish stream.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishFigures {
    /// Publishes of the paced stream (the summary counts every publish of the run).
    pub stream_sent: u64,
    pub requested_rate: f64,
    pub achieved_rate: f64,
    pub seconds: f64,
    #[serde(flatten)]
    pub summary: PublishSummary,
}

/// Latency of one kind of message.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct LatencyFigures {
    pub summary: Summary,
    /// `[from ms, to ms, count]`, log-spaced.
    pub histogram: Vec<(f64, f64, u64)>,
    /// `[ms, fraction ≤]`.
    pub cdf: Vec<(f64, f64)>,
}

impl LatencyFigures {
    pub fn from_histogram(h: &Histogram) -> Self {
        Self {
            summary: h.summary(),
            histogram: h.plot_bins(40).into_iter().map(|(a, b, c)| (a / 1000.0, b / 1000.0, c)).collect(),
            cdf: thin(h.cdf()).into_iter().map(|(v, f)| (v as f64 / 1000.0, f)).collect(),
        }
    }
}

/// Keeps at most ~300 points of a CDF (always the last).
fn thin(points: Vec<(u64, f64)>) -> Vec<(u64, f64)> {
    let step = points.len().div_ceil(300).max(1);
    let last = points.len().saturating_sub(1);
    points.into_iter().enumerate().filter(|(i, _)| i % step == 0 || *i == last).map(|(_, p)| p).collect()
}

/// A worker process of the run.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct WorkerFigures {
    pub index: usize,
    pub sessions: usize,
    pub source_ips: String,
    pub rss_peak: u64,
}

/// How the run was set up.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Setup {
    pub mode: Mode,
    pub nodes: Vec<String>,
    pub admins: Vec<String>,
    pub workers: Vec<WorkerFigures>,
    /// The options, as given.
    pub options: Value,
}

/// Everything a run measured.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub tool: String,
    pub version: String,
    pub scenario: String,
    pub command: Vec<String>,
    pub run_id: String,
    pub started_unix_ms: u64,
    pub seconds: f64,
    pub passed: bool,
    /// Why it did not pass.
    pub failures: Vec<String>,
    pub notes: Vec<String>,

    // The figures of `hold`, kept where `ops/bench/idle-sessions.sh` reads them.
    pub requested: u64,
    pub opened: u64,
    pub failed: u64,
    pub unexpected_closes: u64,
    pub connect_seconds: f64,
    pub handshakes_per_s: f64,
    /// All gateways together.
    pub gateway_rss_before: Option<u64>,
    pub gateway_rss_idle: Option<u64>,
    pub rss_bytes_per_session: Option<f64>,
    pub broadcasts: Vec<TrackedResult>,

    pub setup: Setup,
    pub sessions: SessionFigures,
    pub durable: Option<DurableFigures>,
    pub publish: Option<PublishFigures>,
    pub fanout: Vec<TrackedResult>,
    pub storms: Vec<StormResult>,
    /// By kind of message.
    pub latency: BTreeMap<String, LatencyFigures>,
    pub gateways: Vec<GatewayFigures>,
    pub timeline: Vec<Sample>,
    /// Phases and notable moments: `(seconds into the run, what)`.
    pub events: Vec<(f64, String)>,
    pub worker_errors: Vec<String>,
}

impl Report {
    pub fn new(scenario: &str, run_id: &str, setup: Setup) -> Self {
        Self {
            tool: "pushgate-loadtest".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            scenario: scenario.into(),
            command: std::env::args().collect(),
            run_id: run_id.into(),
            started_unix_ms: crate::now_us() / 1000,
            seconds: 0.0,
            passed: false,
            failures: Vec::new(),
            notes: Vec::new(),
            requested: 0,
            opened: 0,
            failed: 0,
            unexpected_closes: 0,
            connect_seconds: 0.0,
            handshakes_per_s: 0.0,
            gateway_rss_before: None,
            gateway_rss_idle: None,
            rss_bytes_per_session: None,
            broadcasts: Vec::new(),
            setup,
            sessions: SessionFigures::default(),
            durable: None,
            publish: None,
            fanout: Vec::new(),
            storms: Vec::new(),
            latency: BTreeMap::new(),
            gateways: Vec::new(),
            timeline: Vec::new(),
            events: Vec::new(),
            worker_errors: Vec::new(),
        }
    }

    /// Fills the `hold` figures from the session and gateway figures.
    pub fn derive_totals(&mut self) {
        self.requested = self.sessions.requested;
        self.opened = self.sessions.opened;
        self.failed = self.sessions.requested.saturating_sub(self.sessions.opened);
        self.unexpected_closes = self.sessions.unexpected_closes;
        let sum = |f: fn(&GatewayFigures) -> Option<u64>| -> Option<u64> {
            let values: Vec<u64> = self.gateways.iter().filter_map(f).collect();
            (!values.is_empty() && values.len() == self.gateways.len()).then(|| values.iter().sum())
        };
        self.gateway_rss_before = sum(|g| g.rss_start);
        self.gateway_rss_idle = sum(|g| g.rss_idle);
        // Only meaningful when the gateways started the run without sessions (fresh): a gateway
        // whose RSS fell while sessions opened was carrying something from before.
        let fresh = self.gateways.iter().all(|g| matches!((g.rss_start, g.rss_idle), (Some(a), Some(b)) if b >= a));
        self.rss_bytes_per_session = match (self.gateway_rss_before, self.gateway_rss_idle) {
            (Some(before), Some(idle)) if self.opened > 0 && fresh => {
                Some(idle.saturating_sub(before) as f64 / self.opened as f64)
            }
            _ => None,
        };
        if !fresh && self.opened > 0 && !self.gateways.is_empty() {
            self.notes.push(
                "a gateway's RSS fell while the sessions opened (not a fresh process): no RSS per session".into(),
            );
        }
    }

    /// Decides whether the run held what it was asked to, and says why not.
    pub fn judge(&mut self) {
        // Failures found before judging (e.g. an interrupted run) stay.
        let mut f: Vec<String> = std::mem::take(&mut self.failures);
        let s = &self.sessions;
        if s.opened < s.requested {
            let kinds = fmt_map(&s.connect_error_kinds);
            f.push(format!("only {} of {} sessions opened (connect errors: {kinds})", s.opened, s.requested));
        }
        if s.unexpected_closes > 0 {
            f.push(format!("{} unexpected closes (by code: {})", s.unexpected_closes, fmt_map(&s.close_codes)));
        }
        if s.cursor_mismatches > 0 {
            f.push(format!("{} sessions resumed from another cursor than the one they asked for", s.cursor_mismatches));
        }
        if s.error_frames > 0 {
            f.push(format!("the gateway refused {} client frames ({})", s.error_frames, fmt_map(&s.error_codes)));
        }
        if let Some(d) = &self.durable {
            if d.loss.lost > 0 {
                f.push(format!(
                    "{} durable messages lost ({} users; e.g. session/accepted/last seq/skipped {:?})",
                    d.loss.lost, d.loss.users_with_loss, d.loss.examples
                ));
            }
            if d.seq_gaps > 0 {
                f.push(format!("{} times a session's seq skipped ahead", d.seq_gaps));
            }
            if d.duplicates > 0 {
                f.push(format!("{} durable messages arrived twice", d.duplicates));
            }
            if d.unaccounted_sessions > 0 {
                f.push(format!(
                    "{} sessions could not be accounted (a worker sent no final report)",
                    d.unaccounted_sessions
                ));
            }
        }
        for t in self.broadcasts.iter().chain(&self.fanout) {
            if t.delivered < t.expected {
                f.push(format!("{} {}: delivered to {} of {}", t.kind, t.id, t.delivered, t.expected));
            }
            if t.publish_failures > 0 {
                f.push(format!("{} {}: {} publishes failed", t.kind, t.id, t.publish_failures));
            }
        }
        for st in &self.storms {
            if st.resumed < st.sessions {
                f.push(format!(
                    "storm {}: {} of {} sessions back, {} resumed",
                    st.id, st.reconnected, st.sessions, st.resumed
                ));
            }
            if st.messages_failed > 0 || st.disconnect_failures > 0 {
                f.push(format!(
                    "storm {}: {} publishes and {} disconnects failed",
                    st.id, st.messages_failed, st.disconnect_failures
                ));
            }
        }
        if let Some(p) = &self.publish {
            let s = &p.summary;
            if s.refused > 0 || s.errors > 0 {
                f.push(format!(
                    "{} publishes refused ({}) and {} failed ({})",
                    s.refused,
                    fmt_map(&s.refusals),
                    s.errors,
                    fmt_map(&s.error_kinds)
                ));
            }
            if p.requested_rate > 0.0 && p.achieved_rate < 0.9 * p.requested_rate {
                f.push(format!(
                    "published {:.0}/s of the {:.0}/s asked (in flight full or the publisher fell behind)",
                    p.achieved_rate, p.requested_rate
                ));
            }
        }
        for g in &self.gateways {
            if let Some(at) = g.exited_at_s {
                f.push(format!("gateway {} exited {at:.1} s into the run", g.label));
            }
        }
        if !self.worker_errors.is_empty() {
            f.push(format!("{} worker processes reported errors", self.worker_errors.len()));
        }
        self.passed = f.is_empty();
        self.failures = f;
    }

    /// The summary a person reads at the end of a run.
    pub fn human(&self) -> String {
        let mut o = String::new();
        let verdict = if self.passed { "PASS" } else { "FALL SHORT" };
        let _ =
            writeln!(o, "pushgate-loadtest {} — {verdict} ({:.1} s, run {})", self.scenario, self.seconds, self.run_id);
        let s = &self.sessions;
        if s.requested > 0 {
            let _ = writeln!(
                o,
                "  sessions   {} of {} opened over {} node(s), {} worker(s); peak {} open, {} at the end",
                thousands(s.opened),
                thousands(s.requested),
                self.setup.nodes.len(),
                self.setup.workers.len(),
                thousands(s.peak_open),
                thousands(s.open_at_end)
            );
            let _ = writeln!(
                o,
                "  connect    {:.2} s — {} handshakes/s; {} connect errors{}",
                self.connect_seconds,
                thousands(self.handshakes_per_s as u64),
                s.connect_errors,
                if s.connect_errors > 0 { format!(" ({})", fmt_map(&s.connect_error_kinds)) } else { String::new() }
            );
            let _ = writeln!(
                o,
                "  held       {} unexpected closes{}; {} reconnects; {} messages received; {} acks sent",
                s.unexpected_closes,
                if s.unexpected_closes > 0 { format!(" ({})", fmt_map(&s.close_codes)) } else { String::new() },
                thousands(s.reconnects),
                thousands(s.received),
                thousands(s.acks_sent)
            );
            if s.error_frames + s.gap_frames + s.cursor_mismatches > 0 {
                let _ = writeln!(
                    o,
                    "  frames     {} error frames ({}), {} gap frames ({} dropped), {} cursor mismatches",
                    s.error_frames,
                    fmt_map(&s.error_codes),
                    s.gap_frames,
                    s.gap_dropped,
                    s.cursor_mismatches
                );
            }
        }
        if let Some(p) = &self.publish {
            let ps = &p.summary;
            let via = ps.via.map(|v| format!("{v:?}").to_lowercase()).unwrap_or_default();
            let _ = writeln!(
                o,
                "  publish    stream of {} over {via} in {:.1} s: {:.0}/s of {:.0}/s asked; all {} publishes: {} accepted, {} refused, {} failed; answer p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
                thousands(p.stream_sent),
                p.seconds,
                p.achieved_rate,
                p.requested_rate,
                thousands(ps.published),
                thousands(ps.accepted),
                ps.refused,
                ps.errors,
                ps.answer.p50_ms,
                ps.answer.p99_ms,
                ps.answer.max_ms
            );
        }
        if let Some(d) = &self.durable {
            let _ = writeln!(
                o,
                "  durable    {} accepted, {} received in order; lost {}, seq gaps {}, duplicates {}",
                thousands(d.accepted),
                thousands(d.received_in_order),
                d.loss.lost,
                d.seq_gaps,
                d.duplicates
            );
        }
        for (kind, l) in &self.latency {
            let _ = writeln!(
                o,
                "  latency    {kind:<10} {:>9} msgs  p50 {:>8.2} ms  p90 {:>8.2} ms  p99 {:>8.2} ms  max {:>8.2} ms",
                thousands(l.summary.count as u64),
                l.summary.p50_ms,
                l.summary.p90_ms,
                l.summary.p99_ms,
                l.summary.max_ms
            );
        }
        let tracked: Vec<&TrackedResult> = self.broadcasts.iter().chain(&self.fanout).collect();
        if !tracked.is_empty() {
            let full = tracked.iter().filter(|t| t.delivered >= t.expected).count();
            let worst = tracked.iter().map(|t| t.latency.max_ms).fold(0.0, f64::max);
            let _ = writeln!(
                o,
                "  fan-out    {} messages tracked, {full} delivered to every session; slowest last delivery {worst:.1} ms",
                tracked.len()
            );
            for t in tracked.iter().take(12) {
                let _ = writeln!(
                    o,
                    "             {:<12} {:>7}/{:<7} p50 {:>7.1} ms  p99 {:>7.1} ms  last {:>7.1} ms",
                    t.id, t.delivered, t.expected, t.latency.p50_ms, t.latency.p99_ms, t.latency.max_ms
                );
            }
            if tracked.len() > 12 {
                let _ = writeln!(o, "             … {} more in the report", tracked.len() - 12);
            }
        }
        for st in &self.storms {
            let _ = writeln!(
                o,
                "  storm {:<4} {} sessions by {}: {} back in {}, {} resumed in {}; reconnect p50 {:.1} ms, p99 {:.1} ms; {} connect errors",
                st.id,
                st.sessions,
                st.method,
                st.reconnected,
                st.all_back_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "—".into()),
                st.resumed,
                st.all_resumed_ms.map(|m| format!("{m:.0} ms")).unwrap_or_else(|| "—".into()),
                st.reconnect.p50_ms,
                st.reconnect.p99_ms,
                st.connect_errors
            );
        }
        for g in &self.gateways {
            let per = match (g.rss_start, g.rss_idle) {
                (Some(a), Some(b)) if b >= a && self.opened > 0 && self.setup.nodes.len() == self.gateways.len() => {
                    format!(
                        ", ~{:.0} B/session idle",
                        b.saturating_sub(a) as f64 / (self.opened as f64 / self.gateways.len() as f64)
                    )
                }
                _ => String::new(),
            };
            let _ = writeln!(
                o,
                "  gateway    {}: RSS {} → idle {} → peak {} → end {}{per}; CPU avg {:.0} %, peak {:.0} %{}",
                g.label,
                g.rss_start.map(mib).unwrap_or_else(|| "?".into()),
                g.rss_idle.map(mib).unwrap_or_else(|| "?".into()),
                g.rss_peak.map(mib).unwrap_or_else(|| "?".into()),
                g.rss_end.map(mib).unwrap_or_else(|| "?".into()),
                g.cpu_avg_pct,
                g.cpu_peak_pct,
                if g.exited_at_s.is_some() { " — EXITED" } else { "" }
            );
        }
        if let Some(per) = self.rss_bytes_per_session {
            let _ = writeln!(o, "  memory     {per:.0} bytes of gateway RSS per session (idle − before, all gateways)");
        }
        let peak_worker = self.setup.workers.iter().map(|w| w.rss_peak).max().unwrap_or(0);
        if peak_worker > 0 {
            let _ = writeln!(o, "  workers    peak RSS of one worker {}", mib(peak_worker));
        }
        for n in &self.notes {
            let _ = writeln!(o, "  note       {n}");
        }
        for f in &self.failures {
            let _ = writeln!(o, "  FAILED     {f}");
        }
        o
    }
}

fn fmt_map<K: std::fmt::Display, V: std::fmt::Display>(m: &BTreeMap<K, V>) -> String {
    if m.is_empty() {
        return "none".into();
    }
    m.iter().map(|(k, v)| format!("{k}: {v}")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn sample_report() -> Report {
        let setup = Setup {
            mode: Mode::Standalone,
            nodes: vec!["ws://127.0.0.1:1/ws".into()],
            admins: vec!["http://127.0.0.1:2".into()],
            workers: vec![WorkerFigures { index: 0, sessions: 10, source_ips: "127.0.0.2".into(), rss_peak: 1 << 20 }],
            options: serde_json::json!({"sessions": 10}),
        };
        let mut r = Report::new("soak", "abc", setup);
        r.sessions = SessionFigures { requested: 10, opened: 10, peak_open: 10, open_at_end: 10, ..Default::default() };
        r.gateways = vec![GatewayFigures {
            pid: 1,
            label: "gw <1>".into(),
            rss_start: Some(1000),
            rss_idle: Some(21_000),
            ..Default::default()
        }];
        let mut h = Histogram::new();
        for v in 1..=1000 {
            h.record(v * 100);
        }
        r.latency.insert("broadcast".into(), LatencyFigures::from_histogram(&h));
        r.broadcasts.push(TrackedResult {
            id: "b0".into(),
            kind: "broadcast".into(),
            expected: 10,
            delivered: 10,
            latency: h.summary(),
            ..Default::default()
        });
        r.timeline = (0..5)
            .map(|i| Sample {
                t_s: i as f64,
                open: i * 2,
                gateway_rss: vec![Some(1000 + i * 5000)],
                gateway_cpu_pct: vec![Some(10.0)],
                ..Default::default()
            })
            .collect();
        r
    }

    #[test]
    fn a_clean_run_passes_with_hold_figures_filled_in() {
        let mut r = sample_report();
        r.derive_totals();
        r.judge();
        assert!(r.passed, "{:?}", r.failures);
        assert_eq!((r.requested, r.opened, r.failed), (10, 10, 0));
        assert_eq!(r.rss_bytes_per_session, Some(2000.0));
        let json = serde_json::to_value(&r).unwrap();
        // Where ops/bench/idle-sessions.sh reads them.
        assert_eq!(json["rss_bytes_per_session"], 2000.0);
        assert!(json["broadcasts"][0]["latency"]["p99_ms"].is_number());
        assert!(json["handshakes_per_s"].is_number());
        let text = r.human();
        assert!(text.contains("PASS"), "{text}");
        assert!(text.contains("latency    broadcast"), "{text}");
    }

    #[test]
    fn every_shortfall_fails_the_run_with_a_reason() {
        let mut r = sample_report();
        r.sessions.opened = 9;
        r.sessions.unexpected_closes = 2;
        r.sessions.close_codes.insert("4002".into(), 2);
        r.durable = Some(DurableFigures {
            loss: Loss { lost: 3, users_with_loss: 1, ..Loss::default() },
            duplicates: 1,
            ..Default::default()
        });
        r.broadcasts[0].delivered = 7;
        r.storms.push(StormResult { id: 1, sessions: 5, reconnected: 5, resumed: 4, ..Default::default() });
        r.publish = Some(PublishFigures {
            requested_rate: 1000.0,
            achieved_rate: 500.0,
            summary: PublishSummary { errors: 1, ..Default::default() },
            ..Default::default()
        });
        r.gateways[0].exited_at_s = Some(3.0);
        r.derive_totals();
        r.judge();
        assert!(!r.passed);
        let all = r.failures.join("\n");
        for needle in [
            "only 9 of 10 sessions opened",
            "2 unexpected closes (by code: 4002: 2)",
            "3 durable messages lost",
            "arrived twice",
            "delivered to 7 of 10",
            "storm 1: 5 of 5 sessions back, 4 resumed",
            "1 failed",
            "published 500/s of the 1000/s asked",
            "exited 3.0 s",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in:\n{all}");
        }
        assert_eq!(r.failed, 1);
        assert!(r.human().contains("FALL SHORT"));
    }

    #[test]
    fn latency_figures_are_in_milliseconds_and_the_cdf_is_thinned() {
        let mut h = Histogram::new();
        for v in 0..200_000u64 {
            h.record(v * 37 % 5_000_000);
        }
        let l = LatencyFigures::from_histogram(&h);
        assert!(l.cdf.len() <= 301);
        assert_eq!(l.cdf.last().unwrap().1, 1.0);
        assert!((l.cdf.last().unwrap().0 - h.max() as f64 / 1000.0).abs() < 1e-9);
        assert_eq!(l.histogram.iter().map(|b| b.2).sum::<u64>(), 200_000);
        assert!((l.summary.max_ms - h.max() as f64 / 1000.0).abs() < 1e-9);
    }
}
