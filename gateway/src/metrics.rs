//! The gateway's metrics: every name in one place (all start with `pushgate_`) and
//! pre-registered handles for the hot paths, so that delivering a frame does not look a metric up
//! by name. The recorder behind `/metrics` is installed by `pushgate_dispatcher::telemetry`.

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};
pub use pushgate_dispatcher::telemetry::{install_metrics as install, upkeep};
use pushgate_protocol::{CloseCode, close::client_code_label};

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
