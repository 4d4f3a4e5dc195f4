//! The key table a shard checks virtual keys against: a read-only snapshot, built or changed
//! off the request path and swapped in whole.
//!
//! Owns: [`KeyRecord`] (what a key, or a verified JWT, stands for) and the lookups by hash and
//! by id. Does not: count requests or spend (the limit fields are read by `budget`), persist
//! records, or read the clock (`now_ms` is passed in).
//!
//! Key types: [`KeyRecord`], [`KeyTable`], [`Verdict`].

use std::collections::BTreeMap;
use std::sync::Arc;

use hashbrown::HashMap;
use serde::{Deserialize, Serialize};

use super::AuthError;
use super::key::{self, KeyHash};
use crate::budget::spec::LimitSet;

/// What a virtual key (or a verified JWT) stands for: who it belongs to, what it may call,
/// until when, and its limits. Stored and returned by the admin API; the hash serializes in
/// its `sha256:` form and the key itself is never part of it.
///
/// Unknown fields are ignored when reading (records written by a newer gateway still load);
/// configs that declare keys parse strictly in their own raw types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    /// Public id (`key_<16 hex>`, or `jwt:<16 hex>` for a token's subject): safe in logs.
    pub id: Arc<str>,
    /// A human name for the key.
    pub name: Arc<str>,
    /// SHA-256 of the key.
    pub hash: KeyHash,
    /// The team the key belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub team: Option<Arc<str>>,
    /// The user the key belongs to, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<Arc<str>>,
    /// The public model names the key may call; `None` allows every model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub models: Option<Vec<Arc<str>>>,
    /// When the key stops working, unix milliseconds; `None` never.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at_ms: Option<u64>,
    /// When the key was made, unix milliseconds.
    pub created_at_ms: u64,
    /// Free-form labels from whoever made the key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metadata: BTreeMap<String, String>,
    /// Revoked keys stay in the table (to answer "revoked", not "unknown") until removed.
    #[serde(default)]
    pub revoked: bool,
    /// The key's own limits and budgets (none set: `limits.per_key` applies).
    #[serde(default, skip_serializing_if = "LimitSet::is_empty")]
    pub limits: LimitSet,
}

impl KeyRecord {
    /// A record with no owner, no model list, no expiry, no metadata and no limits.
    pub fn new(
        id: impl Into<Arc<str>>,
        name: impl Into<Arc<str>>,
        hash: KeyHash,
        created_at_ms: u64,
    ) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            hash,
            team: None,
            user: None,
            models: None,
            expires_at_ms: None,
            created_at_ms,
            metadata: BTreeMap::new(),
            revoked: false,
            limits: LimitSet::default(),
        }
    }

    /// May this key call `public_model`? Every model when the record has no model list.
    pub fn allows(&self, public_model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.iter().any(|m| &**m == public_model))
    }

    /// Has the key expired at `now_ms`? It stops working at `expires_at_ms` itself.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expires_at_ms.is_some_and(|at| now_ms >= at)
    }
}

/// The outcome of checking a presented key against the table.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Verdict<'a> {
    /// A live key.
    Valid(&'a Arc<KeyRecord>),
    /// No key with this hash.
    Unknown,
    /// The key was revoked.
    Revoked,
    /// The key has expired.
    Expired,
}

impl<'a> Verdict<'a> {
    /// The record of a valid key, or the matching [`AuthError`].
    pub fn into_result(self) -> Result<&'a Arc<KeyRecord>, AuthError> {
        match self {
            Self::Valid(record) => Ok(record),
            Self::Unknown => Err(AuthError::Unknown),
            Self::Revoked => Err(AuthError::Revoked),
            Self::Expired => Err(AuthError::Expired),
        }
    }
}

/// The key records, by hash (to check a presented key) and by id (for the admin API). Cheap
/// to read; a change is made on a clone that is then published whole.
#[derive(Debug, Clone, Default)]
pub struct KeyTable {
    /// Every record, by the hash of its key.
    by_hash: HashMap<KeyHash, Arc<KeyRecord>>,
    /// The same records, by id.
    by_id: HashMap<Arc<str>, Arc<KeyRecord>>,
}

impl KeyTable {
    /// A table holding `records`; fails as [`KeyTable::insert`] does.
    pub fn from_records(
        records: impl IntoIterator<Item = Arc<KeyRecord>>,
    ) -> Result<Self, AuthError> {
        let mut table = Self::default();
        for record in records {
            table.insert(record)?;
        }
        Ok(table)
    }

    /// Adds a record, or replaces the one with the same id (a new hash replaces the old one:
    /// a rotated key). Returns the record it replaced. Fails, changing nothing, when another
    /// id already holds the same hash (one key declared twice).
    pub fn insert(&mut self, record: Arc<KeyRecord>) -> Result<Option<Arc<KeyRecord>>, AuthError> {
        if let Some(other) = self.by_hash.get(&record.hash)
            && other.id != record.id
        {
            return Err(AuthError::Config(format!(
                "keys `{}` and `{}` have the same hash",
                other.id, record.id
            )));
        }
        let old = self.by_id.insert(record.id.clone(), record.clone());
        if let Some(old) = &old
            && old.hash != record.hash
        {
            self.by_hash.remove(&old.hash);
        }
        self.by_hash.insert(record.hash, record);
        Ok(old)
    }

    /// Removes the record with this id, returning it.
    pub fn remove(&mut self, id: &str) -> Option<Arc<KeyRecord>> {
        let record = self.by_id.remove(id)?;
        self.by_hash.remove(&record.hash);
        Some(record)
    }

    /// The record with this id.
    pub fn get_id(&self, id: &str) -> Option<&Arc<KeyRecord>> {
        self.by_id.get(id)
    }

    /// Every record, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<KeyRecord>> {
        self.by_id.values()
    }

    /// How many records the table holds.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Does the table hold no record?
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }

    /// Checks a presented key at `now_ms`: one SHA-256 and one map lookup.
    pub fn check(&self, presented: &str, now_ms: u64) -> Verdict<'_> {
        // The presented key is hashed and the digest looked up; no secret is ever compared
        // byte by byte. The map compares digests, so how long a lookup takes reveals nothing
        // about a stored key (finding a key whose digest shares a prefix with a stored one
        // tells an attacker nothing about that key's text).
        match self.by_hash.get(&key::hash(presented)) {
            None => Verdict::Unknown,
            Some(record) if record.revoked => Verdict::Revoked,
            Some(record) if record.is_expired(now_ms) => Verdict::Expired,
            Some(record) => Verdict::Valid(record),
        }
    }
}

#[cfg(test)]
mod tests {
    use ring::rand::SystemRandom;

    use super::*;
    use crate::auth::key::{KEY_LEN, PREFIX, Secret, generate, new_id};

    const NOW: u64 = 1_700_000_000_000;

    fn new_key(name: &str) -> (Secret, KeyRecord) {
        let rng = SystemRandom::new();
        let (secret, hash) = generate(&rng).unwrap();
        let record = KeyRecord::new(new_id(&rng).unwrap(), name, hash, NOW);
        (secret, record)
    }

    fn table_of(records: Vec<KeyRecord>) -> KeyTable {
        KeyTable::from_records(records.into_iter().map(Arc::new)).unwrap()
    }

    #[test]
    fn a_generated_key_is_valid() {
        let (secret, record) = new_key("ci");
        let id = record.id.clone();
        let table = table_of(vec![record]);
        match table.check(secret.expose(), NOW) {
            Verdict::Valid(found) => assert_eq!(found.id, id),
            other => panic!("{other:?}"),
        }
        assert_eq!(
            table.check(secret.expose(), NOW).into_result().unwrap().id,
            id
        );
    }

    #[test]
    fn a_one_character_change_is_unknown() {
        let (secret, record) = new_key("ci");
        let table = table_of(vec![record]);
        let text = secret.expose();
        for at in [PREFIX.len(), KEY_LEN - 1, 0] {
            let mut bytes = text.as_bytes().to_vec();
            bytes[at] = if bytes[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(bytes).unwrap();
            assert_eq!(table.check(&changed, NOW), Verdict::Unknown, "at {at}");
        }
        assert_eq!(table.check("", NOW), Verdict::Unknown);
        assert_eq!(
            table.check("nope", NOW).into_result().unwrap_err(),
            AuthError::Unknown
        );
    }

    #[test]
    fn revoked_and_expired() {
        let (revoked_key, mut revoked) = new_key("revoked");
        revoked.revoked = true;
        let (expiring_key, mut expiring) = new_key("expiring");
        expiring.expires_at_ms = Some(NOW + 1_000);
        let table = table_of(vec![revoked, expiring]);

        assert_eq!(table.check(revoked_key.expose(), NOW), Verdict::Revoked);
        assert!(matches!(
            table.check(expiring_key.expose(), NOW + 999),
            Verdict::Valid(_)
        ));
        assert_eq!(
            table.check(expiring_key.expose(), NOW + 1_000),
            Verdict::Expired
        );
        assert_eq!(
            table
                .check(expiring_key.expose(), NOW + 5_000)
                .into_result()
                .unwrap_err(),
            AuthError::Expired
        );
        assert_eq!(
            table
                .check(revoked_key.expose(), NOW)
                .into_result()
                .unwrap_err(),
            AuthError::Revoked
        );
    }

    #[test]
    fn allows_lists_public_models() {
        let (_, mut record) = new_key("ci");
        assert!(record.allows("anything"));
        record.models = Some(vec!["gpt-4o".into(), "claude".into()]);
        assert!(record.allows("gpt-4o"));
        assert!(record.allows("claude"));
        assert!(!record.allows("gpt-4o-mini"));
        assert!(!record.allows(""));
        record.models = Some(Vec::new());
        assert!(!record.allows("gpt-4o"));
    }

    #[test]
    fn insert_replace_remove() {
        let (old_key, record) = new_key("ci");
        let id = record.id.clone();
        let mut table = table_of(vec![record.clone()]);
        assert_eq!(table.len(), 1);
        assert!(!table.is_empty());
        assert_eq!(table.get_id(&id).unwrap().name.as_ref(), "ci");

        // Rotating: same id, new hash. The old key stops working.
        let (new_key_text, rotated) = {
            let (secret, mut fresh) = new_key("ci");
            fresh.id = id.clone();
            (secret, fresh)
        };
        let replaced = table.insert(Arc::new(rotated)).unwrap().unwrap();
        assert_eq!(replaced.hash, record.hash);
        assert_eq!(table.len(), 1);
        assert_eq!(table.check(old_key.expose(), NOW), Verdict::Unknown);
        assert!(matches!(
            table.check(new_key_text.expose(), NOW),
            Verdict::Valid(_)
        ));

        assert_eq!(table.remove(&id).unwrap().id, id);
        assert!(table.is_empty());
        assert_eq!(table.check(new_key_text.expose(), NOW), Verdict::Unknown);
        assert!(table.remove(&id).is_none());
        assert!(table.get_id(&id).is_none());
    }

    #[test]
    fn one_hash_under_two_ids_is_refused() {
        let (_, record) = new_key("first");
        let mut twin = record.clone();
        twin.id = "key_0000000000000000".into();
        let mut table = table_of(vec![record.clone()]);
        let err = table.insert(Arc::new(twin)).unwrap_err();
        assert!(matches!(&err, AuthError::Config(m) if m.contains(&*record.id)));
        assert_eq!(table.len(), 1);
        assert_eq!(table.iter().count(), 1);
    }

    #[test]
    fn record_serde_round_trip() {
        let (_, mut record) = new_key("ci");
        record.team = Some("research".into());
        record.models = Some(vec!["gpt-4o".into()]);
        record.expires_at_ms = Some(NOW + 1);
        record.metadata.insert("owner".into(), "ana".into());
        record.limits.rpm = Some(60);
        record.limits.spend_per_day_usd = Some(2.5);
        let json = serde_json::to_value(&record).unwrap();
        assert_eq!(json["hash"], record.hash.to_string());
        assert!(json.get("user").is_none());
        assert!(json.get("tpm").is_none());
        let back: KeyRecord = serde_json::from_value(json).unwrap();
        assert_eq!(back, record);

        let minimal: KeyRecord = serde_json::from_str(&format!(
            r#"{{"id":"key_1","name":"n","hash":"{}","created_at_ms":5}}"#,
            record.hash
        ))
        .unwrap();
        assert_eq!(minimal, KeyRecord::new("key_1", "n", record.hash, 5));
    }
}
