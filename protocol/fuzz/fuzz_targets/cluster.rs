//! Fuzzes the decoders of the cluster's internal wire; what decodes must encode and decode again.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::cluster::{BusMessage, Control, EventBatch, NodeDelivery};

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = NodeDelivery::decode(data) {
        NodeDelivery::decode(&d.encode()).expect("re-decodes");
    }
    if let Ok(m) = BusMessage::decode(data) {
        BusMessage::decode(&m.encode()).expect("re-decodes");
    }
    if let Ok(c) = Control::decode(data) {
        assert_eq!(Control::decode(&c.encode()).expect("re-decodes"), c);
    }
    if let Ok(e) = EventBatch::decode(data) {
        EventBatch::decode(&e.encode()).expect("re-decodes");
    }
});
