//! Ids on the wire: user ids, device ids and channel names share one rule (SPEC §3: 1–128
//! characters of `A-Z a-z 0-9 _ . : @ / -`), and a token's `chs` patterns match channel names.
//!
//! The id types hold an `Arc<str>` so that the registry, the sessions and the frames can share one
//! allocation per id instead of copying strings per session.

use std::{borrow::Borrow, fmt, sync::Arc};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Longest id the contract allows, in characters (all allowed characters are ASCII, so bytes).
pub const ID_MAX_LEN: usize = 128;

/// Why a string is not a valid id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    #[error("is empty")]
    Empty,
    #[error("is longer than 128 characters")]
    TooLong,
    #[error("contains a character outside A-Z a-z 0-9 _ . : @ / -")]
    BadChar,
}

fn is_id_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'@' | b'/' | b'-')
}

/// Checks the id rule of SPEC §3.
pub fn check_id(s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty);
    }
    if s.len() > ID_MAX_LEN {
        return Err(IdError::TooLong);
    }
    if !s.bytes().all(is_id_byte) {
        return Err(IdError::BadChar);
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(Arc<str>);

        impl $name {
            /// Validates `s` against the id rule.
            pub fn new(s: &str) -> Result<Self, IdError> {
                check_id(s)?;
                Ok(Self(Arc::from(s)))
            }

            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.0, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl Borrow<str> for $name {
            fn borrow(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.0)
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
                Self::new(&s).map_err(serde::de::Error::custom)
            }
        }
    };
}

id_type!(
    /// A user: every device of a user receives the user's messages.
    UserId
);
id_type!(
    /// One device of a user (token claim `dev`); device cursors are kept per device.
    DeviceId
);
id_type!(
    /// A channel that sessions subscribe to.
    ChannelName
);

/// A channel pattern from a token's `chs` claim: an exact name, or a prefix ending in `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChannelPattern {
    prefix: Box<str>,
    wildcard: bool,
}

impl ChannelPattern {
    /// Parses `news`, `room:*` or `*`. A prefix must itself be made of id characters.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        match s.strip_suffix('*') {
            Some(prefix) => {
                if prefix.len() > ID_MAX_LEN {
                    return Err(IdError::TooLong);
                }
                if !prefix.bytes().all(is_id_byte) {
                    return Err(IdError::BadChar);
                }
                Ok(Self { prefix: prefix.into(), wildcard: true })
            }
            None => {
                check_id(s)?;
                Ok(Self { prefix: s.into(), wildcard: false })
            }
        }
    }

    pub fn matches(&self, channel: &ChannelName) -> bool {
        if self.wildcard { channel.as_str().starts_with(&*self.prefix) } else { channel.as_str() == &*self.prefix }
    }
}

impl fmt::Display for ChannelPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.prefix)?;
        if self.wildcard {
            f.write_str("*")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_follow_the_rule() {
        assert!(UserId::new("alice@example.com/phone-1:x_y.z").is_ok());
        assert_eq!(UserId::new(""), Err(IdError::Empty));
        assert_eq!(UserId::new(&"a".repeat(129)), Err(IdError::TooLong));
        assert!(UserId::new(&"a".repeat(128)).is_ok());
        assert_eq!(UserId::new("a b"), Err(IdError::BadChar));
        assert_eq!(UserId::new("é"), Err(IdError::BadChar));
    }

    #[test]
    fn patterns_match_exactly_or_by_prefix() {
        let news = ChannelName::new("news").unwrap();
        let room = ChannelName::new("room:42").unwrap();
        assert!(ChannelPattern::parse("news").unwrap().matches(&news));
        assert!(!ChannelPattern::parse("news").unwrap().matches(&room));
        assert!(ChannelPattern::parse("room:*").unwrap().matches(&room));
        assert!(!ChannelPattern::parse("room:*").unwrap().matches(&news));
        assert!(ChannelPattern::parse("*").unwrap().matches(&news));
        assert!(ChannelPattern::parse("bad pattern*").is_err());
        assert!(ChannelPattern::parse("a*b").is_err());
    }
}
