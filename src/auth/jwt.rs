//! JWT bearer tokens: verified with `jsonwebtoken` against a JWKS (RS256, ES256) or an HS256
//! secret, and mapped to a [`KeyRecord`] so the rest of the request path treats a token like
//! a virtual key.
//!
//! Owns: [`JwtConfig`], key choice (by the token's `kid`), the accepted algorithms (RS256,
//! ES256, HS256; never `none`), the time checks (`exp`, `nbf`, against the caller's
//! `now_ms`), the claim mapping, and [`JwtCache`]. Does not: fetch or refresh the JWKS (the
//! caller passes its text), read the clock, or render errors.
//!
//! Key types: [`JwtConfig`], [`JwtVerifier`], [`JwtCache`].
//!
//! Algorithm confusion is ruled out by construction: each JWKS key is pinned to one algorithm
//! (RS256 or ES256) and only verifies tokens that name it, and HS256 uses the configured
//! secret and nothing else, so a public key can never serve as an HMAC secret.
//! `jsonwebtoken` checks `exp` and `nbf` against the system clock; those checks are off here
//! and done against `now_ms` instead.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hashbrown::HashMap;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Header, Validation};
use ring::digest;
use serde_json::{Map, Value};

use super::key::{self, KeyHash};
use super::table::KeyRecord;
use super::{AuthError, hex};

/// Default claim naming the caller's team.
pub const DEFAULT_TEAM_CLAIM: &str = "team";
/// Default claim naming the caller (the subject).
pub const DEFAULT_USER_CLAIM: &str = "sub";
/// Default clock skew allowed on `exp` and `nbf`, seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 60;
/// Shortest HS256 secret accepted: as long as the hash output (RFC 7518 §3.2).
pub const MIN_HS256_SECRET_BYTES: usize = 32;
/// Shortest RSA modulus accepted, bytes (2048 bits, as `ring` requires).
const MIN_RSA_MODULUS_BYTES: usize = 256;
/// Prefix of the id of a token's record.
pub const ID_PREFIX: &str = "jwt:";

/// How bearer tokens are verified and mapped. The caller reads the JWKS and the secret (from
/// files or the environment) and passes them in.
#[derive(Clone)]
pub struct JwtConfig {
    /// A JWKS document's text; its RS256 and ES256 signing keys are used. May be empty when
    /// only an HS256 secret is set.
    pub jwks_json: String,
    /// The HS256 secret (at least [`MIN_HS256_SECRET_BYTES`]); without it HS256 tokens are
    /// refused.
    pub hs256_secret: Option<Vec<u8>>,
    /// Required `iss`, when set.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's audiences), when set. When unset, `aud` is not
    /// checked.
    pub audience: Option<String>,
    /// Claim holding the team (default [`DEFAULT_TEAM_CLAIM`]).
    pub team_claim: String,
    /// Claim holding the user (default [`DEFAULT_USER_CLAIM`]).
    pub user_claim: String,
    /// Claim holding the allowed public model names (an array of strings). A token without
    /// the claim may call every model, as a key without a model list may.
    pub models_claim: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`, seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            jwks_json: String::new(),
            hs256_secret: None,
            issuer: None,
            audience: None,
            team_claim: DEFAULT_TEAM_CLAIM.to_owned(),
            user_claim: DEFAULT_USER_CLAIM.to_owned(),
            models_claim: None,
            leeway_secs: DEFAULT_LEEWAY_SECS,
        }
    }
}

impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("jwks_json_bytes", &self.jwks_json.len())
            .field("hs256_secret", &self.hs256_secret.as_ref().map(|_| "*****"))
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("team_claim", &self.team_claim)
            .field("user_claim", &self.user_claim)
            .field("models_claim", &self.models_claim)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// One JWKS key, pinned to the algorithm it verifies.
#[derive(Clone)]
struct VerifyingKey {
    /// The key's `kid`, if it has one.
    kid: Option<String>,
    /// RS256 or ES256.
    alg: Algorithm,
    /// The public key.
    key: DecodingKey,
}

/// Verifies bearer tokens. Built once per config (parsing the JWKS), then shared read-only.
#[derive(Clone)]
pub struct JwtVerifier {
    /// The JWKS's usable keys.
    keys: Vec<VerifyingKey>,
    /// The HS256 secret, if configured.
    hs256: Option<DecodingKey>,
    /// Signature, `iss` and `aud` checks for RS256 tokens.
    rs256: Validation,
    /// The same for ES256.
    es256: Validation,
    /// The same for HS256.
    hs256_validation: Validation,
    /// Claim holding the team.
    team_claim: String,
    /// Claim holding the user.
    user_claim: String,
    /// Claim holding the allowed models, if mapped.
    models_claim: Option<String>,
    /// `leeway_secs` in milliseconds.
    leeway_ms: u64,
}

impl fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("keys", &self.keys().collect::<Vec<_>>())
            .field("hs256", &self.hs256.is_some())
            .field("leeway_ms", &self.leeway_ms)
            .finish_non_exhaustive()
    }
}

/// A [`AuthError::BadToken`] with a fixed reason (never any part of the token).
fn bad(reason: &str) -> AuthError {
    AuthError::BadToken(reason.to_owned())
}

impl JwtVerifier {
    /// Parses the JWKS and checks the config. Keys marked `use: enc` and keys for other
    /// algorithms (RS384, PS256, EdDSA, `oct`, …) are skipped: they could never verify a token
    /// this verifier accepts. A key that cannot be parsed, a duplicate `kid`, a short secret,
    /// or no usable key at all is an [`AuthError::Config`].
    pub fn new(cfg: JwtConfig) -> Result<Self, AuthError> {
        let keys = parse_jwks(&cfg.jwks_json)?;
        let hs256 = match &cfg.hs256_secret {
            Some(secret) if secret.len() < MIN_HS256_SECRET_BYTES => {
                return Err(AuthError::Config(format!(
                    "the HS256 secret must be at least {MIN_HS256_SECRET_BYTES} bytes"
                )));
            }
            Some(secret) => Some(DecodingKey::from_secret(secret)),
            None => None,
        };
        if keys.is_empty() && hs256.is_none() {
            return Err(AuthError::Config(
                "no usable key: the JWKS has no RS256 or ES256 signing key and no HS256 secret is set"
                    .to_owned(),
            ));
        }
        for (what, name) in [("team", &cfg.team_claim), ("user", &cfg.user_claim)] {
            if name.is_empty() {
                return Err(AuthError::Config(format!("the {what} claim name is empty")));
            }
        }
        if cfg.models_claim.as_deref() == Some("") {
            return Err(AuthError::Config(
                "the models claim name is empty".to_owned(),
            ));
        }
        Ok(Self {
            keys,
            hs256,
            rs256: validation(Algorithm::RS256, &cfg),
            es256: validation(Algorithm::ES256, &cfg),
            hs256_validation: validation(Algorithm::HS256, &cfg),
            team_claim: cfg.team_claim,
            user_claim: cfg.user_claim,
            models_claim: cfg.models_claim,
            leeway_ms: cfg.leeway_secs.saturating_mul(1000),
        })
    }

    /// The keys in use: `(kid, algorithm)`, for a startup log line.
    pub fn keys(&self) -> impl Iterator<Item = (Option<&str>, &'static str)> {
        self.keys
            .iter()
            .map(|k| (k.kid.as_deref(), alg_name(k.alg)))
    }

    /// Verifies `token` at `now_ms` (unix milliseconds) and maps its claims to a record.
    ///
    /// The record's id is `jwt:` and the first 16 hex digits of SHA-256(`iss` NUL `sub`), so
    /// one subject keeps one id (and one budget) across tokens; its hash is the token's
    /// SHA-256; `expires_at_ms` is `exp`. `sub` and `exp` are required.
    pub fn verify(&self, token: &str, now_ms: u64) -> Result<Arc<KeyRecord>, AuthError> {
        self.verify_hashed(token, key::hash(token), now_ms)
    }

    /// [`JwtVerifier::verify`] with the token's hash already computed.
    fn verify_hashed(
        &self,
        token: &str,
        token_hash: KeyHash,
        now_ms: u64,
    ) -> Result<Arc<KeyRecord>, AuthError> {
        // `alg: none` (and any algorithm `jsonwebtoken` does not know) fails here: the header
        // does not parse.
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| bad("malformed header or algorithm not accepted"))?;
        let (key, validation) = self.key_for(&header)?;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, key, validation)
            .map_err(library_error)?
            .claims;

        let exp_ms = time_claim(&claims, "exp")?.ok_or_else(|| bad("missing claim `exp`"))?;
        if now_ms >= exp_ms.saturating_add(self.leeway_ms) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf_ms) = time_claim(&claims, "nbf")?
            && now_ms.saturating_add(self.leeway_ms) < nbf_ms
        {
            return Err(bad("not yet valid (`nbf`)"));
        }
        let sub = string_claim(&claims, "sub")?.ok_or_else(|| bad("missing claim `sub`"))?;
        let iss = string_claim(&claims, "iss")?;
        let mut record = KeyRecord::new(
            subject_id(iss.unwrap_or_default(), sub),
            sub,
            token_hash,
            time_claim(&claims, "iat")?.unwrap_or(now_ms),
        );
        record.team = string_claim(&claims, &self.team_claim)?.map(Arc::from);
        record.user = string_claim(&claims, &self.user_claim)?.map(Arc::from);
        if let Some(name) = &self.models_claim {
            record.models = models_claim(&claims, name)?;
        }
        record.expires_at_ms = Some(exp_ms);
        if let Some(iss) = iss {
            record.metadata.insert("iss".to_owned(), iss.to_owned());
        }
        Ok(Arc::new(record))
    }

    /// The key and checks for a token with this header.
    fn key_for(&self, header: &Header) -> Result<(&DecodingKey, &Validation), AuthError> {
        let validation = match header.alg {
            Algorithm::HS256 => {
                let secret = self
                    .hs256
                    .as_ref()
                    .ok_or_else(|| bad("HS256 tokens are not accepted"))?;
                return Ok((secret, &self.hs256_validation));
            }
            Algorithm::RS256 => &self.rs256,
            Algorithm::ES256 => &self.es256,
            _ => return Err(bad("algorithm not accepted")),
        };
        let alg = header.alg;
        if !self.keys.iter().any(|k| k.alg == alg) {
            return Err(bad("no key for the token's algorithm"));
        }
        let found = match header.kid.as_deref() {
            Some(kid) => match self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)) {
                Some(k) if k.alg != alg => {
                    return Err(bad("the token's algorithm does not match its key"));
                }
                Some(k) => k,
                // A JWKS whose only key for this algorithm has no kid: that key.
                None => self
                    .only_key(alg)
                    .filter(|k| k.kid.is_none())
                    .ok_or_else(|| bad("unknown key id"))?,
            },
            None => self
                .only_key(alg)
                .ok_or_else(|| bad("no key id, and several keys could match"))?,
        };
        Ok((&found.key, validation))
    }

    /// The one key for `alg`, if there is exactly one.
    fn only_key(&self, alg: Algorithm) -> Option<&VerifyingKey> {
        let mut matching = self.keys.iter().filter(|k| k.alg == alg);
        let first = matching.next()?;
        matching.next().is_none().then_some(first)
    }
}

/// The signature, `iss` and `aud` checks for one algorithm. `exp` and `nbf` (presence, type
/// and value against `now_ms`) are checked in [`JwtVerifier::verify`].
fn validation(alg: Algorithm, cfg: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    v.validate_exp = false;
    v.validate_nbf = false;
    v.leeway = 0;
    v.required_spec_claims = HashSet::new();
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        v.required_spec_claims.insert("iss".to_owned());
    }
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(&[aud]);
            v.required_spec_claims.insert("aud".to_owned());
            v.validate_aud = true;
        }
        None => v.validate_aud = false,
    }
    v
}

/// The usable keys of a JWKS document (see [`JwtVerifier::new`]).
fn parse_jwks(text: &str) -> Result<Vec<VerifyingKey>, AuthError> {
    if text.trim().is_empty() {
        return Ok(Vec::new());
    }
    let doc: Value = serde_json::from_str(text)
        .map_err(|e| AuthError::Config(format!("the JWKS is not valid JSON: {e}")))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| AuthError::Config("the JWKS has no `keys` array".to_owned()))?;
    let mut keys: Vec<VerifyingKey> = Vec::with_capacity(entries.len());
    for (i, entry) in entries.iter().enumerate() {
        let name = match entry.get("kid").and_then(Value::as_str) {
            Some(kid) => format!("JWKS key `{kid}`"),
            None => format!("JWKS key #{i}"),
        };
        if entry.get("use").and_then(Value::as_str) == Some("enc") {
            continue;
        }
        let Ok(jwk) = serde_json::from_value::<Jwk>(entry.clone()) else {
            // Unknown `kty` or `alg` values: a key for something this verifier never accepts,
            // or a broken one. Tell them apart by what the entry claims to be.
            let kty = entry.get("kty").and_then(Value::as_str);
            let alg = entry.get("alg").and_then(Value::as_str);
            if matches!(kty, Some("RSA" | "EC")) && matches!(alg, None | Some("RS256" | "ES256")) {
                return Err(AuthError::Config(format!("{name} cannot be parsed")));
            }
            continue;
        };
        if matches!(jwk.common.public_key_use, Some(PublicKeyUse::Encryption)) {
            continue;
        }
        let Some(alg) = key_algorithm(&jwk, &name)? else {
            continue;
        };
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|_| AuthError::Config(format!("{name}: invalid key material")))?;
        let kid = jwk.common.key_id;
        if kid.is_some() && keys.iter().any(|k| k.kid == kid) {
            return Err(AuthError::Config(format!("{name}: duplicate kid")));
        }
        keys.push(VerifyingKey { kid, alg, key });
    }
    Ok(keys)
}

/// The algorithm a JWKS key verifies: RS256 or ES256, `None` for a key of another kind.
/// Checks the key's size, so a weak or broken key fails at startup, not on every request.
fn key_algorithm(jwk: &Jwk, name: &str) -> Result<Option<Algorithm>, AuthError> {
    let declared = jwk.common.key_algorithm;
    match &jwk.algorithm {
        AlgorithmParameters::RSA(params) => {
            match declared {
                None | Some(KeyAlgorithm::RS256) => {}
                Some(KeyAlgorithm::ES256) => {
                    return Err(AuthError::Config(format!(
                        "{name}: `alg` ES256 on an RSA key"
                    )));
                }
                Some(_) => return Ok(None),
            }
            let modulus = URL_SAFE_NO_PAD
                .decode(params.n.trim_end_matches('='))
                .map_err(|_| AuthError::Config(format!("{name}: invalid modulus")))?;
            let significant = modulus.iter().skip_while(|b| **b == 0).count();
            if significant < MIN_RSA_MODULUS_BYTES {
                return Err(AuthError::Config(format!(
                    "{name}: RSA modulus shorter than 2048 bits"
                )));
            }
            Ok(Some(Algorithm::RS256))
        }
        AlgorithmParameters::EllipticCurve(params) => {
            match declared {
                None | Some(KeyAlgorithm::ES256) => {}
                Some(KeyAlgorithm::RS256) => {
                    return Err(AuthError::Config(format!(
                        "{name}: `alg` RS256 on an EC key"
                    )));
                }
                Some(_) => return Ok(None),
            }
            if params.curve != EllipticCurve::P256 {
                return Ok(None);
            }
            for coordinate in [&params.x, &params.y] {
                let bytes = URL_SAFE_NO_PAD
                    .decode(coordinate.trim_end_matches('='))
                    .map_err(|_| AuthError::Config(format!("{name}: invalid coordinate")))?;
                if bytes.len() != 32 {
                    return Err(AuthError::Config(format!(
                        "{name}: a P-256 coordinate is 32 bytes"
                    )));
                }
            }
            Ok(Some(Algorithm::ES256))
        }
        // HMAC keys in a JWKS and EdDSA keys are not accepted.
        AlgorithmParameters::OctetKey(_) | AlgorithmParameters::OctetKeyPair(_) => Ok(None),
    }
}

/// The name of an accepted algorithm.
fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::RS256 => "RS256",
        Algorithm::ES256 => "ES256",
        Algorithm::HS256 => "HS256",
        _ => "other",
    }
}

/// A `jsonwebtoken` error as a fixed reason. Its own text is not used: it may quote claims.
fn library_error(e: jsonwebtoken::errors::Error) -> AuthError {
    use jsonwebtoken::errors::ErrorKind;
    let reason = match e.kind() {
        ErrorKind::InvalidSignature => "bad signature",
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::InvalidAlgorithmName => "algorithm not accepted",
        ErrorKind::InvalidIssuer => "issuer mismatch",
        ErrorKind::InvalidAudience => "audience mismatch",
        ErrorKind::MissingRequiredClaim(claim) => match claim.as_str() {
            "exp" => "missing claim `exp`",
            "iss" => "missing claim `iss`",
            "aud" => "missing claim `aud`",
            _ => "missing a required claim",
        },
        ErrorKind::ExpiredSignature => return AuthError::Expired,
        ErrorKind::ImmatureSignature => "not yet valid (`nbf`)",
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Crypto(_) => "the signature does not verify with the key",
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => "malformed token",
        _ => "invalid token",
    };
    bad(reason)
}

/// A NumericDate claim (seconds, integer or not) as unix milliseconds.
fn time_claim(claims: &Map<String, Value>, name: &str) -> Result<Option<u64>, AuthError> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    let not_a_date = || AuthError::BadToken(format!("claim `{name}` is not a NumericDate"));
    let number = value.as_number().ok_or_else(not_a_date)?;
    if let Some(secs) = number.as_u64() {
        return Ok(Some(secs.saturating_mul(1000)));
    }
    match number.as_f64() {
        // `as` saturates: a date past u64 milliseconds is "never".
        Some(secs) if secs.is_finite() && secs >= 0.0 => Ok(Some((secs * 1000.0) as u64)),
        _ => Err(not_a_date()),
    }
}

/// A string claim; a claim of another type is an error (its value is not quoted).
fn string_claim<'c>(
    claims: &'c Map<String, Value>,
    name: &str,
) -> Result<Option<&'c str>, AuthError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(AuthError::BadToken(format!(
            "claim `{name}` is not a string"
        ))),
    }
}

/// The allowed models: an array of strings, or `None` (every model) when absent.
fn models_claim(
    claims: &Map<String, Value>,
    name: &str,
) -> Result<Option<Vec<Arc<str>>>, AuthError> {
    let wrong = || AuthError::BadToken(format!("claim `{name}` is not an array of strings"));
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| item.as_str().map(Arc::from).ok_or_else(wrong))
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(wrong()),
    }
}

/// `jwt:` and the first 16 hex digits of SHA-256(`iss` NUL `sub`).
fn subject_id(iss: &str, sub: &str) -> String {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(iss.as_bytes());
    ctx.update(b"\0");
    ctx.update(sub.as_bytes());
    let digest = ctx.finish();
    let hash = digest.as_ref();
    format!("{ID_PREFIX}{}", hex(&hash[..8]))
}

/// Has `s` the shape of a JWT (three dot-separated base64url parts; the last may be empty,
/// so an unsigned token reaches the verifier and is refused with a reason)?
pub fn looks_like_jwt(s: &str) -> bool {
    let mut parts = s.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let b64url = |p: &str| {
        p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    !header.is_empty()
        && !payload.is_empty()
        && b64url(header)
        && b64url(payload)
        && b64url(signature)
}

/// Verified tokens, by the token's SHA-256, until their `exp`: a repeated token costs one
/// hash and one lookup instead of a signature check. Bounded: when full, expired entries go
/// first, then an arbitrary one. One per shard; build a new one (or [`JwtCache::clear`]) when
/// the verifier's config changes, since entries outlive the keys that verified them.
#[derive(Debug, Clone, Default)]
pub struct JwtCache {
    /// Most entries held.
    capacity: usize,
    /// Token hash → (record, `exp` in unix milliseconds).
    entries: HashMap<KeyHash, (Arc<KeyRecord>, u64)>,
}

impl JwtCache {
    /// An empty cache holding at most `capacity` tokens (0 caches nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            entries: HashMap::with_capacity(capacity),
        }
    }

    /// The record of a cached token that has not expired at `now_ms`.
    pub fn get(&self, token: &str, now_ms: u64) -> Option<&Arc<KeyRecord>> {
        self.get_hashed(&key::hash(token), now_ms)
    }

    /// [`JwtCache::get`] by the token's hash.
    fn get_hashed(&self, token_hash: &KeyHash, now_ms: u64) -> Option<&Arc<KeyRecord>> {
        self.entries
            .get(token_hash)
            .filter(|(_, exp_ms)| now_ms < *exp_ms)
            .map(|(record, _)| record)
    }

    /// Caches a verified token's record until `exp_ms`. A token already expired at `now_ms`
    /// is not cached.
    pub fn insert(&mut self, token: &str, record: Arc<KeyRecord>, exp_ms: u64, now_ms: u64) {
        self.insert_hashed(key::hash(token), record, exp_ms, now_ms);
    }

    /// [`JwtCache::insert`] by the token's hash.
    fn insert_hashed(
        &mut self,
        token_hash: KeyHash,
        record: Arc<KeyRecord>,
        exp_ms: u64,
        now_ms: u64,
    ) {
        if self.capacity == 0 || exp_ms <= now_ms {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&token_hash) {
            self.entries.retain(|_, (_, exp)| now_ms < *exp);
            if self.entries.len() >= self.capacity
                && let Some(victim) = self.entries.keys().next().copied()
            {
                self.entries.remove(&victim);
            }
        }
        self.entries.insert(token_hash, (record, exp_ms));
    }

    /// The cached record, or the token verified (and cached on success): the token is hashed
    /// once either way.
    pub fn get_or_verify(
        &mut self,
        verifier: &JwtVerifier,
        token: &str,
        now_ms: u64,
    ) -> Result<Arc<KeyRecord>, AuthError> {
        let token_hash = key::hash(token);
        if let Some(record) = self.get_hashed(&token_hash, now_ms) {
            return Ok(record.clone());
        }
        let record = verifier.verify_hashed(token, token_hash, now_ms)?;
        if let Some(exp_ms) = record.expires_at_ms {
            self.insert_hashed(token_hash, record.clone(), exp_ms, now_ms);
        }
        Ok(record)
    }

    /// How many tokens are cached (expired ones included until evicted).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Is nothing cached?
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Drops every entry (after a change of keys or config).
    pub fn clear(&mut self) {
        self.entries.clear();
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::EncodingKey;
    use serde_json::json;

    use super::*;

    const NOW_MS: u64 = 1_700_000_000_000;
    const NOW: u64 = NOW_MS / 1000;
    const ISS: &str = "https://idp.example";
    const AUD: &str = "shardgate";
    const SECRET: &[u8] = b"an-hs256-test-secret-of-32-bytes!";

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/fixtures/jwt/",
                $name
            ))
        };
    }

    const JWKS: &[u8] = fixture!("jwks.json");
    const RS_KEY: &[u8] = fixture!("rs256.key.pem");
    const ES_KEY: &[u8] = fixture!("es256.key.pem");
    const OTHER_KEY: &[u8] = fixture!("other_rs256.key.pem");
    const RS_PUB: &[u8] = fixture!("rs256.pub.pem");

    fn jwks() -> String {
        String::from_utf8(JWKS.to_vec()).unwrap()
    }

    fn config() -> JwtConfig {
        JwtConfig {
            jwks_json: jwks(),
            issuer: Some(ISS.to_owned()),
            audience: Some(AUD.to_owned()),
            models_claim: Some("models".to_owned()),
            leeway_secs: 0,
            ..JwtConfig::default()
        }
    }

    fn verifier() -> JwtVerifier {
        JwtVerifier::new(config()).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": ISS,
            "aud": AUD,
            "sub": "ana",
            "team": "research",
            "models": ["gpt-4o", "claude"],
            "iat": NOW - 10,
            "exp": NOW + 600,
        })
    }

    fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
        let mut header = Header::new(alg);
        header.kid = kid.map(str::to_owned);
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn rs_key() -> EncodingKey {
        EncodingKey::from_rsa_pem(RS_KEY).unwrap()
    }

    fn rs(claims: &Value) -> String {
        sign(Algorithm::RS256, Some("rs-1"), &rs_key(), claims)
    }

    fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// A token refused with a reason containing `reason`, whose message and Debug hold no
    /// part of the token.
    #[track_caller]
    fn assert_refused(verifier: &JwtVerifier, token: &str, now_ms: u64, reason: &str) {
        let err = verifier.verify(token, now_ms).unwrap_err();
        assert!(
            matches!(&err, AuthError::BadToken(r) if r.contains(reason)),
            "wanted `{reason}`, got {err:?}"
        );
        assert_no_token_in(&err, token);
    }

    #[track_caller]
    fn assert_no_token_in(err: &AuthError, token: &str) {
        for shown in [err.to_string(), format!("{err:?}")] {
            assert!(!shown.contains(token), "{shown}");
            for part in token.split('.').filter(|p| p.len() >= 8) {
                assert!(!shown.contains(part), "{shown}");
            }
        }
    }

    #[test]
    fn rs256_token_maps_claims() {
        let token = rs(&claims());
        let record = verifier().verify(&token, NOW_MS).unwrap();
        assert_eq!(record.team.as_deref(), Some("research"));
        assert_eq!(record.user.as_deref(), Some("ana"));
        assert_eq!(record.name.as_ref(), "ana");
        assert_eq!(
            record.models.as_deref(),
            Some(&[Arc::from("gpt-4o"), Arc::from("claude")][..])
        );
        assert!(record.allows("claude"));
        assert!(!record.allows("gpt-4o-mini"));
        assert_eq!(record.expires_at_ms, Some((NOW + 600) * 1000));
        assert_eq!(record.created_at_ms, (NOW - 10) * 1000);
        assert_eq!(record.hash, key::hash(&token));
        assert_eq!(record.metadata.get("iss").map(String::as_str), Some(ISS));
        assert!(!record.revoked);

        // id = "jwt:" + first 16 hex of sha256(iss NUL sub).
        let digest = digest::digest(&digest::SHA256, format!("{ISS}\0ana").as_bytes());
        assert_eq!(&*record.id, format!("jwt:{}", &hex(digest.as_ref())[..16]));
        // One subject, one id, whatever the token.
        let mut later = claims();
        later["exp"] = json!(NOW + 900);
        let again = verifier().verify(&rs(&later), NOW_MS).unwrap();
        assert_eq!(again.id, record.id);
        assert_ne!(again.hash, record.hash);
    }

    #[test]
    fn es256_token_verifies() {
        let es = EncodingKey::from_ec_pem(ES_KEY).unwrap();
        let token = sign(Algorithm::ES256, Some("es-1"), &es, &claims());
        let record = verifier().verify(&token, NOW_MS).unwrap();
        assert_eq!(record.user.as_deref(), Some("ana"));
        // The RSA key's kid on an ES256 token: refused, whoever signed it.
        let token = sign(Algorithm::ES256, Some("rs-1"), &es, &claims());
        assert_refused(&verifier(), &token, NOW_MS, "does not match its key");
    }

    #[test]
    fn configured_claim_names() {
        let cfg = JwtConfig {
            team_claim: "org".to_owned(),
            user_claim: "email".to_owned(),
            models_claim: None,
            ..config()
        };
        let mut c = claims();
        c["org"] = json!("acme");
        c["email"] = json!("ana@acme.example");
        let record = JwtVerifier::new(cfg)
            .unwrap()
            .verify(&rs(&c), NOW_MS)
            .unwrap();
        assert_eq!(record.team.as_deref(), Some("acme"));
        assert_eq!(record.user.as_deref(), Some("ana@acme.example"));
        assert_eq!(record.models, None);

        // Absent claims: no team, no user, every model.
        let bare = json!({"iss": ISS, "aud": AUD, "sub": "svc", "exp": NOW + 60});
        let record = verifier().verify(&rs(&bare), NOW_MS).unwrap();
        assert_eq!(record.team, None);
        assert_eq!(record.user.as_deref(), Some("svc"));
        assert_eq!(record.models, None);
        assert!(record.allows("anything"));
        assert_eq!(record.created_at_ms, NOW_MS);
    }

    #[test]
    fn claims_of_the_wrong_type_are_refused() {
        let v = verifier();
        for (claim, value, reason) in [
            ("team", json!(7), "claim `team` is not a string"),
            ("team", json!({"a": 1}), "claim `team` is not a string"),
            // `jsonwebtoken` reads `sub` itself and fails on a non-string.
            ("sub", json!(["a"]), "malformed token"),
            (
                "models",
                json!("gpt-4o"),
                "claim `models` is not an array of strings",
            ),
            (
                "models",
                json!(["gpt-4o", 3]),
                "claim `models` is not an array of strings",
            ),
            ("exp", json!("soon"), "claim `exp` is not a NumericDate"),
            ("nbf", json!(-5), "claim `nbf` is not a NumericDate"),
        ] {
            let mut c = claims();
            c[claim] = value;
            assert_refused(&v, &rs(&c), NOW_MS, reason);
        }
        let mut c = claims();
        c.as_object_mut().unwrap().remove("sub");
        assert_refused(&v, &rs(&c), NOW_MS, "missing claim `sub`");
    }

    #[test]
    fn hs256_with_a_secret() {
        let cfg = JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            ..config()
        };
        let v = JwtVerifier::new(cfg).unwrap();
        let token = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(SECRET),
            &claims(),
        );
        assert_eq!(
            v.verify(&token, NOW_MS).unwrap().user.as_deref(),
            Some("ana")
        );

        // Another secret, or the RSA public key used as an HMAC secret: bad signature.
        let wrong = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(b"another-secret-of-at-least-32-bytes"),
            &claims(),
        );
        assert_refused(&v, &wrong, NOW_MS, "bad signature");
        let confused = sign(
            Algorithm::HS256,
            Some("rs-1"),
            &EncodingKey::from_secret(RS_PUB),
            &claims(),
        );
        assert_refused(&v, &confused, NOW_MS, "bad signature");

        // HS384/HS512 are not accepted even with the secret.
        let hs512 = sign(
            Algorithm::HS512,
            None,
            &EncodingKey::from_secret(SECRET),
            &claims(),
        );
        assert_refused(&v, &hs512, NOW_MS, "algorithm not accepted");
    }

    #[test]
    fn hs256_refused_without_a_secret() {
        let v = verifier();
        for secret in [SECRET, RS_PUB] {
            let token = sign(
                Algorithm::HS256,
                Some("rs-1"),
                &EncodingKey::from_secret(secret),
                &claims(),
            );
            assert_refused(&v, &token, NOW_MS, "HS256 tokens are not accepted");
        }
    }

    #[test]
    fn hs256_only_config() {
        let cfg = JwtConfig {
            jwks_json: String::new(),
            hs256_secret: Some(SECRET.to_vec()),
            ..config()
        };
        let v = JwtVerifier::new(cfg).unwrap();
        assert_eq!(v.keys().count(), 0);
        let token = sign(
            Algorithm::HS256,
            None,
            &EncodingKey::from_secret(SECRET),
            &claims(),
        );
        assert!(v.verify(&token, NOW_MS).is_ok());
        assert_refused(
            &v,
            &rs(&claims()),
            NOW_MS,
            "no key for the token's algorithm",
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let payload = b64(&claims().to_string());
        let v = verifier();
        for header in [
            r#"{"alg":"none","typ":"JWT"}"#,
            r#"{"alg":"None"}"#,
            r#"{"alg":"none","kid":"rs-1"}"#,
        ] {
            let token = format!("{}.{payload}.", b64(header));
            assert!(looks_like_jwt(&token));
            assert_refused(&v, &token, NOW_MS, "algorithm not accepted");
            // With a signature borrowed from a real token, too.
            let real = rs(&claims());
            let signature = real.rsplit('.').next().unwrap();
            let token = format!("{}.{payload}.{signature}", b64(header));
            assert_refused(&v, &token, NOW_MS, "algorithm not accepted");
        }
    }

    #[test]
    fn a_token_signed_by_another_key_is_refused() {
        let other = EncodingKey::from_rsa_pem(OTHER_KEY).unwrap();
        let v = verifier();
        for kid in [Some("rs-1"), None] {
            let token = sign(Algorithm::RS256, kid, &other, &claims());
            assert_refused(&v, &token, NOW_MS, "bad signature");
        }
        // A valid token with its claims changed after signing.
        let token = rs(&claims());
        let mut parts: Vec<&str> = token.split('.').collect();
        let mut forged_claims = claims();
        forged_claims["team"] = json!("admins");
        let forged = b64(&forged_claims.to_string());
        parts[1] = &forged;
        assert_refused(&v, &parts.join("."), NOW_MS, "bad signature");
    }

    #[test]
    fn key_choice_by_kid() {
        let v = verifier();
        assert_refused(
            &v,
            &sign(Algorithm::RS256, Some("rs-9"), &rs_key(), &claims()),
            NOW_MS,
            "unknown key id",
        );
        assert_refused(
            &v,
            &sign(Algorithm::RS256, Some("es-1"), &rs_key(), &claims()),
            NOW_MS,
            "does not match its key",
        );
        // One RS256 key in the set: a token without kid uses it.
        assert!(
            v.verify(&sign(Algorithm::RS256, None, &rs_key(), &claims()), NOW_MS)
                .is_ok()
        );

        // Two RS256 keys: the kid picks; no kid is ambiguous.
        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        let mut twin = doc["keys"][0].clone();
        twin["kid"] = json!("rs-2");
        doc["keys"].as_array_mut().unwrap().push(twin);
        let two = JwtVerifier::new(JwtConfig {
            jwks_json: doc.to_string(),
            ..config()
        })
        .unwrap();
        assert!(
            two.verify(
                &sign(Algorithm::RS256, Some("rs-2"), &rs_key(), &claims()),
                NOW_MS
            )
            .is_ok()
        );
        assert_refused(
            &two,
            &sign(Algorithm::RS256, None, &rs_key(), &claims()),
            NOW_MS,
            "several keys",
        );

        // A set whose only RS256 key has no kid: any kid finds it.
        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        doc["keys"][0].as_object_mut().unwrap().remove("kid");
        let keyless = JwtVerifier::new(JwtConfig {
            jwks_json: doc.to_string(),
            ..config()
        })
        .unwrap();
        assert!(
            keyless
                .verify(
                    &sign(Algorithm::RS256, Some("x"), &rs_key(), &claims()),
                    NOW_MS
                )
                .is_ok()
        );
    }

    #[test]
    fn exp_and_nbf_against_the_given_now_with_leeway() {
        let strict = verifier();
        let lenient = JwtVerifier::new(JwtConfig {
            leeway_secs: 30,
            ..config()
        })
        .unwrap();

        let mut c = claims();
        c["exp"] = json!(NOW + 1);
        let token = rs(&c);
        assert!(strict.verify(&token, NOW_MS + 999).is_ok());
        let err = strict.verify(&token, NOW_MS + 1000).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_no_token_in(&err, &token);
        assert!(lenient.verify(&token, NOW_MS + 30_999).is_ok());
        assert_eq!(
            lenient.verify(&token, NOW_MS + 31_000).unwrap_err(),
            AuthError::Expired
        );

        let mut c = claims();
        c["nbf"] = json!(NOW + 20);
        let token = rs(&c);
        assert_refused(&strict, &token, NOW_MS, "not yet valid");
        assert!(strict.verify(&token, NOW_MS + 20_000).is_ok());
        assert!(lenient.verify(&token, NOW_MS).is_ok());

        // Fractional NumericDates are accepted.
        let mut c = claims();
        c["exp"] = json!(NOW as f64 + 0.5);
        let token = rs(&c);
        assert!(strict.verify(&token, NOW_MS + 499).is_ok());
        assert_eq!(
            strict.verify(&token, NOW_MS + 500).unwrap_err(),
            AuthError::Expired
        );

        // exp is required.
        let mut c = claims();
        c.as_object_mut().unwrap().remove("exp");
        assert_refused(&strict, &rs(&c), NOW_MS, "missing claim `exp`");
    }

    #[test]
    fn issuer_and_audience() {
        let v = verifier();
        for (claim, value, reason) in [
            ("iss", json!("https://evil.example"), "issuer mismatch"),
            ("aud", json!("someone-else"), "audience mismatch"),
            ("aud", json!(["a", "b"]), "audience mismatch"),
        ] {
            let mut c = claims();
            c[claim] = value;
            assert_refused(&v, &rs(&c), NOW_MS, reason);
        }
        for (claim, reason) in [
            ("iss", "missing claim `iss`"),
            ("aud", "missing claim `aud`"),
        ] {
            let mut c = claims();
            c.as_object_mut().unwrap().remove(claim);
            assert_refused(&v, &rs(&c), NOW_MS, reason);
        }
        // One of several audiences is enough.
        let mut c = claims();
        c["aud"] = json!(["other", AUD]);
        assert!(v.verify(&rs(&c), NOW_MS).is_ok());

        // Neither configured: neither checked.
        let open = JwtVerifier::new(JwtConfig {
            issuer: None,
            audience: None,
            ..config()
        })
        .unwrap();
        let mut c = claims();
        c["iss"] = json!("anyone");
        c["aud"] = json!("anything");
        assert!(open.verify(&rs(&c), NOW_MS).is_ok());
        let mut c = claims();
        c.as_object_mut().unwrap().remove("iss");
        c.as_object_mut().unwrap().remove("aud");
        let record = open.verify(&rs(&c), NOW_MS).unwrap();
        // No issuer: the id hashes "" NUL sub.
        let digest = digest::digest(&digest::SHA256, b"\0ana");
        assert_eq!(&*record.id, format!("jwt:{}", &hex(digest.as_ref())[..16]));
    }

    #[test]
    fn malformed_tokens() {
        let v = verifier();
        let token = rs(&claims());
        let (head, _) = token.split_once('.').unwrap();
        for bad_token in [
            "a.b.c".to_owned(),
            format!("{head}.!!!.sig"),
            format!("{head}.{}.c2ln", b64("[1,2]")),
            token.replacen('.', "", 1),
        ] {
            let err = v.verify(&bad_token, NOW_MS).unwrap_err();
            assert!(matches!(err, AuthError::BadToken(_)), "{err:?}");
            assert_no_token_in(&err, &bad_token);
        }
        assert!(looks_like_jwt(&token));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt(".b.c"));
        assert!(!looks_like_jwt("a b.c.d"));
    }

    #[test]
    fn config_is_checked() {
        let err = |cfg: JwtConfig| JwtVerifier::new(cfg).unwrap_err();
        let config_error = |e: AuthError, needle: &str| {
            assert!(
                matches!(&e, AuthError::Config(m) if m.contains(needle)),
                "{e:?}"
            );
        };
        config_error(
            err(JwtConfig {
                jwks_json: String::new(),
                ..config()
            }),
            "no usable key",
        );
        config_error(
            err(JwtConfig {
                jwks_json: "{".to_owned(),
                ..config()
            }),
            "not valid JSON",
        );
        config_error(
            err(JwtConfig {
                jwks_json: "{}".to_owned(),
                ..config()
            }),
            "no `keys` array",
        );
        let short = err(JwtConfig {
            hs256_secret: Some(b"short".to_vec()),
            ..config()
        });
        config_error(short.clone(), "at least 32 bytes");
        assert!(!short.to_string().contains("short\""));
        config_error(
            err(JwtConfig {
                team_claim: String::new(),
                ..config()
            }),
            "team claim name is empty",
        );

        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        let dup = doc["keys"][0].clone();
        doc["keys"].as_array_mut().unwrap().push(dup);
        config_error(
            err(JwtConfig {
                jwks_json: doc.to_string(),
                ..config()
            }),
            "duplicate kid",
        );

        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        doc["keys"][0]["n"] = json!("AQAB");
        config_error(
            err(JwtConfig {
                jwks_json: doc.to_string(),
                ..config()
            }),
            "shorter than 2048 bits",
        );

        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        doc["keys"][1]["alg"] = json!("RS256");
        config_error(
            err(JwtConfig {
                jwks_json: doc.to_string(),
                ..config()
            }),
            "`alg` RS256 on an EC key",
        );

        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        doc["keys"][1]["x"] = json!("AAAA");
        config_error(
            err(JwtConfig {
                jwks_json: doc.to_string(),
                ..config()
            }),
            "32 bytes",
        );
    }

    #[test]
    fn keys_of_other_kinds_are_skipped() {
        let mut doc: Value = serde_json::from_str(&jwks()).unwrap();
        let keys = doc["keys"].as_array_mut().unwrap();
        let mut enc = keys[0].clone();
        enc["kid"] = json!("enc-1");
        enc["use"] = json!("enc");
        enc["alg"] = json!("RSA-OAEP");
        let mut rs384 = keys[0].clone();
        rs384["kid"] = json!("rs-384");
        rs384["alg"] = json!("RS384");
        keys.push(enc);
        keys.push(rs384);
        keys.push(json!({"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"}));
        keys.push(json!({"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": "AAAA"}));
        let v = JwtVerifier::new(JwtConfig {
            jwks_json: doc.to_string(),
            ..config()
        })
        .unwrap();
        let mut kept: Vec<_> = v.keys().collect();
        kept.sort();
        assert_eq!(kept, [(Some("es-1"), "ES256"), (Some("rs-1"), "RS256")]);
        // The skipped RS384 key's kid finds nothing.
        assert_refused(
            &v,
            &sign(Algorithm::RS256, Some("rs-384"), &rs_key(), &claims()),
            NOW_MS,
            "unknown key id",
        );
        // A JWKS key of type `oct` is never an HMAC secret.
        let hs = sign(
            Algorithm::HS256,
            Some("hmac"),
            &EncodingKey::from_secret(b"secret"),
            &claims(),
        );
        assert_refused(&v, &hs, NOW_MS, "HS256 tokens are not accepted");
    }

    #[test]
    fn debug_hides_the_secret() {
        let cfg = JwtConfig {
            hs256_secret: Some(SECRET.to_vec()),
            ..config()
        };
        let shown = format!("{cfg:?}");
        assert!(!shown.contains(std::str::from_utf8(SECRET).unwrap()));
        let shown = format!("{:?}", JwtVerifier::new(cfg).unwrap());
        assert!(shown.contains("rs-1"), "{shown}");
        assert!(!shown.contains(std::str::from_utf8(SECRET).unwrap()));
    }

    #[test]
    fn cache_returns_the_record_until_exp() {
        let v = verifier();
        let mut c = claims();
        c["exp"] = json!(NOW + 10);
        let token = rs(&c);
        let mut cache = JwtCache::new(8);
        assert!(cache.get(&token, NOW_MS).is_none());

        let first = cache.get_or_verify(&v, &token, NOW_MS).unwrap();
        assert_eq!(cache.len(), 1);
        assert!(Arc::ptr_eq(cache.get(&token, NOW_MS).unwrap(), &first));
        let again = cache.get_or_verify(&v, &token, NOW_MS + 9_999).unwrap();
        assert!(Arc::ptr_eq(&again, &first));

        // At exp the entry misses, and the token is verified again (and refused).
        assert!(cache.get(&token, NOW_MS + 10_000).is_none());
        let err = cache
            .get_or_verify(&v, &token, NOW_MS + 10_000)
            .unwrap_err();
        assert_eq!(err, AuthError::Expired);

        // Failures are not cached.
        let mut cache = JwtCache::new(8);
        let other = sign(
            Algorithm::RS256,
            Some("rs-1"),
            &EncodingKey::from_rsa_pem(OTHER_KEY).unwrap(),
            &claims(),
        );
        let err = cache.get_or_verify(&v, &other, NOW_MS).unwrap_err();
        assert_no_token_in(&err, &other);
        assert!(cache.is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let record = |n: u64| Arc::new(KeyRecord::new(format!("jwt:{n}"), "x", key::hash("x"), 0));
        let mut cache = JwtCache::new(2);
        cache.insert("t1", record(1), NOW_MS + 1_000, NOW_MS);
        cache.insert("t2", record(2), NOW_MS + 50_000, NOW_MS);
        assert_eq!(cache.len(), 2);

        // Full: the expired t1 goes first.
        cache.insert("t3", record(3), NOW_MS + 50_000, NOW_MS + 2_000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("t1", NOW_MS).is_none());
        assert!(cache.get("t2", NOW_MS + 2_000).is_some());
        assert!(cache.get("t3", NOW_MS + 2_000).is_some());

        // Full and nothing expired: an arbitrary one goes.
        cache.insert("t4", record(4), NOW_MS + 50_000, NOW_MS + 2_000);
        assert_eq!(cache.len(), 2);
        assert!(cache.get("t4", NOW_MS + 2_000).is_some());

        // Replacing a cached token evicts nothing.
        cache.insert("t4", record(5), NOW_MS + 60_000, NOW_MS + 2_000);
        assert_eq!(cache.len(), 2);
        assert_eq!(&*cache.get("t4", NOW_MS + 2_000).unwrap().id, "jwt:5");

        // Already expired: not cached. Capacity 0: nothing cached.
        cache.clear();
        cache.insert("t5", record(6), NOW_MS, NOW_MS);
        assert!(cache.is_empty());
        let mut none = JwtCache::new(0);
        none.insert("t6", record(7), NOW_MS + 1, NOW_MS);
        assert!(none.is_empty());
    }
}
