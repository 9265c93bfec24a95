//! pushgate's dispatch logic, shared by the standalone gateway (which embeds it) and, in cluster
//! mode, the `pushgate-dispatcher` process.
//!
//! Layout:
//! - [`message`]: an accepted publish — the envelope with its id and ingest time fixed;
//! - [`store`]: the durable store (SQLite and MySQL behind one trait, sqlx migrations);
//! - [`ingest`]: the batched write path — a durable message is committed before its publisher
//!   hears that it was accepted;
//! - [`bookkeeping`]: acks and session events gathered in memory and written in batches, and the
//!   purge of expired rows;
//! - [`amqp`], [`topology`]: RabbitMQ as an actor with reconnects, and what is declared on it;
//! - [`presence`]: the Redis presence directory; [`bus`]: channel and broadcast fan-out over
//!   Redis pub/sub;
//! - [`router`]: the dispatcher's ingest — validate, store, route, ack; [`dead_letter`]: what is
//!   refused goes to `pushgate.dead` with the reason; [`events`]: acks and
//!   session events from gateways into MySQL, lifecycle events out to backends;
//! - [`service`]: the dispatcher process (config, start, admin listener);
//! - [`settings`]: the configuration layers both binaries read; [`telemetry`]: logs and metrics;
//!   [`backoff`]: jittered exponential backoff for every reconnect loop.

pub mod amqp;
pub mod backoff;
pub mod bookkeeping;
pub mod bus;
pub mod dead_letter;
pub mod events;
pub mod ingest;
pub mod message;
pub mod presence;
pub mod router;
pub mod service;
pub mod settings;
pub mod store;
pub mod telemetry;
pub mod topology;

pub use message::Message;

/// A URL without its password, for logs and errors.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let credentials = &url[scheme + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn redact_hides_only_the_password() {
        assert_eq!(super::redact("amqp://guest:secret@127.0.0.1:5672/%2f"), "amqp://guest:***@127.0.0.1:5672/%2f");
        assert_eq!(super::redact("amqp://127.0.0.1:5672"), "amqp://127.0.0.1:5672");
    }
}
