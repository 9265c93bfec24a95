//! Tokens: verifying session and channel JWTs (HS256, `exp` required) and minting them for the
//! `token` subcommand. In standalone mode the secret is generated once and kept in the data dir.

use std::{
    borrow::Cow,
    io::Write as _,
    path::{Path, PathBuf},
    time::{Duration, SystemTime},
};

use base64::{Engine as _, engine::general_purpose::URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac as _};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use pushgate_protocol::{ChannelClaims, ChannelName, SessionClaims, UserId};
use rand::RngCore as _;
use serde::{Deserialize, de::DeserializeOwned};
use sha2::Sha256;

/// File under the data dir that holds the generated secret.
pub const SECRET_FILE: &str = "jwt_secret";

/// Why a token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
    #[error("channel token is for another user")]
    WrongUser,
    #[error("channel token is for another channel")]
    WrongChannel,
}

/// Verifies and mints tokens with one HS256 secret.
///
/// Tokens are verified here rather than by `jsonwebtoken::decode`, which derives the HMAC key
/// from the secret, parses the header twice and the claims twice on every call: with the key's
/// state computed once and each part parsed once, a check costs less than half (`BENCHMARKS.md`,
/// "Connects: the session log's statements, the token check, set-up futures under 1 KiB"). Minting, which only
/// the `token` subcommand and tests do, stays with `jsonwebtoken`.
pub struct Auth {
    /// HMAC-SHA256 keyed with the secret, cloned for each check.
    key: Hmac<Sha256>,
    /// Seconds an expired token is still accepted (clock skew).
    leeway_s: u64,
    encoding: EncodingKey,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

/// Claims that carry an expiry.
trait Expiring: DeserializeOwned {
    fn exp(&self) -> u64;
}

impl Expiring for SessionClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

impl Expiring for ChannelClaims {
    fn exp(&self) -> u64 {
        self.exp
    }
}

/// The one header field checked: which algorithm signed the token.
#[derive(Deserialize)]
struct TokenHeader<'a> {
    #[serde(borrow)]
    alg: Cow<'a, str>,
}

fn malformed() -> TokenError {
    TokenError::Invalid("malformed token".into())
}

impl Auth {
    pub fn new(secret: &[u8], leeway: Duration) -> Self {
        // HMAC takes a key of any length.
        let key = Hmac::<Sha256>::new_from_slice(secret).expect("an HMAC key of any length");
        Self { key, leeway_s: leeway.as_secs(), encoding: EncodingKey::from_secret(secret) }
    }

    /// The configured secret, else the one kept in `data_dir` (created on first use, mode 0600).
    pub fn load(configured: Option<&str>, data_dir: &Path, leeway: Duration) -> std::io::Result<Self> {
        if let Some(secret) = configured {
            return Ok(Self::new(secret.as_bytes(), leeway));
        }
        let secret = load_or_create_secret(data_dir)?;
        Ok(Self::new(secret.as_bytes(), leeway))
    }

    pub fn verify_session(&self, token: &str) -> Result<SessionClaims, TokenError> {
        self.verify(token)
    }

    /// Checks a channel token against the session's user and the channel asked for.
    pub fn verify_channel(&self, token: &str, user: &UserId, channel: &ChannelName) -> Result<(), TokenError> {
        let claims: ChannelClaims = self.verify(token)?;
        if &claims.sub != user {
            return Err(TokenError::WrongUser);
        }
        if &claims.ch != channel {
            return Err(TokenError::WrongChannel);
        }
        Ok(())
    }

    pub fn mint_session(&self, claims: &SessionClaims) -> String {
        // Encoding claims made of strings and integers with an HMAC key cannot fail.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    pub fn mint_channel(&self, claims: &ChannelClaims) -> String {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding).unwrap_or_default()
    }

    /// The claims of a compact JWS `header.claims.signature`, checked in this order: the header
    /// names HS256, the signature is the secret's (compared in constant time), the claims parse
    /// (their content validated by their types; `sub` and `exp` required), and `exp` has not
    /// passed (give or take the leeway).
    fn verify<C: Expiring>(&self, token: &str) -> Result<C, TokenError> {
        let (signed, signature) = token.rsplit_once('.').ok_or_else(malformed)?;
        let (header, claims) = signed.split_once('.').ok_or_else(malformed)?;
        let header = URL_SAFE_NO_PAD.decode(header).map_err(|_| malformed())?;
        let header: TokenHeader<'_> = serde_json::from_slice(&header).map_err(|_| malformed())?;
        if header.alg != "HS256" {
            return Err(TokenError::Invalid("algorithm must be HS256".into()));
        }
        // An HS256 signature is 32 bytes; what does not decode into 64 is not one.
        let bad_signature = || TokenError::Invalid("bad signature".into());
        let mut signature_bytes = [0u8; 64];
        let length = URL_SAFE_NO_PAD.decode_slice(signature, &mut signature_bytes).map_err(|_| bad_signature())?;
        let mut mac = self.key.clone();
        mac.update(signed.as_bytes());
        mac.verify_slice(&signature_bytes[..length]).map_err(|_| bad_signature())?;
        let claims = URL_SAFE_NO_PAD.decode(claims).map_err(|_| malformed())?;
        let claims: C = serde_json::from_slice(&claims).map_err(|e| TokenError::Invalid(format!("bad claims: {e}")))?;
        let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        if claims.exp() < now.saturating_sub(self.leeway_s) {
            return Err(TokenError::Expired);
        }
        Ok(claims)
    }
}

fn secret_path(data_dir: &Path) -> PathBuf {
    data_dir.join(SECRET_FILE)
}

fn load_or_create_secret(data_dir: &Path) -> std::io::Result<String> {
    let path = secret_path(data_dir);
    match std::fs::read_to_string(&path) {
        Ok(s) if s.trim().len() >= 16 => return Ok(s.trim().to_owned()),
        Ok(_) => {
            return Err(std::io::Error::other(format!("{} holds a secret shorter than 16 bytes", path.display())));
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    std::fs::create_dir_all(data_dir)?;
    let mut raw = [0u8; 32];
    rand::rng().fill_bytes(&mut raw);
    let secret: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    match options.open(&path) {
        Ok(mut file) => {
            file.write_all(secret.as_bytes())?;
            file.sync_all()?;
            Ok(secret)
        }
        // Another process created it first: use theirs.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            Ok(std::fs::read_to_string(&path)?.trim().to_owned())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp: u64) -> SessionClaims {
        SessionClaims { sub: UserId::new("u1").unwrap(), exp, dev: None, chs: vec![] }
    }

    #[test]
    fn tokens_round_trip_and_expire() {
        let auth = Auth::new(b"0123456789abcdef0123", Duration::ZERO);
        let now = jsonwebtoken::get_current_timestamp();
        let token = auth.mint_session(&claims(now + 60));
        assert_eq!(auth.verify_session(&token).unwrap().sub.as_str(), "u1");
        assert_eq!(auth.verify_session(&auth.mint_session(&claims(now - 10))), Err(TokenError::Expired));
        let other = Auth::new(b"another secret 0123", Duration::ZERO);
        assert!(matches!(other.verify_session(&token), Err(TokenError::Invalid(_))));
        assert!(matches!(auth.verify_session("garbage"), Err(TokenError::Invalid(_))));
    }

    /// A token assembled from raw parts, signed (HS256) with `secret`.
    fn assembled(secret: &[u8], header: &str, claims: &str) -> String {
        let signed = format!("{}.{}", URL_SAFE_NO_PAD.encode(header), URL_SAFE_NO_PAD.encode(claims));
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).unwrap();
        mac.update(signed.as_bytes());
        format!("{signed}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
    }

    #[test]
    fn hostile_tokens_are_refused_with_the_reason() {
        const SECRET: &[u8] = b"0123456789abcdef0123";
        let auth = Auth::new(SECRET, Duration::from_secs(30));
        let now = jsonwebtoken::get_current_timestamp();
        let good =
            assembled(SECRET, r#"{"typ":"JWT","alg":"HS256"}"#, &format!(r#"{{"sub":"u1","exp":{}}}"#, now + 60));
        assert_eq!(auth.verify_session(&good).unwrap().sub.as_str(), "u1", "any field order, extra header fields");
        let invalid = |token: &str| match auth.verify_session(token) {
            Err(TokenError::Invalid(reason)) => reason,
            other => panic!("{token}: {other:?}"),
        };
        // Another algorithm, or none, whatever the signature.
        let claims = format!(r#"{{"sub":"u1","exp":{}}}"#, now + 60);
        assert_eq!(invalid(&assembled(SECRET, r#"{"alg":"none"}"#, &claims)), "algorithm must be HS256");
        let unsigned = format!("{}.{}.", URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#), URL_SAFE_NO_PAD.encode(&claims));
        assert_eq!(invalid(&unsigned), "algorithm must be HS256");
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &SessionClaims { sub: UserId::new("u1").unwrap(), exp: now + 60, dev: None, chs: vec![] },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(invalid(&hs512), "algorithm must be HS256");
        // Claims changed after signing; a signature cut short, empty, or of another secret.
        let (head, rest) = good.split_once('.').unwrap();
        let (_, signature) = rest.split_once('.').unwrap();
        let forged = format!("{head}.{}.{signature}", URL_SAFE_NO_PAD.encode(r#"{"sub":"admin","exp":9999999999}"#));
        assert_eq!(invalid(&forged), "bad signature");
        assert_eq!(invalid(&good[..good.len() - 2]), "bad signature");
        assert_eq!(invalid(&good[..good.rfind('.').unwrap() + 1]), "bad signature");
        assert_eq!(invalid(&assembled(b"another secret 0123", r#"{"alg":"HS256"}"#, &claims)), "bad signature");
        // Not a token at all.
        for garbage in ["", "garbage", "a.b", "a.b.c", "...", &format!("{good}=="), &good.replace('.', "!")] {
            assert!(auth.verify_session(garbage).is_err(), "{garbage:?}");
        }
        // Signed, but the claims are wrong: missing `exp` or `sub`, a malformed user id, not JSON.
        for claims in [
            r#"{"sub":"u1"}"#.to_owned(),
            format!(r#"{{"exp":{now}}}"#),
            format!(r#"{{"sub":"a b","exp":{now}}}"#),
            "[".into(),
        ] {
            let reason = invalid(&assembled(SECRET, r#"{"alg":"HS256"}"#, &claims));
            assert!(reason.starts_with("bad claims: "), "{claims}: {reason}");
        }
        // Expiry, with the leeway: 20 s past is accepted, 40 s past is not.
        let expired =
            |ago: u64| assembled(SECRET, r#"{"alg":"HS256"}"#, &format!(r#"{{"sub":"u1","exp":{}}}"#, now - ago));
        assert!(auth.verify_session(&expired(20)).is_ok());
        assert_eq!(auth.verify_session(&expired(40)), Err(TokenError::Expired));
    }

    #[test]
    fn channel_tokens_are_bound_to_user_and_channel() {
        let auth = Auth::new(b"0123456789abcdef0123", Duration::ZERO);
        let exp = jsonwebtoken::get_current_timestamp() + 60;
        let user = UserId::new("u1").unwrap();
        let ch = ChannelName::new("room:1").unwrap();
        let token = auth.mint_channel(&ChannelClaims { sub: user.clone(), ch: ch.clone(), exp });
        assert_eq!(auth.verify_channel(&token, &user, &ch), Ok(()));
        assert_eq!(auth.verify_channel(&token, &UserId::new("u2").unwrap(), &ch), Err(TokenError::WrongUser));
        assert_eq!(
            auth.verify_channel(&token, &user, &ChannelName::new("room:2").unwrap()),
            Err(TokenError::WrongChannel)
        );
    }

    #[test]
    fn the_generated_secret_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let a = Auth::load(None, dir.path(), Duration::ZERO).unwrap();
        let b = Auth::load(None, dir.path(), Duration::ZERO).unwrap();
        let token = a.mint_session(&claims(jsonwebtoken::get_current_timestamp() + 60));
        assert!(b.verify_session(&token).is_ok());
    }
}
