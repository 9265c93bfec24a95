//! Fuzzes the server frame decoder that clients and the load tool use; decode → encode → decode
//! must be stable.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::ServerFrame;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(frame) = ServerFrame::decode(text) {
            let json = frame.to_json();
            let again = ServerFrame::decode(&json).expect("an encoded frame decodes");
            assert_eq!(again.to_json(), json);
        }
    }
});
