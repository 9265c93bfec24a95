//! Dead letters: a message the dispatcher refuses for good — a bad envelope, one the store
//! refuses, a malformed event message from a gateway — goes to `pushgate.dead` with its body
//! and headers unchanged plus `x-pushgate-error` saying why (SPEC §5), and is counted by the
//! reason's kind, a fixed label chosen by the code that refuses (never text from the message, so
//! the metric's series stay few). Nothing refused is dropped. What is added stays
//! small enough for the dead letter to be published at all: a reason is cut to 1 KiB, and
//! original headers over 64 KiB are left out (marked), the body kept.

use std::{borrow::Cow, time::Duration};

use lapin::{
    BasicProperties,
    message::Delivery,
    types::{AMQPValue, FieldTable, LongString},
};
use metrics::counter;
use pushgate_protocol::cluster::names;
use tokio_util::sync::CancellationToken;

use crate::{amqp::Amqp, backoff::retry};

pub const DEAD_LETTERS: &str = "pushgate_dead_letters_total";

/// The longest reason a dead letter carries. A decode error can quote the input — a string field
/// of any length — and an AMQP message's headers must fit in one frame (128 KiB by default): a
/// longer header would fail to publish, again and again, and stall the consumer behind it.
pub const MAX_REASON_BYTES: usize = 1024;

/// The most of the original headers a dead letter keeps (encoded). A message's headers fit in one
/// frame when it was published; the reason added to headers close to that limit would not, so
/// larger ones are left out (`x-pushgate-headers-dropped`) — the body is always kept.
pub const MAX_KEPT_HEADER_BYTES: usize = 64 * 1024;
/// Marks a dead letter whose original headers were left out.
pub const HEADERS_DROPPED_HEADER: &str = "x-pushgate-headers-dropped";

/// Why a message was refused: its kind — a fixed label, for the metric and the start of the
/// header — and the detail, which may quote the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reason {
    pub kind: &'static str,
    pub detail: String,
}

impl Reason {
    pub fn new(kind: &'static str, detail: impl ToString) -> Self {
        Self { kind, detail: detail.to_string() }
    }
}

impl std::fmt::Display for Reason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)
    }
}

/// Publishes `delivery` to `pushgate.dead` with `reason` (retrying while RabbitMQ is away);
/// false when `stop` came first, so the caller leaves the delivery unacked.
pub async fn publish(amqp: &Amqp, delivery: &Delivery, reason: &Reason, stop: &CancellationToken) -> bool {
    let kind = reason.kind;
    let text = reason.to_string();
    let reason = bounded(&text);
    let reason = reason.as_ref();
    let mut properties =
        BasicProperties::default().with_headers(headers(delivery.properties.headers().as_ref(), reason));
    if let Some(content_type) = delivery.properties.content_type() {
        properties = properties.with_content_type(content_type.clone());
    }
    let sent = retry("dead-lettering", stop, || {
        amqp.publish("", names::DEAD_QUEUE, &delivery.data, properties.clone(), true, Duration::from_secs(5))
    })
    .await;
    if sent.is_some() {
        counter!(DEAD_LETTERS, "reason" => kind).increment(1);
        tracing::info!(reason, "dead-lettered a message");
    }
    sent.is_some()
}

/// `reason`, cut to [`MAX_REASON_BYTES`] (on a character boundary, marked with `…`).
fn bounded(reason: &str) -> Cow<'_, str> {
    if reason.len() <= MAX_REASON_BYTES {
        return Cow::Borrowed(reason);
    }
    let mut end = MAX_REASON_BYTES;
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    Cow::Owned(format!("{}…", &reason[..end]))
}

/// Headers of a dead letter: why, plus the original headers when they are not too large.
fn headers(original: Option<&FieldTable>, reason: &str) -> FieldTable {
    let mut headers = match original {
        Some(table) if table_len(table) > MAX_KEPT_HEADER_BYTES => {
            let mut only_ours = FieldTable::default();
            only_ours.insert(HEADERS_DROPPED_HEADER.into(), AMQPValue::Boolean(true));
            only_ours
        }
        other => other.cloned().unwrap_or_default(),
    };
    headers.insert(names::ERROR_HEADER.into(), AMQPValue::LongString(LongString::from(reason)));
    headers
}

/// The encoded length of a field table (AMQP 0-9-1): a length prefix, then per entry a short
/// string key and a tagged value. Values of a fixed size count as the largest of them (9 bytes).
fn table_len(table: &FieldTable) -> usize {
    4 + table.inner().iter().map(|(key, value)| 1 + key.as_str().len() + value_len(value)).sum::<usize>()
}

fn value_len(value: &AMQPValue) -> usize {
    1 + match value {
        AMQPValue::ShortString(s) => 1 + s.as_str().len(),
        AMQPValue::LongString(s) => 4 + s.len(),
        AMQPValue::ByteArray(b) => 4 + b.len(),
        AMQPValue::FieldArray(a) => 4 + a.as_slice().iter().map(value_len).sum::<usize>(),
        AMQPValue::FieldTable(t) => table_len(t),
        _ => 8,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_reads_kind_then_detail_and_its_kind_stays_fixed() {
        let reason = Reason::new("bad_field", "to.users: \"a:b\" is not a user id");
        assert_eq!(reason.to_string(), "bad_field: to.users: \"a:b\" is not a user id");
        assert_eq!(reason.kind, "bad_field");
        let detail_without_prefix = Reason::new("store", "UNIQUE constraint failed: inbox.seq");
        assert_eq!(detail_without_prefix.kind, "store");
    }

    #[test]
    fn a_long_reason_is_cut_on_a_character_boundary() {
        assert_eq!(bounded("not_json: short"), "not_json: short");
        let long = format!("bad_field: to.users: invalid type: string \"{}\"", "é".repeat(10_000));
        let cut = bounded(&long);
        assert!(cut.len() <= MAX_REASON_BYTES + '…'.len_utf8(), "{}", cut.len());
        assert!(cut.starts_with("bad_field: to.users: ") && cut.ends_with('…'));
        let exact = "a".repeat(MAX_REASON_BYTES);
        assert_eq!(bounded(&exact), exact.as_str());
    }

    #[test]
    fn original_headers_are_kept_unless_they_are_too_large() {
        let mut small = FieldTable::default();
        small.insert("trace".into(), AMQPValue::LongString("t-1".into()));
        let kept = headers(Some(&small), "not_json: x");
        assert_eq!(kept.inner().get("trace"), small.inner().get("trace"));
        assert!(!kept.contains_key(HEADERS_DROPPED_HEADER));

        let mut large = FieldTable::default();
        let mut nested = FieldTable::default();
        nested.insert("blob".into(), AMQPValue::LongString("x".repeat(MAX_KEPT_HEADER_BYTES).into()));
        large.insert("nested".into(), AMQPValue::FieldArray(vec![AMQPValue::FieldTable(nested)].into()));
        assert!(table_len(&large) > MAX_KEPT_HEADER_BYTES);
        let dropped = headers(Some(&large), "not_json: x");
        assert!(!dropped.contains_key("nested"));
        assert_eq!(dropped.inner().get(HEADERS_DROPPED_HEADER), Some(&AMQPValue::Boolean(true)));
        assert!(
            matches!(dropped.inner().get(names::ERROR_HEADER), Some(AMQPValue::LongString(r)) if r.as_bytes() == b"not_json: x")
        );
        assert!(headers(None, "r").contains_key(names::ERROR_HEADER));
    }
}
