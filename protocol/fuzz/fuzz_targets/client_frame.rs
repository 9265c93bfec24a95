//! Fuzzes the client frame decoder; a decoded request must encode and decode to itself.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::ClientRequest;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(req) = ClientRequest::decode(text) {
            assert_eq!(ClientRequest::decode(&req.to_json()).ok(), Some(req));
        }
    }
});
