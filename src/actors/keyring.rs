//! The node's key table as the control plane owns it: the keys of the config file (read-only
//! here) and the keys made through the admin API (created, changed, revoked). Every change
//! gives a new [`KeyTable`] snapshot for the shards. Time comes in as unix milliseconds.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Deserialize;

use crate::auth::key;
use crate::auth::table::{KeyRecord, KeyTable};
use crate::budget::spec::LimitSet;
use crate::config::tenancy::{RawKey, key_record};

/// A key to make, as the admin API takes it (`POST /admin/keys`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    /// Public id; absent: `key_` and 16 hex digits.
    pub id: Option<String>,
    /// A name for people.
    pub name: Option<String>,
    /// Team.
    pub team: Option<String>,
    /// User.
    pub user: Option<String>,
    /// Allowed public models; absent: every model.
    pub models: Option<Vec<String>>,
    /// Expiry, unix seconds.
    pub expires_at_unix: Option<u64>,
    /// Free-form tags.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Limits and budgets.
    #[serde(default)]
    pub limits: LimitSet,
}

/// Changes to a key (`PATCH /admin/keys/{id}`): each field given replaces the key's.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyPatch {
    /// New name.
    pub name: Option<String>,
    /// New team.
    pub team: Option<String>,
    /// New user.
    pub user: Option<String>,
    /// New model list.
    pub models: Option<Vec<String>>,
    /// New expiry, unix seconds.
    pub expires_at_unix: Option<u64>,
    /// New tags (replace all).
    pub metadata: Option<BTreeMap<String, String>>,
    /// New limits (replace all).
    pub limits: Option<LimitSet>,
}

/// Why a key change was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum KeyError {
    /// No key with that id.
    #[error("no key `{0}`")]
    NotFound(String),
    /// The id is taken.
    #[error("a key `{0}` exists already")]
    Exists(String),
    /// Keys of the config file change only with the file.
    #[error("the key `{0}` is declared in the config file; change it there")]
    FromConfig(String),
    /// A field is not acceptable.
    #[error("{0}: {1}")]
    Invalid(String, String),
    /// The system's random source failed.
    #[error("no random bytes for a new key")]
    Rng,
}

/// A key just made: its record, and its secret, shown once.
#[derive(Debug)]
pub struct Created {
    /// The record (as stored: the hash, never the secret).
    pub record: Arc<KeyRecord>,
    /// The key itself.
    pub secret: key::Secret,
}

/// The control plane's keys.
#[derive(Debug, Clone)]
pub struct Keyring {
    table: KeyTable,
    from_config: Vec<Arc<str>>,
    models: Vec<String>,
    exact: bool,
}

impl Keyring {
    /// The config's keys; `models` are the public model names keys may be limited to.
    pub fn new(config_keys: &[Arc<KeyRecord>], models: Vec<String>, exact: bool) -> Self {
        let table = KeyTable::from_records(config_keys.iter().cloned()).unwrap_or_default();
        Self {
            table,
            from_config: config_keys.iter().map(|k| k.id.clone()).collect(),
            models,
            exact,
        }
    }

    /// The table as it stands (for the shards).
    pub fn table(&self) -> &KeyTable {
        &self.table
    }

    /// Add keys made earlier (loaded from the store at start). A stored key whose id is now
    /// declared in the config file is skipped: the file wins.
    pub fn restore(&mut self, keys: impl IntoIterator<Item = KeyRecord>) {
        for k in keys {
            if !self.from_config.contains(&k.id) {
                let _ = self.table.insert(Arc::new(k));
            }
        }
    }

    /// Make a key with a fresh secret.
    pub fn create(
        &mut self,
        new: NewKey,
        rng: &dyn ring::rand::SecureRandom,
        now_ms: u64,
    ) -> Result<Created, KeyError> {
        let (secret, hash) = key::generate(rng).map_err(|_| KeyError::Rng)?;
        let id = match new.id {
            Some(id) => id,
            None => key::new_id(rng).map_err(|_| KeyError::Rng)?.to_string(),
        };
        if self.table.get_id(&id).is_some() {
            return Err(KeyError::Exists(id));
        }
        let raw = RawKey {
            id,
            name: new.name,
            hash: hash.to_string(),
            team: new.team,
            user: new.user,
            models: new.models,
            expires_at_unix: new.expires_at_unix,
            metadata: new.metadata,
            revoked: false,
            limits: new.limits,
        };
        let record = Arc::new(self.validate(raw, now_ms)?);
        self.table
            .insert(record.clone())
            .map_err(|e| KeyError::Invalid("hash".into(), e.to_string()))?;
        Ok(Created { record, secret })
    }

    /// Change a key made through the admin API.
    pub fn update(&mut self, id: &str, patch: KeyPatch) -> Result<Arc<KeyRecord>, KeyError> {
        let old = self.editable(id)?;
        let raw = RawKey {
            id: old.id.to_string(),
            name: patch.name.or_else(|| Some(old.name.to_string())),
            hash: old.hash.to_string(),
            team: patch
                .team
                .or_else(|| old.team.as_deref().map(str::to_owned)),
            user: patch
                .user
                .or_else(|| old.user.as_deref().map(str::to_owned)),
            models: patch.models.or_else(|| {
                old.models
                    .as_ref()
                    .map(|m| m.iter().map(|s| s.to_string()).collect())
            }),
            expires_at_unix: patch
                .expires_at_unix
                .or(old.expires_at_ms.map(|ms| ms / 1000)),
            metadata: patch.metadata.unwrap_or_else(|| old.metadata.clone()),
            revoked: old.revoked,
            limits: patch.limits.unwrap_or(old.limits),
        };
        let record = Arc::new(self.validate(raw, old.created_at_ms)?);
        self.table
            .insert(record.clone())
            .map_err(|e| KeyError::Invalid("hash".into(), e.to_string()))?;
        Ok(record)
    }

    /// Revoke a key made through the admin API (it stays, answering "revoked").
    pub fn revoke(&mut self, id: &str) -> Result<Arc<KeyRecord>, KeyError> {
        let old = self.editable(id)?;
        let mut record = (*old).clone();
        record.revoked = true;
        let record = Arc::new(record);
        self.table
            .insert(record.clone())
            .map_err(|e| KeyError::Invalid("hash".into(), e.to_string()))?;
        Ok(record)
    }

    /// One key.
    pub fn get(&self, id: &str) -> Option<Arc<KeyRecord>> {
        self.table.get_id(id).cloned()
    }

    /// Every key, by id.
    pub fn list(&self) -> Vec<Arc<KeyRecord>> {
        let mut all: Vec<_> = self.table.iter().cloned().collect();
        all.sort_by(|a, b| a.id.cmp(&b.id));
        all
    }

    /// Whether a key comes from the config file.
    pub fn is_from_config(&self, id: &str) -> bool {
        self.from_config.iter().any(|c| &**c == id)
    }

    fn editable(&self, id: &str) -> Result<Arc<KeyRecord>, KeyError> {
        if self.is_from_config(id) {
            return Err(KeyError::FromConfig(id.to_owned()));
        }
        self.get(id)
            .ok_or_else(|| KeyError::NotFound(id.to_owned()))
    }

    fn validate(&self, raw: RawKey, created_at_ms: u64) -> Result<KeyRecord, KeyError> {
        let models = &self.models;
        key_record(
            raw,
            "key",
            self.exact,
            &|m| models.iter().any(|x| x == m),
            created_at_ms,
        )
        .map_err(|(path, message)| KeyError::Invalid(path, message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring() -> Keyring {
        let cfg = Arc::new(KeyRecord::new("cfg", "cfg", key::hash("sk-sg-config"), 0));
        Keyring::new(&[cfg], vec!["mock".into(), "big".into()], false)
    }

    #[test]
    fn a_created_key_checks_valid_and_is_shown_once() {
        let mut r = ring();
        let rng = ring::rand::SystemRandom::new();
        let made = r
            .create(
                NewKey {
                    id: Some("ci".into()),
                    team: Some("research".into()),
                    limits: LimitSet {
                        rpm: Some(5),
                        ..LimitSet::default()
                    },
                    ..NewKey::default()
                },
                &rng,
                1_000,
            )
            .unwrap();
        assert_eq!(&*made.record.id, "ci");
        assert_eq!(made.record.created_at_ms, 1_000);
        let shown = format!("{:?} {}", made.record, made.secret);
        assert!(
            !shown.contains(made.secret.expose()),
            "the secret never prints"
        );
        assert!(matches!(
            r.table().check(made.secret.expose(), 2_000),
            crate::auth::table::Verdict::Valid(k) if &*k.id == "ci"
        ));
        assert_eq!(
            r.create(
                NewKey {
                    id: Some("ci".into()),
                    ..NewKey::default()
                },
                &rng,
                3_000
            )
            .err(),
            Some(KeyError::Exists("ci".into()))
        );
        // Generated ids when none is given.
        let anon = r.create(NewKey::default(), &rng, 0).unwrap();
        assert!(anon.record.id.starts_with("key_"));
        assert_eq!(r.list().len(), 3);
    }

    #[test]
    fn updates_and_revocations_touch_only_admin_keys() {
        let mut r = ring();
        let rng = ring::rand::SystemRandom::new();
        let made = r
            .create(
                NewKey {
                    id: Some("a".into()),
                    ..NewKey::default()
                },
                &rng,
                0,
            )
            .unwrap();
        let changed = r
            .update(
                "a",
                KeyPatch {
                    models: Some(vec!["big".into()]),
                    ..KeyPatch::default()
                },
            )
            .unwrap();
        assert!(changed.allows("big") && !changed.allows("mock"));
        assert_eq!(changed.hash, made.record.hash, "the secret stays the same");
        let bad = r.update(
            "a",
            KeyPatch {
                models: Some(vec!["nope".into()]),
                ..KeyPatch::default()
            },
        );
        assert!(matches!(bad, Err(KeyError::Invalid(p, _)) if p == "key.models"));
        assert!(r.revoke("a").unwrap().revoked);
        assert!(matches!(
            r.table().check(made.secret.expose(), 0),
            crate::auth::table::Verdict::Revoked
        ));
        assert_eq!(
            r.revoke("cfg").err(),
            Some(KeyError::FromConfig("cfg".into()))
        );
        assert_eq!(r.revoke("zz").err(), Some(KeyError::NotFound("zz".into())));
        // A stored key shadowed by the config file's is skipped.
        let mut stored = KeyRecord::new("cfg", "other", key::hash("sk-sg-other"), 0);
        stored.revoked = true;
        r.restore([stored]);
        assert!(!r.get("cfg").unwrap().revoked);
    }
}
