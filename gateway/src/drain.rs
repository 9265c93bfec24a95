//! Drain (SIGTERM or `POST /v1/drain`, SPEC §4): readiness turns 503 and new sessions are
//! refused; each session, at a random moment within the drain window, gets a `reconnect` frame
//! with a small random `after_ms` and is closed with 1012; the node is drained once every session
//! has closed, or at the end of the window plus a grace period.

use std::{sync::Arc, time::Duration};

use metrics::gauge;
use pushgate_protocol::CloseCode;
use rand::{Rng as _, seq::SliceRandom as _};
use tokio::time::Instant;

use crate::{metrics::DRAINING, node::Node, session::CloseRequest};

/// After the window, sessions get this long to finish their close handshakes.
pub const GRACE: Duration = Duration::from_secs(5);
/// Granularity of the drain schedule and of the wait for the last sessions.
const STEP: Duration = Duration::from_millis(10);

/// Starts the drain once; later calls do nothing. Returns whether this call started it.
pub fn start(node: &Arc<Node>) -> bool {
    if !node.lifecycle.begin_drain() {
        return false;
    }
    gauge!(DRAINING).set(1.0);
    tracing::info!(sessions = node.registry.len(), window_s = node.config.drain_window.as_secs_f64(), "draining");
    tokio::spawn(run(node.clone()));
    true
}

fn close_request(node: &Node) -> CloseRequest {
    let jitter = node.config.reconnect_jitter.as_millis() as u64;
    CloseRequest {
        code: CloseCode::Restarting,
        reason: "node draining",
        reconnect_after_ms: Some(if jitter == 0 { 0 } else { rand::rng().random_range(0..=jitter) }),
    }
}

async fn run(node: Arc<Node>) {
    let started = Instant::now();
    let window = node.config.drain_window;
    let mut sessions = node.registry.snapshot();
    sessions.shuffle(&mut rand::rng());
    let total = sessions.len();
    let mut next = 0;
    // Close sessions on schedule: session i at window * i / total.
    while next < total {
        let due = if window.is_zero() {
            total
        } else {
            ((started.elapsed().as_secs_f64() / window.as_secs_f64()) * total as f64).ceil() as usize
        };
        for session in &sessions[next..due.clamp(next, total)] {
            session.request_close(close_request(&node));
        }
        next = due.clamp(next, total);
        if next < total {
            tokio::time::sleep(STEP).await;
        }
    }
    drop(sessions);
    // Sessions that completed their handshake after the snapshot.
    let deadline = started + window + GRACE;
    while Instant::now() < deadline {
        if node.registry.is_empty() {
            break;
        }
        node.registry.for_each(|s| {
            s.request_close(close_request(&node));
        });
        tokio::time::sleep(STEP).await;
    }
    tracing::info!(left = node.registry.len(), took_ms = started.elapsed().as_millis() as u64, "drained");
    node.lifecycle.drained.cancel();
}
