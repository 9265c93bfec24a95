//! Fuzzes the upgrade request parser and its accessors.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::handshake;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(req)) = handshake::parse_request(data) {
        let _ = req.websocket_key();
        let _ = req.token();
        let _ = req.last_seq();
    }
});
