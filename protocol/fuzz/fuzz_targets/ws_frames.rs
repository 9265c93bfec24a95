//! Fuzzes the RFC 6455 decoder: frame heads, unmasking and reassembly over a byte stream.
#![no_main]
use libfuzzer_sys::fuzz_target;
use pushgate_protocol::ws::{self, Assembler};

fuzz_target!(|data: &[u8]| {
    let mut asm = Assembler::default();
    let mut rest = data;
    while let Ok(Some(head)) = ws::decode_head(rest, true, 1 << 16) {
        if rest.len() < head.frame_len() {
            break;
        }
        let mut payload = rest[head.head_len..head.frame_len()].to_vec();
        if let Some(key) = head.mask {
            ws::apply_mask(&mut payload, key);
        }
        if asm.push(&head, &payload, 1 << 16).is_err() {
            break;
        }
        rest = &rest[head.frame_len()..];
    }
});
