//! An accepted publish: a validated envelope whose id and ingest time are fixed. Everything
//! downstream (store, routing, delivery) works on this.

use pushgate_protocol::{Envelope, Target};
use serde_json::value::RawValue;

/// A message on its way to its receivers.
#[derive(Debug, Clone)]
pub struct Message {
    /// The publisher's idempotency key, or one assigned at ingest.
    pub id: String,
    /// The publisher gave the id: a second publish with it within the idempotency window is a
    /// duplicate.
    pub keyed: bool,
    /// Ingest time, ms since the Unix epoch.
    pub ts: u64,
    pub to: Target,
    pub data: Box<RawValue>,
    pub persist: bool,
    pub ttl_s: u64,
}

impl Message {
    /// Accepts an envelope at `ts`, assigning a time-ordered id (UUIDv7) when it has none.
    pub fn accept(envelope: Envelope, ts: u64) -> Self {
        let keyed = envelope.id.is_some();
        let id = envelope.id.unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        Self { id, keyed, ts, to: envelope.to, data: envelope.data, persist: envelope.persist, ttl_s: envelope.ttl_s }
    }
}

#[cfg(test)]
mod tests {
    use pushgate_protocol::EnvelopeLimits;

    use super::*;

    #[test]
    fn ids_are_kept_or_assigned() {
        let limits = EnvelopeLimits::default();
        let with = Envelope::decode(br#"{"id":"k1","to":{"all":true},"data":1}"#, &limits).unwrap();
        assert_eq!(Message::accept(with, 5).id, "k1");
        let without = Envelope::decode(br#"{"to":{"all":true},"data":1}"#, &limits).unwrap();
        let a = Message::accept(without.clone(), 5);
        let b = Message::accept(without, 5);
        assert_ne!(a.id, b.id);
        assert_eq!(a.id.len(), 36);
    }
}
