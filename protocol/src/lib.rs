//! The pushgate wire contract (`shared/SPEC.md` §3–§5) as Rust types, with no I/O and no runtime.
//!
//! Layout:
//! - [`ids`]: user ids, device ids, channel names and the channel patterns of a token;
//! - [`claims`]: what a session token and a channel token carry;
//! - [`handshake`]: the HTTP upgrade request of `GET /ws`, its refusals and its accept key;
//! - [`ws`]: RFC 6455 framing — server frames encoded once into complete frames, client frames
//!   decoded and reassembled under every rule a server must enforce;
//! - [`client`]: client frames (`subscribe`, `unsubscribe`, `ack`, `ping`) decoded with precise errors;
//! - [`server`]: server frames (`welcome`, `message`, …) encoded into shareable `Bytes`;
//! - [`envelope`]: the publish envelope shared by AMQP and HTTP, validated field by field;
//! - [`close`]: the close codes of §4;
//! - [`cluster`]: the internal wire between gateways and dispatchers (names and bodies);
//! - `object`: a JSON object read field by field, a name given twice noticed (both decoders above);
//! - `readable`: whether a publisher's `data` is JSON clients' parsers read (depth, surrogates, numbers).
//!
//! Every decoder here takes untrusted bytes and returns a typed error instead of panicking; each
//! has a fuzz target under `protocol/fuzz/`.

pub mod claims;
pub mod client;
pub mod close;
pub mod cluster;
pub mod envelope;
pub mod handshake;
pub mod ids;
mod object;
mod readable;
pub mod server;
pub mod ws;

pub use claims::{ChannelClaims, SessionClaims};
pub use client::{ClientFrame, ClientRequest, FrameError};
pub use close::CloseCode;
pub use envelope::{Envelope, EnvelopeError, EnvelopeLimits, Target};
pub use ids::{ChannelName, ChannelPattern, DeviceId, IdError, UserId};
pub use server::{ErrorCode, ServerFrame};

/// Milliseconds since the Unix epoch, the unit of every `ts` and `since` on the wire.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}
