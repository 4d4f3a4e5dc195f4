//! Virtual keys: `sk-sg-` followed by 32 random bytes in base64url (no padding), stored and
//! declared only as their SHA-256 ([`KeyHash`], written `sha256:<64 hex>`).
//!
//! Owns: the key format, generation from a caller's random source, hashing, and the public
//! key ids (`key_<16 hex>`). Does not: store keys or decide whether one is valid (that is
//! [`super::table`]).
//!
//! Key types: [`Secret`] (the key text, shown once), [`KeyHash`].
//!
//! A plain SHA-256 (no salt, no stretching) is enough here: the keys carry 256 random bits,
//! so there is nothing to brute-force, and the gateway must hash on every request.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::digest;
use ring::rand::SecureRandom;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::{AuthError, hex};

/// Every virtual key starts with this.
pub const PREFIX: &str = "sk-sg-";
/// Random bytes in a key.
pub const KEY_BYTES: usize = 32;
/// Length of a key's text: the prefix and 32 bytes in unpadded base64 (43 characters).
pub const KEY_LEN: usize = PREFIX.len() + (KEY_BYTES * 4).div_ceil(3);
/// Prefix of a [`KeyHash`]'s text form.
pub const HASH_PREFIX: &str = "sha256:";
/// Prefix of a key id.
pub const ID_PREFIX: &str = "key_";

/// A new key's text, to be shown once to whoever asked for it and then dropped: only its
/// [`KeyHash`] is kept. Prints as `sk-sg-…****`; [`Secret::expose`] gives the text.
#[derive(PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// The key itself: use only in the one answer that hands it out.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The key's hash, as the table and configs hold it.
    pub fn hash(&self) -> KeyHash {
        hash(&self.0)
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}…****")
    }
}

/// The SHA-256 of a key's text: what the table, configs and the admin API hold. Its text form
/// is `sha256:` and 64 lowercase hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyHash(pub [u8; 32]);

impl fmt::Display for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{HASH_PREFIX}{}", hex(&self.0))
    }
}

impl fmt::Debug for KeyHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for KeyHash {
    type Err = AuthError;

    /// Parses `sha256:<64 lowercase hex>`. The error does not quote the input: someone may
    /// have pasted a key where its hash belongs.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            AuthError::Config(format!(
                "a key hash is `{HASH_PREFIX}` followed by 64 lowercase hex digits"
            ))
        };
        let digits = s.strip_prefix(HASH_PREFIX).ok_or_else(bad)?.as_bytes();
        if digits.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let hi = hex_value(pair[0]).ok_or_else(bad)?;
            let lo = hex_value(pair[1]).ok_or_else(bad)?;
            *byte = (hi << 4) | lo;
        }
        Ok(Self(out))
    }
}

/// The value of one lowercase hex digit.
fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        _ => None,
    }
}

impl Serialize for KeyHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// A new virtual key and its hash. The random source is the caller's
/// (`ring::rand::SystemRandom` in the gateway).
pub fn generate(rng: &dyn SecureRandom) -> Result<(Secret, KeyHash), AuthError> {
    let mut bytes = [0u8; KEY_BYTES];
    rng.fill(&mut bytes).map_err(|_| AuthError::Rng)?;
    let mut text = String::with_capacity(KEY_LEN);
    text.push_str(PREFIX);
    URL_SAFE_NO_PAD.encode_string(bytes, &mut text);
    let secret = Secret(text);
    let digest = secret.hash();
    Ok((secret, digest))
}

/// The hash of a presented key (any text: nothing is checked here).
pub fn hash(presented: &str) -> KeyHash {
    let digest = digest::digest(&digest::SHA256, presented.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    KeyHash(out)
}

/// Has `s` the shape of a virtual key (prefix, length, base64url alphabet)? Tells a key from
/// a JWT; says nothing about whether the key exists.
pub fn looks_like_key(s: &str) -> bool {
    s.len() == KEY_LEN
        && s.strip_prefix(PREFIX).is_some_and(|rest| {
            rest.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// A new key id, `key_` and 16 lowercase hex digits: public, safe in logs and URLs.
pub fn new_id(rng: &dyn SecureRandom) -> Result<Arc<str>, AuthError> {
    let mut bytes = [0u8; 8];
    rng.fill(&mut bytes).map_err(|_| AuthError::Rng)?;
    Ok(format!("{ID_PREFIX}{}", hex(&bytes)).into())
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;

    #[test]
    fn generated_keys_have_the_format() {
        let rng = SystemRandom::new();
        let (secret, digest) = generate(&rng).unwrap();
        let text = secret.expose();
        assert_eq!(text.len(), KEY_LEN);
        assert_eq!(KEY_LEN, 49);
        assert!(text.starts_with(PREFIX));
        assert!(looks_like_key(text));
        assert_eq!(hash(text), digest);
        assert_eq!(secret.hash(), digest);
        let decoded = URL_SAFE_NO_PAD.decode(&text[PREFIX.len()..]).unwrap();
        assert_eq!(decoded.len(), KEY_BYTES);
        let (other, _) = generate(&rng).unwrap();
        assert_ne!(other.expose(), text);
    }

    #[test]
    fn looks_like_key_checks_prefix_length_and_alphabet() {
        let rng = SystemRandom::new();
        let (secret, _) = generate(&rng).unwrap();
        let text = secret.expose();
        assert!(!looks_like_key(&text[..KEY_LEN - 1]));
        assert!(!looks_like_key(&format!("{text}A")));
        assert!(!looks_like_key(&text.replacen(PREFIX, "sk-xx-", 1)));
        assert!(!looks_like_key(&format!("{PREFIX}{}", "=".repeat(43))));
        assert!(!looks_like_key("eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhIn0.sig"));
        assert!(!looks_like_key(""));
    }

    #[test]
    fn hash_is_sha256_of_the_text() {
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        assert_eq!(
            hash("abc").to_string(),
            "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn key_hash_text_round_trips() {
        let digest = hash("sk-sg-anything");
        let text = digest.to_string();
        assert!(text.starts_with(HASH_PREFIX));
        assert_eq!(text.len(), HASH_PREFIX.len() + 64);
        assert_eq!(text.parse::<KeyHash>().unwrap(), digest);
        assert_eq!(format!("{digest:?}"), text);
        let json = serde_json::to_string(&digest).unwrap();
        assert_eq!(json, format!("\"{text}\""));
        assert_eq!(serde_json::from_str::<KeyHash>(&json).unwrap(), digest);
    }

    #[test]
    fn key_hash_parse_is_strict_and_never_echoes() {
        let good = hash("x").to_string();
        let cases = [
            good.to_uppercase(),
            good.replace("sha256:", "sha1:"),
            good[..good.len() - 1].to_owned(),
            format!("{good}0"),
            good.replace("sha256:", ""),
            format!("{}g", &good[..good.len() - 1]),
            "sk-sg-AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA".to_owned(),
        ];
        for case in cases {
            let err = case.parse::<KeyHash>().unwrap_err();
            assert!(matches!(err, AuthError::Config(_)), "{case}");
            assert!(!err.to_string().contains(&case), "{err}");
        }
        assert!(serde_json::from_str::<KeyHash>("\"sha256:00\"").is_err());
    }

    #[test]
    fn secret_never_prints_the_key() {
        let (secret, _) = generate(&SystemRandom::new()).unwrap();
        let random_part = &secret.expose()[PREFIX.len()..];
        for shown in [format!("{secret:?}"), secret.to_string()] {
            assert_eq!(shown, "sk-sg-…****");
            assert!(!shown.contains(random_part));
        }
    }

    #[test]
    fn ids_are_public_hex() {
        let rng = SystemRandom::new();
        let id = new_id(&rng).unwrap();
        assert_eq!(id.len(), ID_PREFIX.len() + 16);
        assert!(id.starts_with(ID_PREFIX));
        assert!(
            id[ID_PREFIX.len()..]
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
        );
        assert_ne!(new_id(&rng).unwrap(), id);
    }
}
