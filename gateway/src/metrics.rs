//! The gateway's metrics: every name in one place (all start with `pushgate_`) and
//! pre-registered handles for the hot paths, so that delivering a frame does not look a metric up
//! by name. The recorder behind `/metrics` is installed by `pushgate_dispatcher::telemetry`.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
pub use pushgate_dispatcher::telemetry::{install_metrics as install, upkeep};
use pushgate_protocol::CloseCode;

pub const SESSIONS: &str = "pushgate_sessions";
pub const CONNECTIONS: &str = "pushgate_connections";
pub const CONNECTION_LIMIT: &str = "pushgate_connection_limit";
pub const CONNECTS: &str = "pushgate_connects_total";
pub const HANDSHAKE_REFUSALS: &str = "pushgate_handshake_refusals_total";
pub const HANDSHAKE_FAILURES: &str = "pushgate_handshake_failures_total";
pub const CLOSES: &str = "pushgate_closes_total";
pub const FRAMES_IN: &str = "pushgate_frames_in_total";
pub const FRAMES_OUT: &str = "pushgate_frames_out_total";
/// Bytes sessions wrote to their clients: the `101` answer and every frame after it.
pub const BYTES_OUT: &str = "pushgate_bytes_out_total";
pub const PUBLISHED: &str = "pushgate_messages_published_total";
pub const PUBLISH_REFUSALS: &str = "pushgate_publish_refusals_total";
pub const DELIVERIES: &str = "pushgate_deliveries_total";
pub const DROPS: &str = "pushgate_drops_total";
pub const OUTBOX_FRAMES: &str = "pushgate_outbox_frames";
pub const CHANNELS: &str = "pushgate_channels";
pub const ACCEPT_ERRORS: &str = "pushgate_accept_errors_total";
pub const DRAINING: &str = "pushgate_draining";
pub const SETUPS_WAITING: &str = "pushgate_setups_waiting";
pub const SESSIONS_PARKED: &str = "pushgate_sessions_parked";
pub const UNPARKS: &str = "pushgate_unparks_total";
/// Sessions whose cursors were looked up, and the queries that did it (their ratio is the
/// lookup batches' mean size).
pub const CURSOR_LOOKUPS: &str = "pushgate_cursor_lookups_total";
pub const CURSOR_LOOKUP_QUERIES: &str = "pushgate_cursor_lookup_queries_total";
pub const HANDSHAKE_SECONDS: &str = "pushgate_handshake_duration_seconds";
pub const DELIVERY_SECONDS: &str = "pushgate_delivery_latency_seconds";

/// Handles for the counters the per-session paths touch.
#[derive(Clone)]
pub struct Metrics {
    pub sessions: Gauge,
    pub connections: Gauge,
    pub connects: Counter,
    pub frames_out: Counter,
    pub bytes_out: Counter,
    pub outbox_frames: Gauge,
    pub channels: Gauge,
    /// Connections whose request has arrived, waiting for a set-up slot.
    pub setups_waiting: Gauge,
    /// Idle sessions held without a task.
    pub sessions_parked: Gauge,
    /// Parked sessions whose task was spawned again (readable socket, or work in the outbox).
    pub unparks: Counter,
    pub handshake_seconds: Histogram,
    pub delivery_seconds: Histogram,
    pub drops_overflow: Counter,
}

impl Metrics {
    pub fn new() -> Self {
        Self {
            sessions: gauge!(SESSIONS),
            connections: gauge!(CONNECTIONS),
            connects: counter!(CONNECTS),
            frames_out: counter!(FRAMES_OUT),
            bytes_out: counter!(BYTES_OUT),
            outbox_frames: gauge!(OUTBOX_FRAMES),
            channels: gauge!(CHANNELS),
            setups_waiting: gauge!(SETUPS_WAITING),
            sessions_parked: gauge!(SESSIONS_PARKED),
            unparks: counter!(UNPARKS),
            handshake_seconds: histogram!(HANDSHAKE_SECONDS),
            delivery_seconds: histogram!(DELIVERY_SECONDS),
            drops_overflow: counter!(DROPS, "reason" => "outbox_full"),
        }
    }

    /// A session ended with `code`, closed by the server or the client (a client's code labelled
    /// by [`client_code_label`]: a bounded set of series, whatever codes clients send).
    pub fn closed(&self, code: Option<CloseCode>, client_code: Option<u16>) {
        let (code, by) = match (code, client_code) {
            (Some(code), _) => (code.label(), "server"),
            (None, Some(c)) => (client_code_label(c), "client"),
            (None, None) => ("1006", "network"),
        };
        counter!(CLOSES, "code" => code, "by" => by).increment(1);
    }

    /// A client frame of `kind` arrived.
    pub fn frame_in(&self, kind: &'static str) {
        counter!(FRAMES_IN, "type" => kind).increment(1);
    }
}

/// The `code` label of a close code a client sent (one RFC 6455 lets a peer send, or 1005
/// for a Close without a code): the codes RFC 6455 defines keep their number, and each range
/// applications choose from is one label — `3xxx` (registered), `4xxx` (private) — so that clients
/// cannot grow the number of series a gateway keeps and exports by choosing codes.
fn client_code_label(code: u16) -> &'static str {
    match code {
        1000 => "1000",
        1001 => "1001",
        1002 => "1002",
        1003 => "1003",
        1005 => "1005",
        1007 => "1007",
        1008 => "1008",
        1009 => "1009",
        1010 => "1010",
        1011 => "1011",
        1012 => "1012",
        1013 => "1013",
        1014 => "1014",
        3000..=3999 => "3xxx",
        4000..=4999 => "4xxx",
        _ => "other",
    }
}

/// One unit of a gauge, held until dropped.
pub struct GaugeUnit<'a>(&'a Gauge);

impl<'a> GaugeUnit<'a> {
    pub fn hold(gauge: &'a Gauge) -> Self {
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for GaugeUnit<'_> {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics { .. }")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use pushgate_protocol::close::is_valid_wire_code;

    use super::*;

    #[test]
    fn client_close_codes_label_as_few_series() {
        let mut labels: Vec<&str> =
            (0..=u16::MAX).filter(|&code| is_valid_wire_code(code) || code == 1005).map(client_code_label).collect();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(
            labels,
            [
                "1000", "1001", "1002", "1003", "1005", "1007", "1008", "1009", "1010", "1011", "1012", "1013", "1014",
                "3xxx", "4xxx"
            ],
            "every code a client may send has a label, and there are 15 of them"
        );
        for code in (1000..=1014).filter(|&code| is_valid_wire_code(code) || code == 1005) {
            assert_eq!(client_code_label(code), code.to_string(), "RFC 6455's codes keep their number");
        }
        assert_eq!((client_code_label(3001), client_code_label(4999)), ("3xxx", "4xxx"));
        assert_eq!(client_code_label(999), "other", "a code that never reaches here is still bounded");
    }
}
