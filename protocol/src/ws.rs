//! RFC 6455 framing without I/O.
//!
//! Server side of the wire: a server frame is encoded once into a complete, unmasked WebSocket
//! frame (`Bytes`) that any number of sessions can queue and write as is. Client side of the wire:
//! [`decode_head`] reads a frame header under every rule a server must enforce (mask required,
//! no reserved bits, known opcodes, short unfragmented control frames, a size limit), and
//! [`Assembler`] joins fragments into messages, validating UTF-8 as it goes so that a bad text
//! message fails at the first bad byte.

use std::borrow::Cow;

use bytes::Bytes;

use crate::close::{CloseCode, is_valid_wire_code};

/// The largest header a frame can have: 2 fixed bytes, 8 length bytes, 4 mask bytes.
pub const MAX_HEAD_LEN: usize = 14;
/// The largest header of a server frame (never masked).
const MAX_SERVER_HEAD_LEN: usize = 10;
/// Control frames carry at most 125 payload bytes (RFC 6455 §5.5).
pub const MAX_CONTROL_PAYLOAD: usize = 125;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    pub fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// A breach of RFC 6455 (or of our size limit) by the peer: the session ends with `code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{reason}")]
pub struct Violation {
    pub code: CloseCode,
    pub reason: &'static str,
}

const fn violation(code: CloseCode, reason: &'static str) -> Violation {
    Violation { code, reason }
}

// ---------------------------------------------------------------------------------------------
// Encoding (server → client)
// ---------------------------------------------------------------------------------------------

fn head_len(payload_len: usize) -> usize {
    match payload_len {
        0..=125 => 2,
        126..=65535 => 4,
        _ => 10,
    }
}

fn write_head(out: &mut [u8], opcode: OpCode, payload_len: usize) {
    out[0] = 0x80 | opcode.bits();
    match payload_len {
        0..=125 => out[1] = payload_len as u8,
        126..=65535 => {
            out[1] = 126;
            out[2..4].copy_from_slice(&(payload_len as u16).to_be_bytes());
        }
        _ => {
            out[1] = 127;
            out[2..10].copy_from_slice(&(payload_len as u64).to_be_bytes());
        }
    }
}

/// Encodes a complete final server frame whose payload `write` appends to the buffer it is
/// given. The payload is written once, after room for the largest header, and the header is
/// put in front of it afterwards, so nothing is copied.
pub fn encode_with(opcode: OpCode, capacity_hint: usize, write: impl FnOnce(&mut Vec<u8>)) -> Bytes {
    let mut buf = Vec::with_capacity(MAX_SERVER_HEAD_LEN + capacity_hint);
    buf.resize(MAX_SERVER_HEAD_LEN, 0);
    write(&mut buf);
    let payload_len = buf.len() - MAX_SERVER_HEAD_LEN;
    let start = MAX_SERVER_HEAD_LEN - head_len(payload_len);
    write_head(&mut buf[start..], opcode, payload_len);
    Bytes::from(buf).slice(start..)
}

/// Encodes a complete final server frame carrying `payload`.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Bytes {
    encode_with(opcode, payload.len(), |buf| buf.extend_from_slice(payload))
}

/// A Close frame. The reason is cut at a character boundary to fit the 125-byte control limit.
pub fn close_frame(code: u16, reason: &str) -> Bytes {
    let mut end = reason.len().min(MAX_CONTROL_PAYLOAD - 2);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    encode_with(OpCode::Close, 2 + end, |buf| {
        buf.extend_from_slice(&code.to_be_bytes());
        buf.extend_from_slice(&reason.as_bytes()[..end]);
    })
}

/// The payload-less server Ping that heartbeats send; one shared frame serves every session.
pub fn ping_frame() -> Bytes {
    Bytes::from_static(&[0x89, 0x00])
}

// ---------------------------------------------------------------------------------------------
// Decoding (client → server)
// ---------------------------------------------------------------------------------------------

/// A decoded frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHead {
    pub fin: bool,
    pub opcode: OpCode,
    pub mask: Option<[u8; 4]>,
    pub payload_len: usize,
    pub head_len: usize,
}

impl FrameHead {
    /// Header plus payload.
    pub fn frame_len(&self) -> usize {
        self.head_len + self.payload_len
    }
}

/// Reads a frame header from the start of `buf`. `Ok(None)` means the header is not complete
/// yet. A server passes `require_mask = true`: RFC 6455 §5.1 requires it to fail the
/// connection on an unmasked client frame. `max_payload` bounds a single frame (1009 above it).
pub fn decode_head(buf: &[u8], require_mask: bool, max_payload: usize) -> Result<Option<FrameHead>, Violation> {
    let [b0, b1, ..] = *buf else {
        return Ok(None);
    };
    if b0 & 0x70 != 0 {
        return Err(violation(CloseCode::Protocol, "reserved bits set without an extension"));
    }
    let opcode = OpCode::from_bits(b0 & 0x0F).ok_or(violation(CloseCode::Protocol, "reserved opcode"))?;
    let fin = b0 & 0x80 != 0;
    let masked = b1 & 0x80 != 0;
    if require_mask && !masked {
        return Err(violation(CloseCode::Protocol, "client frames must be masked"));
    }
    let (len, mut at) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else {
                return Ok(None);
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else {
                return Ok(None);
            };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            let len = u64::from_be_bytes(be);
            if len >> 63 != 0 {
                return Err(violation(CloseCode::Protocol, "payload length has its top bit set"));
            }
            (len, 10)
        }
        n => (u64::from(n), 2),
    };
    if opcode.is_control() {
        if !fin {
            return Err(violation(CloseCode::Protocol, "fragmented control frame"));
        }
        if len > MAX_CONTROL_PAYLOAD as u64 {
            return Err(violation(CloseCode::Protocol, "control frame payload above 125 bytes"));
        }
    }
    if len > max_payload as u64 {
        return Err(violation(CloseCode::TooLarge, "frame too large"));
    }
    let mask = if masked {
        let Some(key) = buf.get(at..at + 4) else {
            return Ok(None);
        };
        at += 4;
        Some([key[0], key[1], key[2], key[3]])
    } else {
        None
    };
    Ok(Some(FrameHead { fin, opcode, mask, payload_len: len as usize, head_len: at }))
}

/// The length of the complete client Pong frames (masked, as a server requires) at the start of
/// `buf`: a client's heartbeat answers, which need nothing but reading. Stops at anything else,
/// an incomplete frame or a frame a server must refuse.
pub fn leading_pongs(buf: &[u8]) -> usize {
    let mut at = 0;
    while let Ok(Some(head)) = decode_head(&buf[at..], true, MAX_CONTROL_PAYLOAD) {
        if head.opcode != OpCode::Pong || buf.len() - at < head.frame_len() {
            break;
        }
        at += head.frame_len();
    }
    at
}

/// The client Close frame (masked, as a server requires) that is all of `buf`, unmasked in place
/// and decoded as a server receiving it would: `Some(None)` when it carries no status code,
/// `None` when `buf` is anything else — more or less than one frame, another opcode, or a
/// Close a server must refuse (its code or reason invalid).
pub fn lone_client_close(buf: &mut [u8]) -> Option<Option<(u16, &str)>> {
    let head = decode_head(buf, true, MAX_CONTROL_PAYLOAD).ok()??;
    if head.opcode != OpCode::Close || head.frame_len() != buf.len() {
        return None;
    }
    let payload = &mut buf[head.head_len..];
    if let Some(key) = head.mask {
        apply_mask(payload, key);
    }
    decode_close(payload).ok()
}

/// Unmasks (or masks: the operation is its own inverse) a payload in place.
pub fn apply_mask(payload: &mut [u8], key: [u8; 4]) {
    let key8 = u64::from_ne_bytes([key[0], key[1], key[2], key[3], key[0], key[1], key[2], key[3]]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ key8).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= key[i % 4];
    }
}

/// A complete message from the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message<'a> {
    Text(Cow<'a, str>),
    Binary(Cow<'a, [u8]>),
    Ping(&'a [u8]),
    Pong(&'a [u8]),
    /// A Close frame; `None` when it carried no status code.
    Close(Option<(u16, &'a str)>),
}

/// A fragmented data message being received.
#[derive(Debug)]
struct Partial {
    text: bool,
    buf: Vec<u8>,
    /// For text: the prefix of `buf` known to be valid UTF-8.
    checked: usize,
}

/// Joins fragments into messages. Holds nothing between messages; while a fragmented message
/// is in flight it holds that message's bytes, at most `max_message` of them.
#[derive(Debug, Default)]
pub struct Assembler {
    partial: Option<Box<Partial>>,
}

/// Checks the UTF-8 of `bytes[from..]`, allowing an incomplete sequence at the end when more
/// fragments are to come. Returns the new checked length.
const BAD_UTF8: Violation = violation(CloseCode::InvalidPayload, "text is not valid UTF-8");

fn check_utf8(bytes: &[u8], from: usize, last: bool) -> Result<usize, Violation> {
    match std::str::from_utf8(&bytes[from..]) {
        Ok(_) => Ok(bytes.len()),
        Err(e) if e.error_len().is_none() && !last => Ok(from + e.valid_up_to()),
        Err(_) => Err(BAD_UTF8),
    }
}

impl Assembler {
    /// Whether a fragmented message is in flight.
    pub fn in_message(&self) -> bool {
        self.partial.is_some()
    }

    /// Takes one frame (its payload already unmasked) and returns a message when one is
    /// complete. Control frames may arrive between fragments and are returned at once.
    pub fn push<'a>(
        &mut self,
        head: &FrameHead,
        payload: &'a [u8],
        max_message: usize,
    ) -> Result<Option<Message<'a>>, Violation> {
        match head.opcode {
            OpCode::Ping => Ok(Some(Message::Ping(payload))),
            OpCode::Pong => Ok(Some(Message::Pong(payload))),
            OpCode::Close => decode_close(payload).map(|c| Some(Message::Close(c))),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(violation(CloseCode::Protocol, "new data frame inside a fragmented message"));
                }
                let text = head.opcode == OpCode::Text;
                if head.fin {
                    return Ok(Some(if text {
                        Message::Text(Cow::Borrowed(std::str::from_utf8(payload).map_err(|_| BAD_UTF8)?))
                    } else {
                        Message::Binary(Cow::Borrowed(payload))
                    }));
                }
                if payload.len() > max_message {
                    return Err(violation(CloseCode::TooLarge, "message too large"));
                }
                let checked = if text { check_utf8(payload, 0, false)? } else { 0 };
                self.partial = Some(Box::new(Partial { text, buf: payload.to_vec(), checked }));
                Ok(None)
            }
            OpCode::Continuation => {
                let Some(partial) = self.partial.as_mut() else {
                    return Err(violation(CloseCode::Protocol, "continuation frame without a message"));
                };
                if partial.buf.len() + payload.len() > max_message {
                    return Err(violation(CloseCode::TooLarge, "message too large"));
                }
                partial.buf.extend_from_slice(payload);
                if partial.text {
                    // Re-check from the start of the last incomplete sequence.
                    partial.checked = check_utf8(&partial.buf, partial.checked, head.fin)?;
                }
                if !head.fin {
                    return Ok(None);
                }
                let Some(done) = self.partial.take() else {
                    return Ok(None);
                };
                Ok(Some(if done.text {
                    Message::Text(Cow::Owned(String::from_utf8(done.buf).map_err(|_| BAD_UTF8)?))
                } else {
                    Message::Binary(Cow::Owned(done.buf))
                }))
            }
        }
    }
}

fn decode_close(payload: &[u8]) -> Result<Option<(u16, &str)>, Violation> {
    match payload {
        [] => Ok(None),
        [_] => Err(violation(CloseCode::Protocol, "close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let code = u16::from_be_bytes([*hi, *lo]);
            if !is_valid_wire_code(code) {
                return Err(violation(CloseCode::Protocol, "invalid close code"));
            }
            let reason = std::str::from_utf8(reason)
                .map_err(|_| violation(CloseCode::InvalidPayload, "close reason is not valid UTF-8"))?;
            Ok(Some((code, reason)))
        }
    }
}

/// Builds a masked client frame. Servers never send these; tests, fuzzers and the load tool do.
pub fn encode_client(opcode: OpCode, fin: bool, payload: &[u8], key: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAX_HEAD_LEN + payload.len());
    let mut head = [0u8; MAX_SERVER_HEAD_LEN];
    write_head(&mut head, opcode, payload.len());
    if !fin {
        head[0] &= 0x7F;
    }
    head[1] |= 0x80;
    out.extend_from_slice(&head[..head_len(payload.len())]);
    out.extend_from_slice(&key);
    let start = out.len();
    out.extend_from_slice(payload);
    apply_mask(&mut out[start..], key);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

    fn decode_one(frame: &[u8]) -> (FrameHead, Vec<u8>) {
        let head = decode_head(frame, true, 1 << 20).unwrap().unwrap();
        let mut payload = frame[head.head_len..head.frame_len()].to_vec();
        if let Some(key) = head.mask {
            apply_mask(&mut payload, key);
        }
        (head, payload)
    }

    #[test]
    fn server_frames_carry_the_right_length_forms() {
        for len in [0usize, 1, 125, 126, 65535, 65536, 70000] {
            let payload = vec![b'x'; len];
            let frame = encode(OpCode::Text, &payload);
            let head = decode_head(&frame, false, usize::MAX).unwrap().unwrap();
            assert!(head.fin);
            assert_eq!(head.opcode, OpCode::Text);
            assert_eq!(head.payload_len, len);
            assert_eq!(head.head_len, head_len(len));
            assert_eq!(&frame[head.head_len..], &payload[..]);
        }
    }

    #[test]
    fn leading_pongs_covers_complete_masked_pongs_only() {
        let pong = encode_client(OpCode::Pong, true, b"beat", KEY);
        let two = [pong.clone(), pong.clone()].concat();
        assert_eq!(leading_pongs(&two), two.len());
        assert_eq!(leading_pongs(&[]), 0);
        // Stops at an incomplete Pong, at any other frame, and at an unmasked Pong.
        assert_eq!(leading_pongs(&two[..two.len() - 1]), pong.len());
        let text = encode_client(OpCode::Text, true, b"{}", KEY);
        assert_eq!(leading_pongs(&[pong.clone(), text.clone(), pong.clone()].concat()), pong.len());
        assert_eq!(leading_pongs(&[text, pong.clone()].concat()), 0);
        let ping = encode_client(OpCode::Ping, true, b"", KEY);
        assert_eq!(leading_pongs(&ping), 0);
        assert_eq!(leading_pongs(&encode(OpCode::Pong, b"beat")), 0, "unmasked");
        // A non-final Pong is a violation the session must answer: not a heartbeat.
        assert_eq!(leading_pongs(&encode_client(OpCode::Pong, false, b"", KEY)), 0);
    }

    #[test]
    fn a_lone_client_close_is_decoded_as_a_session_would() {
        let close = |payload: &[u8]| encode_client(OpCode::Close, true, payload, KEY);
        let with_reason = [&3001u16.to_be_bytes()[..], "bye ✓".as_bytes()].concat();
        assert_eq!(lone_client_close(&mut close(&with_reason)), Some(Some((3001, "bye ✓"))));
        assert_eq!(lone_client_close(&mut close(b"")), Some(None), "no status code");
        // Not alone, not whole, not a Close, not masked.
        let two = [close(b""), close(b"")].concat();
        assert_eq!(lone_client_close(&mut two.clone()), None);
        assert_eq!(lone_client_close(&mut two[..two.len() / 2 - 1].to_vec()), None);
        assert_eq!(lone_client_close(&mut encode_client(OpCode::Text, true, b"{}", KEY)), None);
        assert_eq!(lone_client_close(&mut encode(OpCode::Close, &1000u16.to_be_bytes()).to_vec()), None);
        assert_eq!(lone_client_close(&mut encode_client(OpCode::Close, false, b"", KEY)), None);
        // A Close a server must refuse: the session answers it (1002, 1007), not the caller.
        assert_eq!(lone_client_close(&mut close(&999u16.to_be_bytes())), None, "invalid code");
        assert_eq!(lone_client_close(&mut close(&[3, 232, 0xff])), None, "reason not UTF-8");
        assert_eq!(lone_client_close(&mut close(&[3])), None, "one byte");
    }

    #[test]
    fn masked_client_frames_round_trip() {
        let frame = encode_client(OpCode::Text, true, b"hello", KEY);
        let (head, payload) = decode_one(&frame);
        assert_eq!(head.mask, Some(KEY));
        assert_eq!(payload, b"hello");
    }

    #[test]
    fn incomplete_headers_ask_for_more() {
        let frame = encode_client(OpCode::Binary, true, &[0u8; 300], KEY);
        for cut in 0..8 {
            assert_eq!(decode_head(&frame[..cut], true, 1 << 20), Ok(None), "cut at {cut}");
        }
        assert!(decode_head(&frame[..8], true, 1 << 20).unwrap().is_some());
    }

    #[test]
    fn rule_breaking_frames_are_refused() {
        let unmasked = encode(OpCode::Text, b"x");
        assert_eq!(decode_head(&unmasked, true, 100).unwrap_err().code, CloseCode::Protocol);
        let mut rsv = encode_client(OpCode::Text, true, b"x", KEY);
        rsv[0] |= 0x40;
        assert_eq!(decode_head(&rsv, true, 100).unwrap_err().code, CloseCode::Protocol);
        let mut opcode = encode_client(OpCode::Text, true, b"x", KEY);
        opcode[0] = 0x83;
        assert_eq!(decode_head(&opcode, true, 100).unwrap_err().code, CloseCode::Protocol);
        let frag_ping = encode_client(OpCode::Ping, false, b"x", KEY);
        assert_eq!(decode_head(&frag_ping, true, 100).unwrap_err().code, CloseCode::Protocol);
        let long_ping = encode_client(OpCode::Ping, true, &[0; 126], KEY);
        assert_eq!(decode_head(&long_ping, true, 1000).unwrap_err().code, CloseCode::Protocol);
        let big = encode_client(OpCode::Binary, true, &[0; 101], KEY);
        assert_eq!(decode_head(&big, true, 100).unwrap_err().code, CloseCode::TooLarge);
    }

    #[test]
    fn fragments_join_and_controls_interleave() {
        let mut asm = Assembler::default();
        let parts = [
            encode_client(OpCode::Text, false, "hé".as_bytes(), KEY),
            encode_client(OpCode::Ping, true, b"p", KEY),
            encode_client(OpCode::Continuation, false, &"llo wörld".as_bytes()[..6], KEY),
            encode_client(OpCode::Continuation, true, &"llo wörld".as_bytes()[6..], KEY),
        ];
        let mut out = Vec::new();
        for frame in &parts {
            let (head, payload) = decode_one(frame);
            if let Some(msg) = asm.push(&head, &payload, 1000).unwrap() {
                out.push(format!("{msg:?}"));
            }
        }
        assert_eq!(out, vec![r#"Ping([112])"#.to_string(), r#"Text("héllo wörld")"#.to_string()]);
        assert!(!asm.in_message());
    }

    #[test]
    fn bad_utf8_fails_fast_and_at_the_end() {
        let mut asm = Assembler::default();
        let (h, p) = decode_one(&encode_client(OpCode::Text, false, &[0xce, 0xba, 0xff], KEY));
        assert_eq!(asm.push(&h, &p, 1000).unwrap_err().code, CloseCode::InvalidPayload);
        let mut asm = Assembler::default();
        let (h, p) = decode_one(&encode_client(OpCode::Text, false, &[b'a', 0xce], KEY));
        assert_eq!(asm.push(&h, &p, 1000), Ok(None));
        let (h, p) = decode_one(&encode_client(OpCode::Continuation, true, &[], KEY));
        assert_eq!(asm.push(&h, &p, 1000).unwrap_err().code, CloseCode::InvalidPayload);
    }

    #[test]
    fn close_payloads_are_checked() {
        let check = decode_close;
        assert_eq!(check(&[]), Ok(None));
        assert_eq!(check(&[3]).unwrap_err().code, CloseCode::Protocol);
        assert_eq!(check(&[0x03, 0xe8, b'o', b'k']), Ok(Some((1000, "ok"))));
        assert_eq!(check(&1005u16.to_be_bytes()).unwrap_err().code, CloseCode::Protocol);
        assert_eq!(check(&999u16.to_be_bytes()).unwrap_err().code, CloseCode::Protocol);
        assert_eq!(check(&[0x03, 0xe8, 0xff]).unwrap_err().code, CloseCode::InvalidPayload);
        let frame = close_frame(4001, &"é".repeat(100));
        let head = decode_head(&frame, false, 1000).unwrap().unwrap();
        assert!(head.payload_len <= MAX_CONTROL_PAYLOAD);
        assert!(std::str::from_utf8(&frame[head.head_len + 2..]).is_ok());
    }

    #[test]
    fn fragmented_messages_are_bounded() {
        let mut asm = Assembler::default();
        let (h, p) = decode_one(&encode_client(OpCode::Binary, false, &[0; 60], KEY));
        assert_eq!(asm.push(&h, &p, 100), Ok(None));
        let (h, p) = decode_one(&encode_client(OpCode::Continuation, true, &[0; 60], KEY));
        assert_eq!(asm.push(&h, &p, 100).unwrap_err().code, CloseCode::TooLarge);
    }
}
