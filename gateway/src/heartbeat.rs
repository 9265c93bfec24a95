//! The heartbeat wheel: one task for the whole node instead of a timer per session. It visits
//! one registry shard per tick, so every session is visited once per heartbeat interval (the
//! shard a session lands in spreads the pings out, which is the jitter), and for each session:
//! - closes it with 4002 when nothing was heard for 2.5 intervals;
//! - closes it with 4001 when a write has waited on the socket longer than the slow-consumer
//!   timeout;
//! - closes it with 1008 when its token expired (if configured);
//! - otherwise queues the shared server Ping frame.

use std::{sync::Arc, time::Duration};

use pushgate_protocol::{CloseCode, ws};
use tokio_util::sync::CancellationToken;

use crate::{
    node::Node,
    registry::SESSION_SHARDS,
    session::{CloseRequest, Outbound, Pushed, SessionHandle},
};

/// What the wheel decided for one session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    Ping,
    Close(CloseCode),
    /// Already closing (its own close timer bounds it).
    Skip,
}

/// The thresholds of one visit, in node-clock milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct Thresholds {
    pub silence_ms: u64,
    pub stall_ms: u64,
    /// Unix seconds after which a token counts as expired; `None` when expiry is not enforced.
    pub expired_before_s: Option<u64>,
}

/// Decides what to do with one session at node-clock `now`.
pub fn check(session: &SessionHandle, now: u64, t: &Thresholds) -> Check {
    if session.is_closing() {
        return Check::Skip;
    }
    if now.saturating_sub(session.heard_ms()) > t.silence_ms {
        return Check::Close(CloseCode::HeartbeatTimeout);
    }
    let stalled = session.stalled_ms();
    if stalled > 0 && now.saturating_sub(stalled) > t.stall_ms {
        return Check::Close(CloseCode::SlowConsumer);
    }
    if t.expired_before_s.is_some_and(|limit| session.shared().token_exp < limit) {
        return Check::Close(CloseCode::Policy);
    }
    Check::Ping
}

/// Runs the wheel until `stop`.
pub async fn run(node: Arc<Node>, stop: CancellationToken) {
    let config = &node.config;
    let tick = (config.heartbeat / SESSION_SHARDS as u32).max(Duration::from_millis(1));
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ping = Outbound::control(ws::ping_frame());
    let heartbeat_ms = config.heartbeat.as_millis() as u64;
    let mut shard = 0usize;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = stop.cancelled() => return,
        }
        let t = Thresholds {
            silence_ms: heartbeat_ms * 5 / 2,
            stall_ms: config.slow_consumer_timeout.as_millis() as u64,
            expired_before_s: config
                .close_on_token_expiry
                .then(|| pushgate_protocol::now_ms() / 1000 - config.token_leeway.as_secs()),
        };
        let now = node.clock.now_ms();
        let (mut queued, mut sent) = (0u64, 0u64);
        node.registry.for_each_in_shard(shard, |session| match check(session, now, &t) {
            // A full outbox already proves the session is busy; skipping the Ping is fine.
            Check::Ping => match session.push(&ping, None, node.outbox_limits) {
                Pushed::Queued => queued += 1,
                Pushed::Sent => sent += 1,
                _ => {}
            },
            Check::Close(code) => {
                let reason = match code {
                    CloseCode::HeartbeatTimeout => "heartbeat timeout",
                    CloseCode::SlowConsumer => "slow consumer",
                    _ => "token expired",
                };
                session.request_close(CloseRequest::new(code, reason));
            }
            Check::Skip => {}
        });
        node.metrics.outbox_frames.increment(queued as f64);
        node.metrics.frames_out.increment(sent);
        node.metrics.bytes_out.increment(sent * ping.frame.len() as u64);
        shard = (shard + 1) % SESSION_SHARDS;
    }
}

#[cfg(test)]
mod tests {
    use pushgate_protocol::UserId;

    use super::*;

    const T: Thresholds = Thresholds { silence_ms: 2500, stall_ms: 30_000, expired_before_s: None };

    fn session(exp: u64) -> SessionHandle {
        SessionHandle::new(1, UserId::new("u").unwrap(), None, 0, exp, 1000)
    }

    #[test]
    fn silence_stalls_and_slow_closes_are_caught() {
        let s = session(0);
        assert_eq!(check(&s, 3000, &T), Check::Ping);
        assert_eq!(check(&s, 3501, &T), Check::Close(CloseCode::HeartbeatTimeout));
        s.heard(3500);
        s.stalled(Some(4000));
        assert_eq!(check(&s, 5000, &T), Check::Ping);
        assert_eq!(check(&s, 34_001, &T), Check::Close(CloseCode::HeartbeatTimeout));
        s.heard(34_000);
        assert_eq!(check(&s, 34_001, &T), Check::Close(CloseCode::SlowConsumer));
        s.request_close(CloseRequest::new(CloseCode::SlowConsumer, "slow consumer"));
        assert_eq!(check(&s, 34_001, &T), Check::Skip);
    }

    #[test]
    fn expired_tokens_close_only_when_enforced() {
        let s = session(100);
        assert_eq!(check(&s, 1000, &T), Check::Ping);
        let enforced = Thresholds { expired_before_s: Some(101), ..T };
        assert_eq!(check(&s, 1000, &enforced), Check::Close(CloseCode::Policy));
    }
}
