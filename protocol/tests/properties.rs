//! Property tests of the wire contract: what is encoded decodes to the same thing, and no
//! decoder panics on arbitrary input.
#![allow(clippy::unwrap_used)]

use std::borrow::Cow;

use proptest::prelude::*;
use pushgate_protocol::{
    ChannelName, ClientFrame, ClientRequest, Envelope, EnvelopeLimits, ServerFrame, Target, UserId, handshake,
    server::ErrorCode,
    ws::{self, Assembler, OpCode},
};
use serde_json::value::RawValue;

fn id_string() -> impl Strategy<Value = String> {
    "[A-Za-z0-9_.:@/-]{1,128}"
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        ".{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..6)
                .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
        ]
    })
}

/// JSON text as publishers write it, leaning to what clients' parsers disagree on: `\u` escapes
/// of any code unit (surrogate halves often), numbers with exponents up to 10^400, brackets in
/// strings, nesting up to 6 deep.
fn tricky_json() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        "[a-z\\[\\]{} ]{0,3}",
        Just(r#"\""#.to_owned()),
        Just(r"\\".to_owned()),
        any::<u16>().prop_map(|u| format!(r"\u{u:04x}")),
        (0xD800u16..0xE000).prop_map(|u| format!(r"\u{u:04X}")),
    ];
    let string = prop::collection::vec(piece, 0..5).prop_map(|pieces| format!(r#""{}""#, pieces.concat()));
    let number = ("-?", "0|[1-9][0-9]{0,11}", "(\\.[0-9]{1,4})?", prop::option::of(("[eE][+-]?", 0u16..400))).prop_map(
        |(sign, int, fraction, exponent)| {
            let exponent = exponent.map(|(e, x)| format!("{e}{x}")).unwrap_or_default();
            format!("{sign}{int}{fraction}{exponent}")
        },
    );
    let leaf = prop_oneof![string.clone(), number, Just("true".to_owned()), Just("null".to_owned())];
    leaf.prop_recursive(6, 40, 4, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(|items| format!("[{}]", items.join(","))),
            prop::collection::vec((string.clone(), inner), 0..4).prop_map(|fields| {
                let fields: Vec<String> = fields.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                format!("{{{}}}", fields.join(","))
            }),
        ]
    })
}

fn depth(value: &serde_json::Value) -> usize {
    match value {
        serde_json::Value::Array(items) => 1 + items.iter().map(depth).max().unwrap_or(0),
        serde_json::Value::Object(fields) => 1 + fields.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

fn client_request() -> impl Strategy<Value = ClientRequest> {
    let frame = prop_oneof![
        (id_string(), proptest::option::of("[A-Za-z0-9._-]{1,40}"))
            .prop_map(|(c, token)| { ClientFrame::Subscribe { channel: ChannelName::new(&c).unwrap(), token } }),
        id_string().prop_map(|c| ClientFrame::Unsubscribe { channel: ChannelName::new(&c).unwrap() }),
        any::<u64>().prop_map(|seq| ClientFrame::Ack { seq }),
        Just(ClientFrame::Ping),
    ];
    (proptest::option::of(".{0,64}"), frame).prop_map(|(id, frame)| ClientRequest { id, frame })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn client_frames_round_trip_through_masking(payload in prop::collection::vec(any::<u8>(), 0..70_000), key in any::<[u8; 4]>(), binary in any::<bool>()) {
        let opcode = if binary { OpCode::Binary } else { OpCode::Text };
        let frame = ws::encode_client(opcode, true, &payload, key);
        let head = ws::decode_head(&frame, true, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(head.frame_len(), frame.len());
        let mut body = frame[head.head_len..].to_vec();
        ws::apply_mask(&mut body, head.mask.unwrap());
        prop_assert_eq!(body, payload);
    }

    #[test]
    fn server_frames_round_trip(payload in prop::collection::vec(any::<u8>(), 0..70_000)) {
        let frame = ws::encode(OpCode::Binary, &payload);
        let head = ws::decode_head(&frame, false, usize::MAX).unwrap().unwrap();
        prop_assert_eq!(&frame[head.head_len..], &payload[..]);
    }

    #[test]
    fn the_frame_decoder_never_panics(stream in prop::collection::vec(any::<u8>(), 0..4096)) {
        let mut asm = Assembler::default();
        let mut rest = &stream[..];
        while let Ok(Some(head)) = ws::decode_head(rest, true, 1 << 16) {
            if rest.len() < head.frame_len() { break; }
            let mut payload = rest[head.head_len..head.frame_len()].to_vec();
            if let Some(key) = head.mask { ws::apply_mask(&mut payload, key); }
            if asm.push(&head, &payload, 1 << 16).is_err() { break; }
            rest = &rest[head.frame_len()..];
        }
    }

    #[test]
    fn client_requests_round_trip(req in client_request()) {
        prop_assert_eq!(ClientRequest::decode(&req.to_json()).unwrap(), req);
    }

    #[test]
    fn client_decoder_never_panics(text in ".{0,300}") {
        let _ = ClientRequest::decode(&text);
    }

    #[test]
    fn server_frames_encode_decode_encode(data in json_value(), seq in proptest::option::of(any::<u64>()), ch in proptest::option::of(id_string()), id in ".{0,40}", n in any::<u64>()) {
        let raw = RawValue::from_string(data.to_string()).unwrap();
        let frames = [
            ServerFrame::Message { id: Cow::Borrowed(&id), ts: n, data: Cow::Borrowed(&raw), seq, channel: ch.as_deref().map(Cow::Borrowed) },
            ServerFrame::Welcome { session: Cow::Borrowed(&id), node: "n".into(), user: "u".into(), heartbeat_s: n, last_seq: n },
            ServerFrame::Gap { dropped: n, channel: ch.as_deref().map(Cow::Borrowed) },
            ServerFrame::Error { code: ErrorCode::RateLimited, message: Cow::Borrowed(&id), id: Some(Cow::Borrowed(&id)) },
            ServerFrame::Reconnect { after_ms: n },
            ServerFrame::Pong { id: None },
        ];
        for frame in frames {
            let bytes = frame.encode();
            let head = ws::decode_head(&bytes, false, usize::MAX).unwrap().unwrap();
            let text = std::str::from_utf8(&bytes[head.head_len..]).unwrap();
            let back = ServerFrame::decode(text).unwrap();
            prop_assert_eq!(back.encode(), bytes);
        }
    }

    #[test]
    fn envelopes_round_trip(users in prop::collection::vec(id_string(), 1..20), data in json_value(), ttl in 1u64..1_000_000, id in proptest::option::of("[a-z0-9-]{1,128}")) {
        let e = Envelope {
            id,
            to: Target::Users(users.iter().map(|u| UserId::new(u).unwrap()).collect()),
            data: RawValue::from_string(data.to_string()).unwrap(),
            persist: true,
            ttl_s: ttl,
        };
        let again = Envelope::decode(&e.encode(), &EnvelopeLimits::default()).unwrap();
        // Decoding merges repeated user ids, keeping the first of each in order.
        let mut distinct: Vec<&String> = Vec::new();
        for u in &users {
            if !distinct.contains(&u) { distinct.push(u); }
        }
        let merged = Envelope { to: Target::Users(distinct.iter().map(|u| UserId::new(u).unwrap()).collect()), ..e };
        prop_assert_eq!(again.encode(), merged.encode());
    }

    /// The envelope takes exactly the `data` serde_json (a client's parser) reads within the depth.
    #[test]
    fn envelope_takes_the_data_a_client_parser_reads(data in tricky_json()) {
        let limits = EnvelopeLimits { max_data_depth: 4, ..Default::default() };
        let envelope = format!(r#"{{"to":{{"all":true}},"data":{data}}}"#);
        let client = serde_json::from_str::<serde_json::Value>(&data);
        let readable = client.as_ref().is_ok_and(|value| depth(value) <= 4);
        let taken = Envelope::decode(envelope.as_bytes(), &limits);
        prop_assert_eq!(taken.is_ok(), readable, "{} → ours {:?}, serde_json {:?}", data, taken.err(), client.err());
    }

    #[test]
    fn envelope_decoder_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512), text in ".{0,300}") {
        let _ = Envelope::decode(&bytes, &EnvelopeLimits::default());
        let _ = Envelope::decode(text.as_bytes(), &EnvelopeLimits::default());
    }

    #[test]
    fn handshake_parser_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..1024)) {
        if let Ok(Some(req)) = handshake::parse_request(&bytes) {
            let _ = req.websocket_key();
            let _ = req.token();
            let _ = req.last_seq();
        }
    }
}
