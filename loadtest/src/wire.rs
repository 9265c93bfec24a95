//! What the orchestrator and its worker processes say to each other: a [`WorkerSpec`] as the
//! first line on the worker's stdin, then [`Command`] lines; [`Event`] lines back on its stdout.
//! One JSON object per line.

use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};

use crate::stats::SparseHistogram;

/// What the sessions connect to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ServerKind {
    /// pushgate gateways: a token in the URL, a session is open once `welcome` arrives, frames
    /// are JSON, broadcasts go through the admin API.
    #[default]
    Pushgate,
    /// Another broadcast server, for comparison: a plain WebSocket, open once upgraded; every data
    /// frame it sends is a broadcast's payload as the load tool published it.
    Peer,
}

/// Everything one worker process needs to open and hold its share of sessions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WorkerSpec {
    pub worker: usize,
    /// What the sessions connect to.
    pub server: ServerKind,
    /// Client endpoints of the gateway nodes; session `g` goes to `nodes[g % nodes.len()]`.
    pub nodes: Vec<String>,
    /// User of session `g`: `{user_prefix}{g}`.
    pub user_prefix: String,
    /// Channel of session `g` (when `channels > 0`): `{channel_prefix}{g % channels}`.
    pub channel_prefix: String,
    pub channels: usize,
    /// This worker's sessions: global indices `first .. first + count`.
    pub first: usize,
    pub count: usize,
    /// Source addresses, used in turn.
    pub source_ips: Vec<IpAddr>,
    /// New sessions per second for this worker.
    pub ramp_per_s: f64,
    /// This worker's connections being set up at once at most (0: no bound).
    #[serde(default)]
    pub max_connecting: usize,
    /// Upgrade plus `welcome` (plus `subscribed`) must come within this.
    pub connect_timeout_ms: u64,
    /// Attempts of a session's first connection before it is given up.
    pub connect_attempts: u32,
    /// Send cumulative acks at most this often per session (`None`: never ack).
    pub ack_interval_ms: Option<u64>,
    /// Reconnect (with `last_seq`) after an unexpected close.
    pub reconnect: bool,
    pub report_interval_ms: u64,
    /// The worker stops by itself after this, whatever it is told.
    pub max_lifetime_ms: u64,
    pub token_ttl_s: u64,
    pub secret: String,
}

impl WorkerSpec {
    pub fn user(&self, global: usize) -> String {
        format!("{}{global}", self.user_prefix)
    }

    pub fn channel(&self, global: usize) -> Option<String> {
        (self.channels > 0).then(|| format!("{}{}", self.channel_prefix, global % self.channels))
    }

    pub fn node(&self, global: usize) -> usize {
        global % self.nodes.len().max(1)
    }
}

/// How a storm takes sessions down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum StormMethod {
    /// The client closes with a Close frame (1000) and reconnects.
    Close,
    /// The client drops the TCP connection (RST, no Close frame), like a network cut.
    Drop,
    /// The load tool asks the gateway to disconnect the users (`POST /v1/users/{user}/disconnect`,
    /// close code 4000) and the sessions reconnect anyway.
    Admin,
}

/// Orchestrator → worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// Take these sessions (global indices) down at once and bring them back with `last_seq`.
    Storm { id: u64, method: StormMethod, sessions: Vec<usize>, t0_us: u64, jitter_ms: u64, timeout_ms: u64 },
    /// Storm `id`'s sessions are resumed once their in-order `seq` reaches these targets.
    Expect { id: u64, targets: Vec<(usize, u64)> },
    /// Close every session normally, report, and exit.
    Finish,
}

/// Worker → orchestrator.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    Progress(Progress),
    /// Latencies recorded since the previous `latency` line.
    Latency(LatencyDelta),
    Storm(StormProgress),
    Final(Final),
}

/// Cumulative counters of one worker.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Progress {
    /// Every session was started and is open or given up.
    pub ramp_done: bool,
    pub ramp_ms: u64,
    /// Sessions open now (welcome received, and subscribed when asked to).
    pub open: u64,
    /// Sessions that were open at least once.
    pub ever_opened: u64,
    /// Sessions whose first connection failed every attempt.
    pub given_up: u64,
    /// Successful connections, reconnects included.
    pub connects: u64,
    pub reconnects: u64,
    pub connect_errors: u64,
    pub connect_error_kinds: BTreeMap<String, u64>,
    /// Closes nobody asked for, by close code (1006: the connection broke without a Close).
    pub unexpected_closes: u64,
    /// (Keys are strings: integer map keys do not survive an internally tagged enum.)
    pub close_codes: BTreeMap<String, u64>,
    /// `message` frames received.
    pub received: u64,
    /// Durable messages received in `seq` order.
    pub durable_in_order: u64,
    pub duplicates: u64,
    /// Times a `seq` skipped ahead, and the `seq`s skipped.
    pub seq_gaps: u64,
    pub seq_missing: u64,
    /// `welcome.last_seq` differed from the `last_seq` the session resumed with.
    pub cursor_mismatches: u64,
    pub gap_frames: u64,
    pub gap_dropped: u64,
    pub error_frames: u64,
    pub error_codes: BTreeMap<String, u64>,
    pub acks_sent: u64,
}

impl Progress {
    /// Adds another worker's counters (for totals over workers).
    pub fn add(&mut self, other: &Progress) {
        fn merge<K: Ord + Clone>(into: &mut BTreeMap<K, u64>, from: &BTreeMap<K, u64>) {
            for (k, v) in from {
                *into.entry(k.clone()).or_default() += v;
            }
        }
        self.ramp_done &= other.ramp_done;
        self.ramp_ms = self.ramp_ms.max(other.ramp_ms);
        self.open += other.open;
        self.ever_opened += other.ever_opened;
        self.given_up += other.given_up;
        self.connects += other.connects;
        self.reconnects += other.reconnects;
        self.connect_errors += other.connect_errors;
        merge(&mut self.connect_error_kinds, &other.connect_error_kinds);
        self.unexpected_closes += other.unexpected_closes;
        merge(&mut self.close_codes, &other.close_codes);
        self.received += other.received;
        self.durable_in_order += other.durable_in_order;
        self.duplicates += other.duplicates;
        self.seq_gaps += other.seq_gaps;
        self.seq_missing += other.seq_missing;
        self.cursor_mismatches += other.cursor_mismatches;
        self.gap_frames += other.gap_frames;
        self.gap_dropped += other.gap_dropped;
        self.error_frames += other.error_frames;
        merge(&mut self.error_codes, &other.error_codes);
        self.acks_sent += other.acks_sent;
    }

    /// Totals over workers (`ramp_done` only when every worker is done).
    pub fn total<'a>(all: impl IntoIterator<Item = &'a Progress>) -> Progress {
        let mut total = Progress { ramp_done: true, ..Progress::default() };
        let mut any = false;
        for p in all {
            total.add(p);
            any = true;
        }
        total.ramp_done &= any;
        total
    }
}

/// Latencies (publish timestamp → receive, µs) recorded since the last report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct LatencyDelta {
    /// By kind of message (`durable`, `broadcast`, `channel`, `user`, …).
    pub kinds: BTreeMap<String, SparseHistogram>,
    /// By tracked message (`data.track`).
    pub tracked: Vec<TrackedDelta>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct TrackedDelta {
    pub key: String,
    pub kind: String,
    pub hist: SparseHistogram,
}

/// Where one worker's part of a storm stands (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StormProgress {
    pub id: u64,
    /// Sessions of this worker in the storm.
    pub sessions: u64,
    /// Taken down (closed by the client, or closed by the gateway for `admin`).
    pub down: u64,
    /// Open again (welcome received, subscribed when asked to).
    pub reconnected: u64,
    /// Reconnected and every expected `seq` received.
    pub resumed: u64,
    pub connect_errors: u64,
    /// µs from the storm's start to each session's reconnect and resume.
    pub reconnect_us: SparseHistogram,
    pub resume_us: SparseHistogram,
}

/// A worker's last word.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Final {
    pub first: usize,
    /// Highest in-order `seq` of each session (index − `first`).
    pub last_seq: Vec<u64>,
    /// Sessions (global index) whose `seq` skipped ahead, with how many it skipped.
    pub missing: Vec<(usize, u64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_and_events_are_one_json_line_each_and_round_trip() {
        let commands = [
            Command::Storm {
                id: 1,
                method: StormMethod::Drop,
                sessions: vec![1, 5],
                t0_us: 7,
                jitter_ms: 0,
                timeout_ms: 1000,
            },
            Command::Expect { id: 1, targets: vec![(1, 3)] },
            Command::Finish,
        ];
        for c in commands {
            let line = serde_json::to_string(&c).unwrap();
            assert!(!line.contains('\n'));
            assert_eq!(serde_json::from_str::<Command>(&line).unwrap(), c);
        }
        assert_eq!(serde_json::to_string(&Command::Finish).unwrap(), r#"{"cmd":"finish"}"#);
        let mut p = Progress { open: 3, ..Progress::default() };
        p.close_codes.insert("4002".into(), 1);
        let mut h = crate::stats::Histogram::new();
        h.record(1234);
        h.record(5_000_000);
        let latency = LatencyDelta {
            kinds: BTreeMap::from([("durable".to_owned(), h.to_sparse())]),
            tracked: vec![TrackedDelta { key: "b1".into(), kind: "broadcast".into(), hist: h.to_sparse() }],
        };
        let storm = StormProgress { id: 2, sessions: 3, reconnect_us: h.to_sparse(), ..StormProgress::default() };
        let events = [
            Event::Progress(p),
            Event::Latency(latency),
            Event::Storm(storm),
            Event::Final(Final { first: 10, last_seq: vec![1, 2], missing: vec![(11, 1)] }),
        ];
        for e in events {
            let line = serde_json::to_string(&e).unwrap();
            assert_eq!(serde_json::from_str::<Event>(&line).unwrap(), e);
        }
    }

    #[test]
    fn totals_add_counters_and_maps_and_need_every_worker_ramped() {
        let mut a = Progress { ramp_done: true, ramp_ms: 5, open: 2, received: 10, ..Progress::default() };
        a.close_codes.insert("4002".into(), 1);
        let mut b = Progress { ramp_done: false, ramp_ms: 9, open: 3, received: 1, ..Progress::default() };
        b.close_codes.insert("4002".into(), 2);
        b.close_codes.insert("1006".into(), 1);
        let t = Progress::total([&a, &b]);
        assert_eq!((t.open, t.received, t.ramp_ms, t.ramp_done), (5, 11, 9, false));
        assert_eq!(t.close_codes, BTreeMap::from([("1006".into(), 1), ("4002".into(), 3)]));
        b.ramp_done = true;
        assert!(Progress::total([&a, &b]).ramp_done);
        assert!(!Progress::total([]).ramp_done);
    }

    #[test]
    fn a_spec_names_users_channels_and_nodes() {
        let spec = WorkerSpec {
            worker: 0,
            server: ServerKind::Pushgate,
            nodes: vec!["ws://127.0.0.1:1/ws".into(), "ws://127.0.0.1:2/ws".into()],
            user_prefix: "lt-x-".into(),
            channel_prefix: "lt-x-c".into(),
            channels: 3,
            first: 0,
            count: 1,
            source_ips: vec![],
            ramp_per_s: 1.0,
            max_connecting: 0,
            connect_timeout_ms: 1,
            connect_attempts: 1,
            ack_interval_ms: None,
            reconnect: false,
            report_interval_ms: 1,
            max_lifetime_ms: 1,
            token_ttl_s: 1,
            secret: String::new(),
        };
        assert_eq!(spec.user(7), "lt-x-7");
        assert_eq!(spec.channel(7).as_deref(), Some("lt-x-c1"));
        assert_eq!(spec.node(7), 1);
        assert_eq!(WorkerSpec { channels: 0, ..spec }.channel(7), None);
    }
}
