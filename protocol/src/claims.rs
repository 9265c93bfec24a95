//! What tokens carry (SPEC §3–§4): the claims of a session token and of a channel token. The
//! gateway checks signatures and expiry; deserializing here checks the claims' content (ids,
//! patterns), so a token with a malformed `sub` is refused as invalid.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{ChannelName, ChannelPattern, DeviceId, UserId};

/// Claims of the token a client connects with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionClaims {
    /// The user.
    pub sub: UserId,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
    /// The device, when the client names one; device cursors need it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dev: Option<DeviceId>,
    /// Channels the session may subscribe to without a channel token.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub chs: Vec<ChannelPattern>,
}

impl SessionClaims {
    /// Whether the token itself allows subscribing to `channel`.
    pub fn allows(&self, channel: &ChannelName) -> bool {
        self.chs.iter().any(|p| p.matches(channel))
    }
}

/// Claims of a channel token, sent with `subscribe` when the session token does not allow the
/// channel.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelClaims {
    /// Must be the session's user.
    pub sub: UserId,
    /// The one channel this token opens.
    pub ch: ChannelName,
    /// Expiry, seconds since the Unix epoch.
    pub exp: u64,
}

impl Serialize for ChannelPattern {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for ChannelPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<'de, str>::deserialize(d)?;
        ChannelPattern::parse(&s).map_err(|e| serde::de::Error::custom(format_args!("channel pattern {e}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_claims_validate_their_content() {
        let ok: SessionClaims =
            serde_json::from_str(r#"{"sub":"u1","exp":1,"dev":"phone","chs":["news","room:*"]}"#).unwrap();
        assert!(ok.allows(&ChannelName::new("room:7").unwrap()));
        assert!(!ok.allows(&ChannelName::new("secret").unwrap()));
        assert!(serde_json::from_str::<SessionClaims>(r#"{"sub":"bad id","exp":1}"#).is_err());
        assert!(serde_json::from_str::<SessionClaims>(r#"{"sub":"u1"}"#).is_err());
        assert!(serde_json::from_str::<SessionClaims>(r#"{"sub":"u1","exp":1,"chs":["a b"]}"#).is_err());
    }
}
