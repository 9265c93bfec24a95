//! Measures `Envelope::decode`, the validation every publish (HTTP or AMQP) goes through, on a
//! small envelope and on two whose `data` fill the 64 KiB limit: CPU per envelope, median of
//! rounds. `cargo run --release -p pushgate-protocol --example envelope_decode [ROUNDS]`

use std::{hint::black_box, time::Instant};

use pushgate_protocol::{Envelope, EnvelopeLimits};

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|n| n.parse().ok()).unwrap_or(7);
    let small = r#"{"id":"order-42-shipped","to":{"users":["u1","u2"]},"data":{"title":"Your order shipped","body":"Order 42 left the warehouse at 09:14.","url":"https://shop.example/orders/42","badge":3,"tags":["order","shipping"]},"ttl_s":604800}"#;
    // 64 KiB of `data` two ways: plain text and numbers, and every kind of escape and exponent.
    let fill = |item: &str| {
        let mut items = item.repeat((64 * 1024 - 64) / item.len());
        items.pop();
        format!(r#"{{"to":{{"users":["u1"]}},"data":{{"items":[{items}]}}}}"#)
    };
    let text = fill(
        r#"{"id":12345,"title":"Your order shipped","body":"Order 42 left the warehouse at 09:14 and arrives on Tuesday.","price":1250,"ok":true},"#,
    );
    let escapes = fill(
        r#"{"id":12345,"name":"caf\u00e9 \ud83d\ude00","price":-12.5e2,"tags":["a","b\"c"],"ok":true,"none":null},"#,
    );
    let limits = EnvelopeLimits::default();
    let cases = [
        ("small", small, 200_000),
        ("64 KiB of text", text.as_str(), 500),
        ("64 KiB of escapes", escapes.as_str(), 500),
    ];
    for (name, envelope, per_round) in cases {
        Envelope::decode(envelope.as_bytes(), &limits).expect("a valid envelope");
        let mut ns: Vec<f64> = (0..rounds)
            .map(|_| {
                let start = Instant::now();
                for _ in 0..per_round {
                    black_box(Envelope::decode(black_box(envelope.as_bytes()), &limits).is_ok());
                }
                start.elapsed().as_nanos() as f64 / per_round as f64
            })
            .collect();
        ns.sort_by(f64::total_cmp);
        println!("{name}: {} bytes, median {:.0} ns per decode (rounds {ns:.0?})", envelope.len(), ns[ns.len() / 2]);
    }
}
