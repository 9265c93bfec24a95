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
//! - [`settings`]: the configuration layers both binaries read; [`telemetry`]: logs and metrics.

pub mod bookkeeping;
pub mod ingest;
pub mod message;
pub mod settings;
pub mod store;
pub mod telemetry;

pub use message::Message;
