//! The publish envelope (SPEC §5), the same over AMQP and HTTP, validated field by field so a
//! refusal names the field (HTTP 400 body, or the `x-pushgate-error` header of a dead letter).

use std::borrow::Cow;

use serde::Serialize;
use serde_json::value::RawValue;

use crate::{
    ids::{ChannelName, UserId},
    object::{Object, parse_object, shown},
    readable::{self, Unreadable},
};

/// Longest idempotency key, in characters.
pub const MAX_ENVELOPE_ID_LEN: usize = 128;
/// How long a durable message waits for an offline user when the publisher does not say.
pub const DEFAULT_TTL_S: u64 = 7 * 24 * 3600;

/// Bounds an envelope must respect; the gateway and the dispatcher take them from config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EnvelopeLimits {
    /// Encoded size of `data` (SPEC: 64 KiB, configurable).
    pub max_data_bytes: usize,
    /// Users in one envelope (SPEC: 1000).
    pub max_users: usize,
    /// Longest `ttl_s` accepted.
    pub max_ttl_s: u64,
    /// Deepest nesting of arrays and objects in `data` (a scalar is depth 0, `[1]` depth 1).
    /// Clients' JSON parsers stop at some depth (Ruby at 100, serde_json at 128, Python near
    /// 1,000); a message deeper than theirs could never be read, and a durable one would come
    /// back at every reconnect, so it is refused when published.
    pub max_data_depth: usize,
}

impl Default for EnvelopeLimits {
    fn default() -> Self {
        Self { max_data_bytes: 64 * 1024, max_users: 1000, max_ttl_s: 365 * 24 * 3600, max_data_depth: 64 }
    }
}

/// Who receives a message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// Every device of each user (deduplicated, in the order given).
    Users(Vec<UserId>),
    /// Every session subscribed to the channel.
    Channel(ChannelName),
    /// Every session.
    All,
}

/// A validated publish request.
#[derive(Debug, Clone)]
pub struct Envelope {
    /// Idempotency key; the ingest assigns one when absent.
    pub id: Option<String>,
    pub to: Target,
    /// The publisher's JSON, kept verbatim.
    pub data: Box<RawValue>,
    /// Durable: stored before it is accepted, delivered in `seq` order.
    pub persist: bool,
    /// How long a durable message waits for an offline user.
    pub ttl_s: u64,
}

/// Why an envelope was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("body is not JSON: {0}")]
    NotJson(String),
    #[error("envelope must be a JSON object")]
    NotObject,
    #[error("unknown field {0:?}")]
    UnknownField(String),
    /// A field given twice: JSON parsers disagree on which one counts, so neither is guessed.
    #[error("field {0:?} appears more than once")]
    DuplicateField(String),
    #[error("{field}: {problem}")]
    Field { field: &'static str, problem: Cow<'static, str> },
    #[error("data is {size} bytes, above the limit of {limit}")]
    DataTooLarge { size: usize, limit: usize },
    #[error("data nests arrays and objects more than {limit} deep")]
    DataTooDeep { limit: usize },
}

impl EnvelopeError {
    /// The field at fault, when one is.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Field { field, .. } => Some(field),
            Self::UnknownField(name) | Self::DuplicateField(name) => Some(name),
            Self::DataTooLarge { .. } | Self::DataTooDeep { .. } => Some("data"),
            Self::NotJson(_) | Self::NotObject => None,
        }
    }

    /// A stable label for metrics and dead-letter headers.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotJson(_) => "not_json",
            Self::NotObject => "not_object",
            Self::UnknownField(_) => "unknown_field",
            Self::DuplicateField(_) => "duplicate_field",
            Self::Field { .. } => "bad_field",
            Self::DataTooLarge { .. } => "too_large",
            Self::DataTooDeep { .. } => "too_deep",
        }
    }
}

fn field(field: &'static str, problem: impl Into<Cow<'static, str>>) -> EnvelopeError {
    EnvelopeError::Field { field, problem: problem.into() }
}

impl Envelope {
    /// Decodes and validates an envelope from its JSON bytes.
    pub fn decode(bytes: &[u8], limits: &EnvelopeLimits) -> Result<Envelope, EnvelopeError> {
        let text = std::str::from_utf8(bytes).map_err(|e| EnvelopeError::NotJson(e.to_string()))?;
        let Object { fields, duplicate } = parse_object(text)
            .map_err(|e| if e.is_data() { EnvelopeError::NotObject } else { EnvelopeError::NotJson(e.to_string()) })?;
        if let Some(name) = duplicate {
            return Err(EnvelopeError::DuplicateField(name));
        }
        if let Some(unknown) = fields.keys().find(|k| !matches!(&***k, "id" | "to" | "data" | "persist" | "ttl_s")) {
            return Err(EnvelopeError::UnknownField(shown(unknown)));
        }

        let id = match fields.get("id") {
            None => None,
            Some(raw) => {
                let id: String = serde_json::from_str(raw.get()).map_err(|_| field("id", "must be a string"))?;
                let len = id.chars().count();
                if len == 0 || len > MAX_ENVELOPE_ID_LEN {
                    return Err(field("id", format!("must be 1 to {MAX_ENVELOPE_ID_LEN} characters")));
                }
                if id.chars().any(char::is_control) {
                    return Err(field("id", "must not contain control characters"));
                }
                Some(id)
            }
        };

        let to = decode_target(fields.get("to").ok_or_else(|| field("to", "is required"))?, limits)?;

        let data = fields.get("data").ok_or_else(|| field("data", "is required"))?;
        if data.get().len() > limits.max_data_bytes {
            return Err(EnvelopeError::DataTooLarge { size: data.get().len(), limit: limits.max_data_bytes });
        }
        readable::check(data.get(), limits.max_data_depth).map_err(|unreadable| match unreadable {
            Unreadable::TooDeep => EnvelopeError::DataTooDeep { limit: limits.max_data_depth },
            Unreadable::LoneSurrogate(escape) => field(
                "data",
                format!("has {escape}, half of a UTF-16 surrogate pair, which clients' JSON parsers refuse"),
            ),
            Unreadable::NumberOutOfRange(number) => field(
                "data",
                format!("has the number {number}, beyond a double's range, which clients' JSON parsers refuse"),
            ),
        })?;
        let data = (*data).to_owned();

        let persist = match fields.get("persist") {
            None => matches!(to, Target::Users(_)),
            Some(raw) => serde_json::from_str(raw.get()).map_err(|_| field("persist", "must be true or false"))?,
        };
        if persist && !matches!(to, Target::Users(_)) {
            return Err(field("persist", "is only supported for to.users in v1"));
        }

        let ttl_s = match fields.get("ttl_s") {
            None => DEFAULT_TTL_S,
            Some(raw) => {
                let ttl: u64 = serde_json::from_str(raw.get())
                    .map_err(|_| field("ttl_s", "must be a positive integer (seconds)"))?;
                if ttl == 0 || ttl > limits.max_ttl_s {
                    return Err(field("ttl_s", format!("must be between 1 and {}", limits.max_ttl_s)));
                }
                ttl
            }
        };

        Ok(Envelope { id, to, data, persist, ttl_s })
    }

    /// The envelope as JSON, as a publisher would send it.
    pub fn encode(&self) -> Vec<u8> {
        #[derive(Serialize)]
        struct To<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            users: Option<&'a [UserId]>,
            #[serde(skip_serializing_if = "Option::is_none")]
            channel: Option<&'a ChannelName>,
            #[serde(skip_serializing_if = "Option::is_none")]
            all: Option<bool>,
        }
        #[derive(Serialize)]
        struct Out<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            id: Option<&'a str>,
            to: To<'a>,
            data: &'a RawValue,
            persist: bool,
            ttl_s: u64,
        }
        let to = match &self.to {
            Target::Users(users) => To { users: Some(users), channel: None, all: None },
            Target::Channel(c) => To { users: None, channel: Some(c), all: None },
            Target::All => To { users: None, channel: None, all: Some(true) },
        };
        let out = Out { id: self.id.as_deref(), to, data: &self.data, persist: self.persist, ttl_s: self.ttl_s };
        serde_json::to_vec(&out).unwrap_or_default()
    }
}

fn decode_target(raw: &RawValue, limits: &EnvelopeLimits) -> Result<Target, EnvelopeError> {
    let Object { fields: to, duplicate } = parse_object(raw.get()).map_err(|_| field("to", "must be an object"))?;
    if let Some(name) = duplicate {
        return Err(EnvelopeError::DuplicateField(format!("to.{name}")));
    }
    if let Some(unknown) = to.keys().find(|k| !matches!(&***k, "users" | "channel" | "all")) {
        return Err(field("to", format!("unknown target {:?}", shown(unknown))));
    }
    if to.len() != 1 {
        return Err(field("to", "must have exactly one of users, channel, all"));
    }
    if let Some(raw) = to.get("users") {
        let names: Vec<Cow<'_, str>> =
            serde_json::from_str(raw.get()).map_err(|_| field("to.users", "must be an array of user ids"))?;
        if names.is_empty() || names.len() > limits.max_users {
            return Err(field("to.users", format!("must hold 1 to {} user ids", limits.max_users)));
        }
        let mut users: Vec<UserId> = Vec::with_capacity(names.len());
        for (i, name) in names.iter().enumerate() {
            let user = UserId::new(name).map_err(|e| field("to.users", format!("user id #{i} {e}")))?;
            if !users.contains(&user) {
                users.push(user);
            }
        }
        return Ok(Target::Users(users));
    }
    if let Some(raw) = to.get("channel") {
        let name: Cow<'_, str> =
            serde_json::from_str(raw.get()).map_err(|_| field("to.channel", "must be a string"))?;
        return ChannelName::new(&name)
            .map(Target::Channel)
            .map_err(|e| field("to.channel", format!("channel name {e}")));
    }
    match to.get("all").map(|raw| serde_json::from_str::<bool>(raw.get())) {
        Some(Ok(true)) => Ok(Target::All),
        _ => Err(field("to.all", "must be true")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(json: &str) -> Result<Envelope, EnvelopeError> {
        Envelope::decode(json.as_bytes(), &EnvelopeLimits::default())
    }

    #[test]
    fn the_spec_examples_decode() {
        let e = decode(r#"{"id": "order-42-shipped", "to": {"users": ["u1", "u2"]}, "data": {"any": "json"}, "persist": true, "ttl_s": 604800}"#).unwrap();
        assert_eq!(e.id.as_deref(), Some("order-42-shipped"));
        assert_eq!(e.to, Target::Users(vec![UserId::new("u1").unwrap(), UserId::new("u2").unwrap()]));
        assert_eq!(e.data.get(), r#"{"any": "json"}"#);
        assert!(e.persist);
        let e = decode(r#"{"to": {"channel": "news"}, "data": "hello"}"#).unwrap();
        assert_eq!(e.to, Target::Channel(ChannelName::new("news").unwrap()));
        assert!(!e.persist);
        assert_eq!(e.ttl_s, DEFAULT_TTL_S);
        let e = decode(r#"{"to": {"all": true}, "data": {"maintenance": "22:00"}}"#).unwrap();
        assert_eq!(e.to, Target::All);
        assert!(decode(r#"{"to":{"users":["u"]},"data":null}"#).unwrap().persist);
    }

    #[test]
    fn a_field_given_twice_is_refused_by_name() {
        let dup = |json: &str| decode(json).unwrap_err();
        assert_eq!(
            dup(r#"{"to":{"all":true},"to":{"users":["x"]},"data":1}"#),
            EnvelopeError::DuplicateField("to".into())
        );
        assert_eq!(
            dup(r#"{"to":{"all":true},"persist":true,"persist":false,"data":1}"#),
            EnvelopeError::DuplicateField("persist".into())
        );
        let inner = dup(r#"{"to":{"users":["x"],"users":["y"]},"data":1}"#);
        assert_eq!((inner.kind(), inner.field()), ("duplicate_field", Some("to.users")));
        // Inside `data` the publisher's JSON is kept verbatim, as it came.
        assert!(decode(r#"{"to":{"all":true},"data":{"a":1,"a":2}}"#).is_ok());
    }

    #[test]
    fn refusals_name_the_field() {
        let f = |json: &str| decode(json).unwrap_err().field().map(str::to_owned);
        assert_eq!(decode("{").unwrap_err().kind(), "not_json");
        assert_eq!(decode("[]").unwrap_err(), EnvelopeError::NotObject);
        assert_eq!(f(r#"{"data":1}"#).as_deref(), Some("to"));
        assert_eq!(f(r#"{"to":{"all":true}}"#).as_deref(), Some("data"));
        assert_eq!(f(r#"{"to":{"all":false},"data":1}"#).as_deref(), Some("to.all"));
        assert_eq!(f(r#"{"to":{"all":true,"channel":"x"},"data":1}"#).as_deref(), Some("to"));
        assert_eq!(f(r#"{"to":{"users":[]},"data":1}"#).as_deref(), Some("to.users"));
        assert_eq!(f(r#"{"to":{"users":["a b"]},"data":1}"#).as_deref(), Some("to.users"));
        assert_eq!(f(r#"{"to":{"channel":"news"},"data":1,"persist":true}"#).as_deref(), Some("persist"));
        assert_eq!(f(r#"{"to":{"all":true},"data":1,"ttl_s":0}"#).as_deref(), Some("ttl_s"));
        assert_eq!(f(r#"{"to":{"all":true},"data":1,"ttl_s":-5}"#).as_deref(), Some("ttl_s"));
        assert_eq!(f(r#"{"to":{"all":true},"data":1,"presist":true}"#).as_deref(), Some("presist"));
        assert_eq!(
            f(&format!(r#"{{"id":"{}","to":{{"all":true}},"data":1}}"#, "i".repeat(129))).as_deref(),
            Some("id")
        );
        let users: Vec<String> = (0..1001).map(|i| format!("\"u{i}\"")).collect();
        assert_eq!(f(&format!(r#"{{"to":{{"users":[{}]}},"data":1}}"#, users.join(","))).as_deref(), Some("to.users"));
    }

    #[test]
    fn data_is_bounded() {
        let limits = EnvelopeLimits { max_data_bytes: 10, ..Default::default() };
        let err = Envelope::decode(br#"{"to":{"all":true},"data":"0123456789"}"#, &limits).unwrap_err();
        assert_eq!(err, EnvelopeError::DataTooLarge { size: 12, limit: 10 });
    }

    #[test]
    fn data_clients_cannot_read_is_refused() {
        let limits = EnvelopeLimits { max_data_depth: 3, ..Default::default() };
        let with =
            |data: &str| Envelope::decode(format!(r#"{{"to":{{"all":true}},"data":{data}}}"#).as_bytes(), &limits);
        assert!(with("[[[1]]]").is_ok());
        let err = with("[[[[1]]]]").unwrap_err();
        assert_eq!(err, EnvelopeError::DataTooDeep { limit: 3 });
        assert_eq!(
            (err.field(), err.kind(), err.to_string().as_str()),
            (Some("data"), "too_deep", "data nests arrays and objects more than 3 deep")
        );
        let err = with(r#"{"emoji":"\ud83d"}"#).unwrap_err();
        assert_eq!((err.field(), err.kind()), (Some("data"), "bad_field"));
        assert!(err.to_string().contains(r"\ud83d, half of a UTF-16 surrogate pair"), "{err}");
        let err = with("[1e400]").unwrap_err();
        assert_eq!((err.field(), err.kind()), (Some("data"), "bad_field"));
        assert!(err.to_string().contains("the number 1e400, beyond a double's range"), "{err}");
        // The default bound takes what publishers send and refuses what clients' parsers stop at.
        let nested = |n: usize| format!(r#"{{"to":{{"all":true}},"data":{}{}}}"#, "[".repeat(n), "]".repeat(n));
        assert!(decode(&nested(64)).is_ok());
        assert_eq!(decode(&nested(10_000)).unwrap_err(), EnvelopeError::DataTooDeep { limit: 64 });
    }

    #[test]
    fn duplicate_users_are_merged() {
        let e = decode(r#"{"to":{"users":["a","b","a"]},"data":1}"#).unwrap();
        assert_eq!(e.to, Target::Users(vec![UserId::new("a").unwrap(), UserId::new("b").unwrap()]));
    }

    #[test]
    fn envelopes_encode_back() {
        let e = decode(r#"{"id":"k","to":{"users":["a"]},"data":{"x":[1]},"ttl_s":60}"#).unwrap();
        let again = Envelope::decode(&e.encode(), &EnvelopeLimits::default()).unwrap();
        assert_eq!(again.encode(), e.encode());
    }
}
