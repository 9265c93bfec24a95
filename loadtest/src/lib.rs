//! `pushgate-loadtest` as a library: opens, holds and measures many pushgate sessions, publishes
//! load, and reports.
//!
//! Layout:
//! - [`scenario`]: the scenarios users run — `soak` (alias `hold`), `fanout`, `publish`, `storm`;
//! - [`args`]: their command-line options and validation; [`plan`]: how sessions are spread over
//!   worker processes, source addresses and gateway nodes, and which processes are the gateways;
//! - [`fleet`]: the orchestrator side — spawns worker processes, merges what they report, sends
//!   them commands, samples the gateways' RSS and CPU into a timeline;
//! - [`worker`]: one worker process — opens its share of sessions at the ramp rate, holds them,
//!   checks durable `seq`s, timestamps deliveries, reports JSON lines ([`wire`]); with
//!   `--server peer` (`soak` only) the sessions are plain WebSockets to another broadcast server,
//!   measured the same way for comparison (`ops/bench/peers.sh`);
//! - [`publisher`]: paced publishing over HTTP (`POST /v1/publish`) or AMQP (publisher confirms),
//!   or a peer server's bare payloads to its publish URL;
//! - [`report`]: the JSON report, verdict and human summary; [`html`]: the HTML report with
//!   inline SVG plots; [`progress`]: progress bars while it runs;
//! - [`seq`]: durable `seq` bookkeeping; [`stats`]: histograms, percentiles, `/proc` figures;
//! - [`durable`]: store throughput, durable publish → receive latency, replay speed;
//! - [`floor`]: the loopback floor — the kernel's own cost of a broadcast, with no server;
//! - [`watch`]: a command-line client that prints every frame and sends what you type.

pub mod args;
pub mod durable;
pub mod fleet;
pub mod floor;
pub mod html;
pub mod plan;
pub mod progress;
pub mod publisher;
pub mod report;
pub mod scenario;
pub mod seq;
pub mod stats;
pub mod watch;
pub mod wire;
pub mod worker;

/// Mints a session token for a user.
pub type Minter = Box<dyn Fn(&str) -> String + Send + Sync>;

/// Mints session tokens for load users with the gateway's secret, valid for a day.
pub fn token_minter(secret: &str) -> Minter {
    token_minter_ttl(secret, 24 * 3600)
}

/// Mints session tokens (HS256, allowed every channel) valid for `ttl_s` seconds.
pub fn token_minter_ttl(secret: &str, ttl_s: u64) -> Minter {
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    Box::new(move |user: &str| {
        let claims = pushgate_protocol::SessionClaims {
            sub: pushgate_protocol::UserId::new(user).expect("load user ids are valid"),
            exp: pushgate_protocol::now_ms() / 1000 + ttl_s,
            dev: None,
            chs: vec![pushgate_protocol::ChannelPattern::parse("*").expect("valid pattern")],
        };
        // Claims of strings and integers with an HMAC key always encode.
        jsonwebtoken::encode(&header, &claims, &key).unwrap_or_default()
    })
}

/// Microseconds since the Unix epoch: the clock both sides of a latency measurement share
/// (everything runs on one machine).
pub fn now_us() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_micros() as u64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn tokens_are_hs256_for_the_user_with_every_channel() {
        let token = super::token_minter_ttl("s3cret", 60)("lt1-7");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let data = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap();
        assert_eq!(data.claims["sub"], "lt1-7");
        assert_eq!(data.claims["chs"], serde_json::json!(["*"]));
        let exp = data.claims["exp"].as_u64().unwrap();
        assert!(exp > pushgate_protocol::now_ms() / 1000 + 50);
        assert!(
            jsonwebtoken::decode::<serde_json::Value>(
                &token,
                &jsonwebtoken::DecodingKey::from_secret(b"x"),
                &validation
            )
            .is_err()
        );
    }
}
