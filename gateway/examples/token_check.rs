//! How long a session token's check takes: the gateway's own HS256 check (`Auth`) beside
//! `jsonwebtoken::decode` with the validation the gateway used before, on the same token, in
//! alternating rounds. A measurement aid for `BENCHMARKS.md`, not a test:
//!   cargo run --release -p pushgate-gateway --example token_check [ROUNDS=5]

use std::{hint::black_box, time::Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use pushgate_gateway::auth::Auth;
use pushgate_protocol::{DeviceId, SessionClaims, UserId};

const CHECKS: u32 = 200_000;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|r| r.parse().ok()).unwrap_or(5);
    let secret = b"a secret of the usual length, 64 hex digits or so: 0123456789abcdef";
    let auth = Auth::new(secret, std::time::Duration::from_secs(30));
    let exp = jsonwebtoken::get_current_timestamp() + 3600;
    let claims = SessionClaims {
        sub: UserId::new("user-12345").expect("a user id"),
        exp,
        dev: Some(DeviceId::new("phone").expect("a device id")),
        chs: vec![],
    };
    let token = auth.mint_session(&claims);
    let key = DecodingKey::from_secret(secret);
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_required_spec_claims(&["exp", "sub"]);
    validation.leeway = 30;
    validation.validate_aud = false;
    assert_eq!(auth.verify_session(&token).expect("a valid token"), claims);
    assert_eq!(jsonwebtoken::decode::<SessionClaims>(&token, &key, &validation).expect("a valid token").claims, claims);
    let per_check = |check: &dyn Fn()| {
        let started = Instant::now();
        for _ in 0..CHECKS {
            check();
        }
        started.elapsed().as_nanos() as f64 / f64::from(CHECKS)
    };
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for round in 1..=rounds {
        theirs.push(per_check(&|| {
            black_box(jsonwebtoken::decode::<SessionClaims>(black_box(&token), &key, &validation).is_ok());
        }));
        ours.push(per_check(&|| {
            black_box(auth.verify_session(black_box(&token)).is_ok());
        }));
        println!(
            "round {round}: jsonwebtoken::decode {:.0} ns, Auth::verify_session {:.0} ns",
            theirs[round - 1],
            ours[round - 1]
        );
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "median of {rounds}: jsonwebtoken::decode {:.0} ns, Auth::verify_session {:.0} ns per token",
        median(&mut theirs),
        median(&mut ours)
    );
}
