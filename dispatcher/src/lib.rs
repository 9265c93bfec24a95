//! pushgate's dispatch logic, shared by the standalone gateway (which embeds it) and, in cluster
//! mode, the `pushgate-dispatcher` process.
//!
//! Layout:
//! - [`message`]: an accepted publish — the envelope with its id and ingest time fixed.

pub mod message;

pub use message::Message;
