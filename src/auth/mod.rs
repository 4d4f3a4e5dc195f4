//! Who is calling: virtual keys (`sk-sg-…`, declared by hash) and JWT bearer tokens, checked
//! into one [`KeyRecord`] that the rest of the request path reads (team, user, allowed models,
//! limits).
//!
//! Owns: the key format and its hash ([`key`]), the per-shard snapshot of the key table
//! ([`table`]), JWT verification against a JWKS or an HS256 secret and a per-shard cache of
//! verified tokens ([`jwt`]), and the one error type, [`AuthError`].
//!
//! Does not: read files or the clock, talk to the network, store keys, count requests or
//! spend, or render errors. Callers read the JWKS and pass its text, pass `now` as unix
//! milliseconds and a [`ring::rand::SecureRandom`]; limits are enforced by `budget`, and
//! `http::respond` turns an [`AuthError`] into a 401.
//!
//! Key types: [`KeyHash`] (what configs and the table hold: never the key itself),
//! [`Secret`] (a new key, shown once), [`KeyRecord`], [`KeyTable`] with its [`Verdict`],
//! [`JwtVerifier`] and [`JwtCache`].
//!
//! Secrets never reach a message: no [`AuthError`] carries the presented key or token, and
//! [`Secret`] prints as `sk-sg-…****`.

pub mod admin_token;
pub mod jwt;
pub mod key;
pub mod table;

pub use jwt::{JwtCache, JwtConfig, JwtVerifier};
pub use key::{KeyHash, Secret};
pub use table::{KeyRecord, KeyTable, Verdict};

/// Why a caller was not authenticated, or why auth could not be set up. No variant carries
/// the presented key or token: the messages are safe to log and to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credential was presented.
    #[error("no API key or bearer token was presented")]
    Missing,
    /// Something was presented, but it is neither a virtual key nor a JWT.
    #[error("the credential is neither an API key nor a JWT")]
    Malformed,
    /// A well-formed virtual key that the table does not hold.
    #[error("unknown API key")]
    Unknown,
    /// A virtual key that has been revoked.
    #[error("the API key has been revoked")]
    Revoked,
    /// A virtual key or a token past its expiry.
    #[error("the credential has expired")]
    Expired,
    /// A JWT that failed verification; the reason names the check, never the token.
    #[error("invalid bearer token: {0}")]
    BadToken(String),
    /// Invalid auth configuration (a JWKS, a secret, a key hash, a duplicate key).
    #[error("auth config: {0}")]
    Config(String),
    /// The system random source failed.
    #[error("the random number generator failed")]
    Rng,
}

impl AuthError {
    /// A fixed, low-cardinality name for metrics labels and logs.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Unknown => "unknown",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::BadToken(_) => "bad_token",
            Self::Config(_) => "config",
            Self::Rng => "rng",
        }
    }
}

/// What a request presented, told apart by shape only (nothing is verified yet).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Credential<'a> {
    /// A virtual key (`sk-sg-…`): check it with [`KeyTable::check`].
    Key(&'a str),
    /// Three dot-separated parts: verify it with [`JwtVerifier::verify`].
    Jwt(&'a str),
}

/// The credential in an `Authorization` header value (`Bearer <key or token>`, the scheme
/// case-insensitive) or an `x-api-key` value (the bare key or token).
///
/// [`AuthError::Missing`] when there is none (no header, or an empty one);
/// [`AuthError::Malformed`] when it is neither a key nor a JWT, or uses another scheme.
pub fn credential(header: Option<&str>) -> Result<Credential<'_>, AuthError> {
    let value = header.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(AuthError::Missing);
    }
    if value.eq_ignore_ascii_case("bearer") {
        return Err(AuthError::Missing);
    }
    let presented = match value.split_once(' ') {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("bearer") => rest.trim(),
        Some(_) => return Err(AuthError::Malformed),
        None => value,
    };
    if presented.is_empty() {
        return Err(AuthError::Missing);
    }
    if key::looks_like_key(presented) {
        Ok(Credential::Key(presented))
    } else if jwt::looks_like_jwt(presented) {
        Ok(Credential::Jwt(presented))
    } else {
        Err(AuthError::Malformed)
    }
}

/// Lowercase hex of `bytes` (for key hashes and ids).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-sg-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";

    #[test]
    fn credential_tells_keys_from_tokens() {
        assert_eq!(
            credential(Some(&format!("Bearer {KEY}"))),
            Ok(Credential::Key(KEY))
        );
        assert_eq!(
            credential(Some(&format!("bearer  {KEY} "))),
            Ok(Credential::Key(KEY))
        );
        assert_eq!(credential(Some(KEY)), Ok(Credential::Key(KEY)));
        assert_eq!(
            credential(Some("Bearer aaa.bbb.ccc")),
            Ok(Credential::Jwt("aaa.bbb.ccc"))
        );
    }

    #[test]
    fn credential_refuses_missing_and_malformed() {
        assert_eq!(credential(None), Err(AuthError::Missing));
        assert_eq!(credential(Some("  ")), Err(AuthError::Missing));
        assert_eq!(credential(Some("Bearer ")), Err(AuthError::Missing));
        assert_eq!(
            credential(Some("Basic dXNlcjpwYXNz")),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            credential(Some("Bearer sk-sg-short")),
            Err(AuthError::Malformed)
        );
        assert_eq!(credential(Some("Bearer a.b")), Err(AuthError::Malformed));
    }

    #[test]
    fn hex_is_lowercase() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
    }
}
