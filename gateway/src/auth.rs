//! Tokens: verifying session and channel JWTs (HS256, `exp` required) and minting them for the
//! `token` subcommand. In standalone mode the secret is generated once and kept in the data dir.

use std::{
    io::Write as _,
    path::{Path, PathBuf},
    time::Duration,
};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use pushgate_protocol::{ChannelClaims, ChannelName, SessionClaims, UserId};
use rand::RngCore as _;

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
pub struct Auth {
    decoding: DecodingKey,
    encoding: EncodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

impl Auth {
    pub fn new(secret: &[u8], leeway: Duration) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.leeway = leeway.as_secs();
        validation.validate_aud = false;
        Self { decoding: DecodingKey::from_secret(secret), encoding: EncodingKey::from_secret(secret), validation }
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
        jsonwebtoken::decode::<SessionClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(classify)
    }

    /// Checks a channel token against the session's user and the channel asked for.
    pub fn verify_channel(&self, token: &str, user: &UserId, channel: &ChannelName) -> Result<(), TokenError> {
        let claims = jsonwebtoken::decode::<ChannelClaims>(token, &self.decoding, &self.validation)
            .map(|data| data.claims)
            .map_err(classify)?;
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
}

fn classify(e: jsonwebtoken::errors::Error) -> TokenError {
    match e.kind() {
        ErrorKind::ExpiredSignature => TokenError::Expired,
        ErrorKind::InvalidSignature => TokenError::Invalid("bad signature".into()),
        ErrorKind::InvalidAlgorithm => TokenError::Invalid("algorithm must be HS256".into()),
        ErrorKind::MissingRequiredClaim(c) => TokenError::Invalid(format!("claim {c} is required")),
        ErrorKind::Json(err) => TokenError::Invalid(format!("bad claims: {err}")),
        _ => TokenError::Invalid("malformed token".into()),
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
