//! `pushgate-loadtest` as a library: opens, holds and measures many pushgate sessions.
//!
//! Layout:
//! - [`hold`]: the orchestrator — spawns worker processes (each under the per-process file
//!   limit, each on its own source address), publishes broadcasts, samples the gateway's memory,
//!   and reports;
//! - [`worker`]: one worker process — opens its share of sessions at the ramp rate, keeps them
//!   alive, timestamps deliveries, and reports JSON lines on stdout;
//! - [`durable`]: store throughput, publish → receive latency of durable messages, replay speed;
//! - [`watch`]: a command-line client that prints every frame and sends what you type;
//! - [`stats`]: percentiles and process figures (RSS, CPU).

pub mod durable;
pub mod hold;
pub mod stats;
pub mod watch;
pub mod worker;

/// Mints session tokens for load users with the gateway's secret.
pub fn token_minter(secret: &str) -> impl Fn(&str) -> String + use<> {
    let auth = pushgate_gateway::auth::Auth::new(secret.as_bytes(), std::time::Duration::ZERO);
    move |user: &str| {
        let claims = pushgate_protocol::SessionClaims {
            sub: pushgate_protocol::UserId::new(user).expect("load user ids are valid"),
            exp: pushgate_protocol::now_ms() / 1000 + 24 * 3600,
            dev: None,
            chs: vec![pushgate_protocol::ChannelPattern::parse("*").expect("valid pattern")],
        };
        auth.mint_session(&claims)
    }
}

/// Microseconds since the Unix epoch: the clock both sides of a latency measurement share
/// (everything runs on one machine).
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}
