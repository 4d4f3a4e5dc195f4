//! The node's embedded store: state that outlives the process, in one redb file,
//! `<data dir>/shardgate.redb`, so that one node needs no Redis.
//!
//! Owns: the admin-created key records, the spend book (settled spend and tokens by scope and
//! UTC day) and the meter windows of the ledger (so counters survive a restart), and the
//! file's schema version.
//! Does not: decide anything (the budgeter and the admin API do), hold keys that come from the
//! config (they are re-read at start), or run on a shard. Every call is synchronous and may
//! wait for the disk (a commit is an `fsync`): only the control plane calls it, from its own
//! thread (inside an actor, a commit holds up that runtime for its duration; use
//! `spawn_blocking` where that matters).
//! Key types: [`Store`], [`SpendRow`], [`SpendScope`], [`SpendTotals`], [`StoreError`].
//!
//! # What a crash can lose
//!
//! Every write is one redb transaction committed with [`redb::Durability::Immediate`]: when a
//! call returns `Ok`, its data is on disk, and a crash (of the process or of the machine)
//! loses none of it. A transaction is all or nothing, so a crash during a call loses exactly
//! that call's batch, whole, never part of it. What the budgeter has counted but not yet
//! handed to [`Store::add_spend`] is not in the store.
//!
//! # Layout (schema version 1)
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | `"schema_version"` | `u64` |
//! | `keys` | key id | the [`KeyRecord`] as JSON |
//! | `spend_by_day` | (day, scope text) | (nano-USD, input tokens, output tokens, requests) |
//! | `spend_by_scope` | (scope text, day) | `()`: the index of `spend_by_day` by scope |
//! | `meter_windows` | meter text | (window id, used) |
//!
//! A scope's text is `global`, or `<kind>:<id>` (`key`, `team`, `user`, `model`,
//! `deployment`); a meter's text is `<scope>|<measure>|<period>`, for example
//! `user:alice|tokens|day`. The id is written as it is: the measure and the period never
//! contain `|` and the kind never contains `:`, so the text is read back by splitting off the
//! last two `|` and the first `:`, whatever the id holds.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction,
};
use serde::{Deserialize, Serialize};

use crate::auth::table::KeyRecord;
use crate::budget::meter::{Measure, MeterKey, Period, Scope};

/// The store's file name inside the data directory.
pub const FILE_NAME: &str = "shardgate.redb";

/// The layout version this build reads and writes (see the module docs).
pub const SCHEMA_VERSION: u64 = 1;

/// Memory redb may use to cache pages (its default is 1 GiB): the store is small and read
/// rarely (at start and by admin queries).
const CACHE_BYTES: usize = 64 << 20;

const SCHEMA_KEY: &str = "schema_version";

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("keys");
/// (day, scope text) → (nano-USD, input tokens, output tokens, requests).
const SPEND_BY_DAY: TableDefinition<(u32, &str), (u64, u64, u64, u64)> =
    TableDefinition::new("spend_by_day");
/// (scope text, day) → (): which days a scope has rows for.
const SPEND_BY_SCOPE: TableDefinition<(&str, u32), ()> = TableDefinition::new("spend_by_scope");
/// meter text → (window id, used).
const WINDOWS: TableDefinition<&str, (u64, u64)> = TableDefinition::new("meter_windows");

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The data directory could not be created.
    #[error("cannot create the data directory {}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The IO error.
        #[source]
        source: std::io::Error,
    },
    /// The database file could not be opened or created (IO, a damaged file, or another
    /// process or handle has it open).
    #[error("cannot open the store {}", path.display())]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's error.
        #[source]
        source: redb::DatabaseError,
    },
    /// The file was written by a newer gateway, with a layout this one does not know.
    #[error(
        "the store {} has schema version {found}, newer than the version {supported} this \
         gateway reads: run a newer gateway, or point it at another data directory",
        path.display()
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// [`SCHEMA_VERSION`].
        supported: u64,
    },
    /// The file holds a schema version older than any this gateway can migrate from.
    #[error(
        "the store {} has schema version {found}, older than the version {supported} this \
         gateway reads, and there is no migration from it",
        path.display()
    )]
    OlderSchema {
        /// The file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// [`SCHEMA_VERSION`].
        supported: u64,
    },
    /// A transaction, table or storage operation failed (IO, or redb found the file damaged).
    #[error("store {op} failed")]
    Db {
        /// The operation (`add_spend`, `keys`, ...).
        op: &'static str,
        /// redb's error.
        #[source]
        source: redb::Error,
    },
    /// A stored row does not read back (the file was altered, or a bug wrote it).
    #[error("the store holds a malformed {what}: {detail}")]
    Corrupt {
        /// What kind of row.
        what: &'static str,
        /// Which row, and what is wrong with it.
        detail: String,
    },
    /// A key record could not be encoded as JSON.
    #[error("cannot encode key record `{id}`")]
    Encode {
        /// The key id.
        id: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
    /// A stored key record does not decode.
    #[error("cannot decode the stored key record `{id}`")]
    Decode {
        /// The key id.
        id: String,
        /// serde_json's error.
        #[source]
        source: serde_json::Error,
    },
}

/// Whom a spend-book row counts for.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SpendScope {
    /// The whole gateway.
    Global,
    /// One virtual key, by id.
    Key(String),
    /// One team.
    Team(String),
    /// One end user.
    User(String),
    /// One public model name.
    Model(String),
}

/// What was settled: spend in nano-USD, tokens and requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SpendTotals {
    /// Spend, nano-USD.
    pub nano_usd: u64,
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Requests settled.
    pub requests: u64,
}

impl SpendTotals {
    fn from_value((nano_usd, input_tokens, output_tokens, requests): (u64, u64, u64, u64)) -> Self {
        Self {
            nano_usd,
            input_tokens,
            output_tokens,
            requests,
        }
    }

    fn to_value(self) -> (u64, u64, u64, u64) {
        (
            self.nano_usd,
            self.input_tokens,
            self.output_tokens,
            self.requests,
        )
    }

    /// These totals plus a row's (saturating: a u64 of nano-USD is 18 billion USD).
    fn plus(self, row: &SpendRow) -> Self {
        Self {
            nano_usd: self.nano_usd.saturating_add(row.nano_usd),
            input_tokens: self.input_tokens.saturating_add(row.input_tokens),
            output_tokens: self.output_tokens.saturating_add(row.output_tokens),
            requests: self.requests.saturating_add(row.requests),
        }
    }
}

/// Settled usage to add to the spend book: one scope, one UTC day.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpendRow {
    /// For whom.
    pub scope: SpendScope,
    /// The UTC day, `yyyymmdd` (see [`utc_day`]).
    pub day: u32,
    /// Spend, nano-USD.
    pub nano_usd: u64,
    /// Input (prompt) tokens.
    pub input_tokens: u64,
    /// Output (completion) tokens.
    pub output_tokens: u64,
    /// Requests settled.
    pub requests: u64,
}

impl SpendRow {
    /// A row of these totals for a scope and day.
    pub fn of((scope, day): (SpendScope, u32), t: SpendTotals) -> Self {
        Self {
            scope,
            day,
            nano_usd: t.nano_usd,
            input_tokens: t.input_tokens,
            output_tokens: t.output_tokens,
            requests: t.requests,
        }
    }

    /// The row's totals.
    pub fn totals(&self) -> SpendTotals {
        SpendTotals {
            nano_usd: self.nano_usd,
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            requests: self.requests,
        }
    }
}

/// The UTC day of a unix time in milliseconds, as `yyyymmdd` (`1970-01-01` is `19700101`).
/// Times past the last day the calendar knows (9999-12-31) give that day.
pub fn utc_day(unix_ms: u64) -> u32 {
    const MS_PER_DAY: u64 = 86_400_000;
    let date = i64::try_from(unix_ms / MS_PER_DAY)
        .ok()
        .and_then(|days| {
            time::OffsetDateTime::UNIX_EPOCH
                .date()
                .checked_add(time::Duration::days(days))
        })
        .unwrap_or(time::Date::MAX);
    // Years here are 1970..=9999.
    let year = u32::try_from(date.year()).unwrap_or(9999);
    year * 10_000 + u32::from(u8::from(date.month())) * 100 + u32::from(date.day())
}

/// The node's embedded store (see the module docs). Synchronous: the control plane calls it
/// from its own thread, never a shard.
pub struct Store {
    db: Database,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").finish_non_exhaustive()
    }
}

impl Store {
    /// Open `<dir>/shardgate.redb`, creating `dir` and the file if they do not exist. A new
    /// file gets [`SCHEMA_VERSION`]; a file with another version is refused
    /// ([`StoreError::NewerSchema`], [`StoreError::OlderSchema`]). One handle per file: a
    /// second open while one is live fails with [`StoreError::Open`]. After a crash, redb
    /// repairs the file here (its time grows with the file).
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::CreateDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join(FILE_NAME);
        let db = Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(&path)
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        let store = Self { db };
        store.init(&path)?;
        Ok(store)
    }

    /// Check (or, in a new file, write) the schema version, and create every table so that
    /// reads always find them.
    fn init(&self, path: &Path) -> Result<(), StoreError> {
        const OP: &str = "open";
        let txn = self.begin_write(OP)?;
        {
            let mut meta = txn.open_table(META).map_err(db(OP))?;
            let found = meta.get(SCHEMA_KEY).map_err(db(OP))?.map(|v| v.value());
            match found {
                None => {
                    meta.insert(SCHEMA_KEY, SCHEMA_VERSION).map_err(db(OP))?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(found) if found > SCHEMA_VERSION => {
                    return Err(StoreError::NewerSchema {
                        path: path.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                Some(found) => {
                    return Err(StoreError::OlderSchema {
                        path: path.to_path_buf(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
            }
            txn.open_table(KEYS).map_err(db(OP))?;
            txn.open_table(SPEND_BY_DAY).map_err(db(OP))?;
            txn.open_table(SPEND_BY_SCOPE).map_err(db(OP))?;
            txn.open_table(WINDOWS).map_err(db(OP))?;
        }
        txn.commit().map_err(db(OP))
    }

    /// A write transaction that is durable when its commit returns.
    fn begin_write(&self, op: &'static str) -> Result<WriteTransaction, StoreError> {
        let mut txn = self.db.begin_write().map_err(db(op))?;
        txn.set_durability(Durability::Immediate).map_err(db(op))?;
        Ok(txn)
    }

    /// Store an admin-created key record under its id, replacing any record with that id.
    pub fn put_key(&self, rec: &KeyRecord) -> Result<(), StoreError> {
        const OP: &str = "put_key";
        let json = serde_json::to_vec(rec).map_err(|source| StoreError::Encode {
            id: rec.id.to_string(),
            source,
        })?;
        let txn = self.begin_write(OP)?;
        {
            let mut keys = txn.open_table(KEYS).map_err(db(OP))?;
            keys.insert(&*rec.id, json.as_slice()).map_err(db(OP))?;
        }
        txn.commit().map_err(db(OP))
    }

    /// Remove the key record with this id (nothing happens if there is none).
    pub fn delete_key(&self, id: &str) -> Result<(), StoreError> {
        const OP: &str = "delete_key";
        let txn = self.begin_write(OP)?;
        {
            let mut keys = txn.open_table(KEYS).map_err(db(OP))?;
            keys.remove(id).map_err(db(OP))?;
        }
        txn.commit().map_err(db(OP))
    }

    /// Every stored key record, in id order.
    pub fn keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        const OP: &str = "keys";
        let txn = self.db.begin_read().map_err(db(OP))?;
        let keys = txn.open_table(KEYS).map_err(db(OP))?;
        let mut out = Vec::new();
        for item in keys.iter().map_err(db(OP))? {
            let (id, json) = item.map_err(db(OP))?;
            let rec =
                serde_json::from_slice(json.value()).map_err(|source| StoreError::Decode {
                    id: id.value().to_owned(),
                    source,
                })?;
            out.push(rec);
        }
        Ok(out)
    }

    /// Add settled usage to the spend book, in ONE transaction for the whole batch: each row
    /// adds to the totals of its scope and day (rows for the same scope and day add up, in
    /// one batch or across batches). When this returns `Ok` the batch is on disk; a crash
    /// before that loses the whole batch and nothing else (see the module docs).
    pub fn add_spend(&self, rows: &[SpendRow]) -> Result<(), StoreError> {
        const OP: &str = "add_spend";
        if rows.is_empty() {
            return Ok(());
        }
        let txn = self.begin_write(OP)?;
        {
            let mut by_day = txn.open_table(SPEND_BY_DAY).map_err(db(OP))?;
            let mut by_scope = txn.open_table(SPEND_BY_SCOPE).map_err(db(OP))?;
            let mut scope = String::new();
            for row in rows {
                scope.clear();
                push_spend_scope(&mut scope, &row.scope);
                let old = by_day
                    .get((row.day, scope.as_str()))
                    .map_err(db(OP))?
                    .map(|v| SpendTotals::from_value(v.value()));
                let new = old.unwrap_or_default().plus(row);
                by_day
                    .insert((row.day, scope.as_str()), new.to_value())
                    .map_err(db(OP))?;
                if old.is_none() {
                    by_scope
                        .insert((scope.as_str(), row.day), ())
                        .map_err(db(OP))?;
                }
            }
        }
        txn.commit().map_err(db(OP))
    }

    /// One scope's totals for each day in `from_day..=to_day` that has any, by day.
    pub fn spend(
        &self,
        scope: &SpendScope,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(u32, SpendTotals)>, StoreError> {
        const OP: &str = "spend";
        if from_day > to_day {
            return Ok(Vec::new());
        }
        let mut text = String::new();
        push_spend_scope(&mut text, scope);
        let txn = self.db.begin_read().map_err(db(OP))?;
        let by_day = txn.open_table(SPEND_BY_DAY).map_err(db(OP))?;
        let by_scope = txn.open_table(SPEND_BY_SCOPE).map_err(db(OP))?;
        let mut out = Vec::new();
        let range = (text.as_str(), from_day)..=(text.as_str(), to_day);
        for item in by_scope.range(range).map_err(db(OP))? {
            let (key, _) = item.map_err(db(OP))?;
            let (_, day) = key.value();
            let Some(totals) = by_day.get((day, text.as_str())).map_err(db(OP))? else {
                return Err(StoreError::Corrupt {
                    what: "spend index row",
                    detail: format!("`{text}` on {day} has no totals"),
                });
            };
            out.push((day, SpendTotals::from_value(totals.value())));
        }
        Ok(out)
    }

    /// Every scope's totals for each day in `from_day..=to_day`, by day, then by scope text
    /// (`global`, `key:…`, `model:…`, `team:…`, `user:…`).
    pub fn spend_all(
        &self,
        from_day: u32,
        to_day: u32,
    ) -> Result<Vec<(SpendScope, u32, SpendTotals)>, StoreError> {
        const OP: &str = "spend_all";
        if from_day > to_day {
            return Ok(Vec::new());
        }
        let txn = self.db.begin_read().map_err(db(OP))?;
        let by_day = txn.open_table(SPEND_BY_DAY).map_err(db(OP))?;
        let mut out = Vec::new();
        for item in by_day.range((from_day, "")..).map_err(db(OP))? {
            let (key, totals) = item.map_err(db(OP))?;
            let (day, text) = key.value();
            if day > to_day {
                break;
            }
            let scope = parse_spend_scope(text).ok_or_else(|| StoreError::Corrupt {
                what: "spend scope",
                detail: format!("`{text}` on {day}"),
            })?;
            out.push((scope, day, SpendTotals::from_value(totals.value())));
        }
        Ok(out)
    }

    /// Replace the stored meter windows with `rows` (the ledger's `(meter, window id, used)`,
    /// from `Ledger::windows()`), in one transaction: afterwards the store holds exactly these
    /// (the last row wins if a meter appears twice), so windows the ledger has swept are gone.
    pub fn put_windows(&self, rows: &[(MeterKey, u64, u64)]) -> Result<(), StoreError> {
        const OP: &str = "put_windows";
        let txn = self.begin_write(OP)?;
        {
            let mut windows = txn.open_table(WINDOWS).map_err(db(OP))?;
            windows.retain(|_, _| false).map_err(db(OP))?;
            let mut text = String::new();
            for (key, window_id, used) in rows {
                text.clear();
                push_meter(&mut text, key);
                windows
                    .insert(text.as_str(), (*window_id, *used))
                    .map_err(db(OP))?;
            }
        }
        txn.commit().map_err(db(OP))
    }

    /// The stored meter windows, `(meter, window id, used)`, for `Ledger::restore()` at start.
    pub fn windows(&self) -> Result<Vec<(MeterKey, u64, u64)>, StoreError> {
        const OP: &str = "windows";
        let txn = self.db.begin_read().map_err(db(OP))?;
        let windows = txn.open_table(WINDOWS).map_err(db(OP))?;
        let mut out = Vec::new();
        for item in windows.iter().map_err(db(OP))? {
            let (text, value) = item.map_err(db(OP))?;
            let text = text.value();
            let key = parse_meter(text).ok_or_else(|| StoreError::Corrupt {
                what: "meter key",
                detail: format!("`{text}`"),
            })?;
            let (window_id, used) = value.value();
            out.push((key, window_id, used));
        }
        Ok(out)
    }
}

/// Wrap a redb error with the operation it failed in.
fn db<E: Into<redb::Error>>(op: &'static str) -> impl FnOnce(E) -> StoreError {
    move |e| StoreError::Db {
        op,
        source: e.into(),
    }
}

// The stored names below are the file format: they are spelled out here, not taken from the
// metric labels of `budget::meter`, so that renaming a label never orphans stored rows. The
// matches are exhaustive: a new scope, measure or period fails to compile until it has a name.

/// Append a scope's text: `global`, or `<kind>:<id>`.
fn push_scope(out: &mut String, kind: &str, id: Option<&str>) {
    out.push_str(kind);
    if let Some(id) = id {
        out.push(':');
        out.push_str(id);
    }
}

/// Split a scope's text into its kind and id (`None` for `global`).
fn split_scope(text: &str) -> Option<(&str, Option<&str>)> {
    if text == "global" {
        return Some(("global", None));
    }
    let (kind, id) = text.split_once(':')?;
    Some((kind, Some(id)))
}

pub(super) fn push_spend_scope(out: &mut String, scope: &SpendScope) {
    let (kind, id) = match scope {
        SpendScope::Global => ("global", None),
        SpendScope::Key(id) => ("key", Some(id.as_str())),
        SpendScope::Team(id) => ("team", Some(id.as_str())),
        SpendScope::User(id) => ("user", Some(id.as_str())),
        SpendScope::Model(id) => ("model", Some(id.as_str())),
    };
    push_scope(out, kind, id);
}

pub(super) fn parse_spend_scope(text: &str) -> Option<SpendScope> {
    Some(match split_scope(text)? {
        ("global", None) => SpendScope::Global,
        ("key", Some(id)) => SpendScope::Key(id.to_owned()),
        ("team", Some(id)) => SpendScope::Team(id.to_owned()),
        ("user", Some(id)) => SpendScope::User(id.to_owned()),
        ("model", Some(id)) => SpendScope::Model(id.to_owned()),
        _ => return None,
    })
}

/// A meter's text: `<scope>|<measure>|<period>` (`key:ci|requests|minute`).
pub fn meter_text(key: &MeterKey) -> String {
    let mut s = String::new();
    push_meter(&mut s, key);
    s
}

/// Append a meter's text: `<scope>|<measure>|<period>`.
pub(super) fn push_meter(out: &mut String, key: &MeterKey) {
    let (kind, id) = match &key.scope {
        Scope::Global => ("global", None),
        Scope::Key(id) => ("key", Some(&**id)),
        Scope::Team(id) => ("team", Some(&**id)),
        Scope::User(id) => ("user", Some(&**id)),
        Scope::Model(id) => ("model", Some(&**id)),
        Scope::Deployment(id) => ("deployment", Some(&**id)),
    };
    push_scope(out, kind, id);
    out.push('|');
    out.push_str(match key.measure {
        Measure::Requests => "requests",
        Measure::Tokens => "tokens",
        Measure::Concurrent => "concurrent",
        Measure::Spend => "spend",
    });
    out.push('|');
    out.push_str(match key.period {
        Period::Minute => "minute",
        Period::Day => "day",
        Period::Month => "month",
        Period::Total => "total",
    });
}

/// Read a meter's text back. The id may hold `|` and `:`: the last two `|` and the first `:`
/// are the separators.
pub(super) fn parse_meter(text: &str) -> Option<MeterKey> {
    let mut parts = text.rsplitn(3, '|');
    let period = match parts.next()? {
        "minute" => Period::Minute,
        "day" => Period::Day,
        "month" => Period::Month,
        "total" => Period::Total,
        _ => return None,
    };
    let measure = match parts.next()? {
        "requests" => Measure::Requests,
        "tokens" => Measure::Tokens,
        "concurrent" => Measure::Concurrent,
        "spend" => Measure::Spend,
        _ => return None,
    };
    let scope = match split_scope(parts.next()?)? {
        ("global", None) => Scope::Global,
        ("key", Some(id)) => Scope::Key(Arc::from(id)),
        ("team", Some(id)) => Scope::Team(Arc::from(id)),
        ("user", Some(id)) => Scope::User(Arc::from(id)),
        ("model", Some(id)) => Scope::Model(Arc::from(id)),
        ("deployment", Some(id)) => Scope::Deployment(Arc::from(id)),
        _ => return None,
    };
    Some(MeterKey::new(scope, measure, period))
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Instant;

    use super::*;
    use crate::auth::key::KeyHash;

    /// A fresh directory under the system temp dir, removed on drop.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(name: &str) -> Self {
            static NEXT: AtomicU32 = AtomicU32::new(0);
            let n = NEXT.fetch_add(1, Ordering::Relaxed);
            let path = std::env::temp_dir()
                .join(format!("shardgate-store-{}-{n}-{name}", std::process::id()));
            let _ = std::fs::remove_dir_all(&path);
            Self(path)
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn record(id: &str, name: &str) -> KeyRecord {
        KeyRecord::new(id, name, KeyHash([7; 32]), 1_767_225_600_000)
    }

    fn row(scope: SpendScope, day: u32, nano_usd: u64, tokens: (u64, u64)) -> SpendRow {
        SpendRow {
            scope,
            day,
            nano_usd,
            input_tokens: tokens.0,
            output_tokens: tokens.1,
            requests: 1,
        }
    }

    fn totals(nano_usd: u64, input: u64, output: u64, requests: u64) -> SpendTotals {
        SpendTotals {
            nano_usd,
            input_tokens: input,
            output_tokens: output,
            requests,
        }
    }

    fn meter(scope: Scope, measure: Measure, period: Period) -> MeterKey {
        MeterKey::new(scope, measure, period)
    }

    #[test]
    fn utc_days() {
        assert_eq!(utc_day(0), 19700101);
        assert_eq!(utc_day(86_399_999), 19700101);
        assert_eq!(utc_day(86_400_000), 19700102);
        // 2026-02-28T23:59:59.999Z, then 2026-03-01 (not a leap year).
        assert_eq!(utc_day(1_772_323_199_999), 20260228);
        assert_eq!(utc_day(1_772_323_200_000), 20260301);
        // 2024-02-29 (a leap year).
        assert_eq!(utc_day(1_709_164_800_000), 20240229);
        assert_eq!(utc_day(u64::MAX), 99991231);
    }

    #[test]
    fn open_creates_the_directory_and_a_second_handle_is_refused() {
        let tmp = TempDir::new("open");
        let dir = tmp.0.join("nested/data");
        let store = Store::open(&dir).unwrap();
        assert!(dir.join(FILE_NAME).is_file());
        assert!(matches!(Store::open(&dir), Err(StoreError::Open { .. })));
        drop(store);
        Store::open(&dir).unwrap();
    }

    #[test]
    fn keys_put_list_overwrite_delete() {
        let tmp = TempDir::new("keys");
        let store = Store::open(&tmp.0).unwrap();
        assert!(store.keys().unwrap().is_empty());

        let mut b = record("key_b", "second");
        b.team = Some(Arc::from("team-1"));
        b.metadata.insert("owner".into(), "ci".into());
        let a = record("key_a", "first");
        store.put_key(&b).unwrap();
        store.put_key(&a).unwrap();
        assert_eq!(store.keys().unwrap(), vec![a.clone(), b.clone()]);

        // Same id: replaced, not added.
        let mut b2 = b.clone();
        b2.revoked = true;
        b2.expires_at_ms = Some(1_800_000_000_000);
        store.put_key(&b2).unwrap();
        assert_eq!(store.keys().unwrap(), vec![a.clone(), b2.clone()]);

        store.delete_key("key_a").unwrap();
        store.delete_key("key_missing").unwrap();
        assert_eq!(store.keys().unwrap(), vec![b2.clone()]);

        drop(store);
        let store = Store::open(&tmp.0).unwrap();
        assert_eq!(store.keys().unwrap(), vec![b2]);
    }

    #[test]
    fn a_restart_keeps_every_settled_cent() {
        let tmp = TempDir::new("restart");
        let key = SpendScope::Key("key_1".into());
        let day = 20260115;
        let store = Store::open(&tmp.0).unwrap();
        store
            .add_spend(&[
                row(SpendScope::Global, day, 1_500, (10, 20)),
                row(key.clone(), day, 1_500, (10, 20)),
                // The same scope and day twice in one batch adds up too.
                row(key.clone(), day, 250, (1, 2)),
            ])
            .unwrap();
        store
            .add_spend(&[row(key.clone(), day, 3_000_000_000, (100, 200))])
            .unwrap();
        store.add_spend(&[]).unwrap();
        let expect = totals(3_000_001_750, 111, 222, 3);
        assert_eq!(store.spend(&key, day, day).unwrap(), vec![(day, expect)]);

        drop(store);
        let store = Store::open(&tmp.0).unwrap();
        assert_eq!(store.spend(&key, day, day).unwrap(), vec![(day, expect)]);
        store
            .add_spend(&[row(key.clone(), day, 1, (0, 1))])
            .unwrap();
        drop(store);

        let store = Store::open(&tmp.0).unwrap();
        assert_eq!(
            store.spend(&key, day, day).unwrap(),
            vec![(day, totals(3_000_001_751, 111, 223, 4))]
        );
        assert_eq!(
            store.spend(&SpendScope::Global, day, day).unwrap(),
            vec![(day, totals(1_500, 10, 20, 1))]
        );
    }

    #[test]
    fn spend_ranges_by_day() {
        let tmp = TempDir::new("ranges");
        let store = Store::open(&tmp.0).unwrap();
        let alice = SpendScope::User("alice".into());
        // A scope whose text starts with alice's must not leak into her range.
        let alicia = SpendScope::User("alice:2".into());
        let model = SpendScope::Model("gpt|4o".into());
        let days = [20260130, 20260131, 20260201, 20260301];
        let rows: Vec<SpendRow> = days
            .iter()
            .enumerate()
            .flat_map(|(i, &day)| {
                let n = i as u64 + 1;
                [
                    row(alice.clone(), day, n, (n, n)),
                    row(alicia.clone(), day, 10 * n, (0, 0)),
                    row(model.clone(), day, 100 * n, (0, 0)),
                ]
            })
            .collect();
        store.add_spend(&rows).unwrap();

        let got = store.spend(&alice, 20260131, 20260201).unwrap();
        assert_eq!(
            got,
            vec![
                (20260131, totals(2, 2, 2, 1)),
                (20260201, totals(3, 3, 3, 1))
            ]
        );
        let all_days: Vec<u32> = store
            .spend(&alice, 0, u32::MAX)
            .unwrap()
            .into_iter()
            .map(|(d, _)| d)
            .collect();
        assert_eq!(all_days, days);
        assert!(store.spend(&alice, 20260202, 20260228).unwrap().is_empty());
        assert!(store.spend(&alice, 20260201, 20260131).unwrap().is_empty());
        assert!(
            store
                .spend(&SpendScope::Team("none".into()), 0, u32::MAX)
                .unwrap()
                .is_empty()
        );

        let all = store.spend_all(20260131, 20260201).unwrap();
        assert_eq!(
            all,
            vec![
                (model.clone(), 20260131, totals(200, 0, 0, 1)),
                (alice.clone(), 20260131, totals(2, 2, 2, 1)),
                (alicia.clone(), 20260131, totals(20, 0, 0, 1)),
                (model.clone(), 20260201, totals(300, 0, 0, 1)),
                (alice.clone(), 20260201, totals(3, 3, 3, 1)),
                (alicia.clone(), 20260201, totals(30, 0, 0, 1)),
            ]
        );
        assert_eq!(store.spend_all(0, u32::MAX).unwrap().len(), 12);
        assert_eq!(store.spend_all(20260302, u32::MAX).unwrap(), vec![]);
        assert_eq!(store.spend_all(20260201, 20260131).unwrap(), vec![]);
    }

    #[test]
    fn windows_replace_and_survive_a_restart() {
        let tmp = TempDir::new("windows");
        let store = Store::open(&tmp.0).unwrap();
        assert!(store.windows().unwrap().is_empty());
        let a = meter(Scope::Global, Measure::Requests, Period::Minute);
        let b = meter(Scope::Key(Arc::from("k|1")), Measure::Spend, Period::Day);
        let c = meter(
            Scope::User(Arc::from("bob")),
            Measure::Tokens,
            Period::Month,
        );
        store
            .put_windows(&[(a.clone(), 60_000, 5), (b.clone(), 20260115, 7)])
            .unwrap();
        let mut got = store.windows().unwrap();
        got.sort_by_key(|(_, id, _)| *id);
        assert_eq!(got, vec![(a.clone(), 60_000, 5), (b.clone(), 20260115, 7)]);

        // Replaces the whole set: `a` is gone, `b` has its new count.
        store
            .put_windows(&[(b.clone(), 20260115, 9), (c.clone(), 202601, 11)])
            .unwrap();
        drop(store);
        let store = Store::open(&tmp.0).unwrap();
        let mut got = store.windows().unwrap();
        got.sort_by_key(|(_, id, _)| *id);
        assert_eq!(got, vec![(c.clone(), 202601, 11), (b, 20260115, 9)]);

        store.put_windows(&[]).unwrap();
        assert!(store.windows().unwrap().is_empty());
    }

    #[test]
    fn meter_text_round_trips_every_scope_measure_and_period() {
        let ids = [
            "",
            "plain",
            "|",
            "a|b|c",
            "ends|",
            "|starts",
            ":",
            "key:x",
            "x|requests|minute",
            "global",
            "%7C\\|%",
            "line\nbreak\ttab",
            "ünïcødé 🦀",
        ];
        let mut scopes = vec![Scope::Global];
        for id in ids {
            let id: Arc<str> = Arc::from(id);
            scopes.extend([
                Scope::Key(id.clone()),
                Scope::Team(id.clone()),
                Scope::User(id.clone()),
                Scope::Model(id.clone()),
                Scope::Deployment(id),
            ]);
        }
        let measures = [
            Measure::Requests,
            Measure::Tokens,
            Measure::Concurrent,
            Measure::Spend,
        ];
        let periods = [Period::Minute, Period::Day, Period::Month, Period::Total];
        let mut texts = HashSet::new();
        let mut count = 0;
        for scope in &scopes {
            for &measure in &measures {
                for &period in &periods {
                    let key = meter(scope.clone(), measure, period);
                    let mut text = String::new();
                    push_meter(&mut text, &key);
                    assert_eq!(parse_meter(&text), Some(key), "{text:?}");
                    texts.insert(text);
                    count += 1;
                }
            }
        }
        // Distinct keys, distinct texts.
        assert_eq!(texts.len(), count);
        let mut text = String::new();
        push_meter(
            &mut text,
            &meter(
                Scope::User(Arc::from("alice")),
                Measure::Tokens,
                Period::Day,
            ),
        );
        assert_eq!(text, "user:alice|tokens|day");

        for bad in [
            "",
            "global",
            "global|tokens",
            "global|tokens|week",
            "global|bytes|day",
            "global:x|tokens|day",
            "key|tokens|day",
            "tenant:x|tokens|day",
        ] {
            assert_eq!(parse_meter(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn spend_scope_text_round_trips() {
        for scope in [
            SpendScope::Global,
            SpendScope::Key(String::new()),
            SpendScope::Team("a:b|c".into()),
            SpendScope::User("global".into()),
            SpendScope::Model("🦀".into()),
        ] {
            let mut text = String::new();
            push_spend_scope(&mut text, &scope);
            assert_eq!(parse_spend_scope(&text), Some(scope));
        }
        assert_eq!(parse_spend_scope("deployment:d"), None);
        assert_eq!(parse_spend_scope("global:"), None);
    }

    /// Write a schema version into a closed store's file, as another gateway would.
    fn set_version(dir: &Path, version: u64) {
        let db = Database::create(dir.join(FILE_NAME)).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(META)
            .unwrap()
            .insert(SCHEMA_KEY, version)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn another_schema_version_is_refused() {
        let tmp = TempDir::new("schema");
        drop(Store::open(&tmp.0).unwrap());

        set_version(&tmp.0, SCHEMA_VERSION + 1);
        let err = Store::open(&tmp.0).unwrap_err();
        assert!(
            matches!(
                err,
                StoreError::NewerSchema {
                    found: 2,
                    supported: 1,
                    ..
                }
            ),
            "{err:?}"
        );
        assert!(err.to_string().contains("newer"), "{err}");

        set_version(&tmp.0, 0);
        let err = Store::open(&tmp.0).unwrap_err();
        assert!(
            matches!(err, StoreError::OlderSchema { found: 0, .. }),
            "{err:?}"
        );

        set_version(&tmp.0, SCHEMA_VERSION);
        Store::open(&tmp.0).unwrap();
    }

    /// 10,000 rows (2,000 users × 5 days) in one transaction, twice. Measured on the dev box
    /// (2-core AMD EPYC VM, ext4, unoptimized test build, three runs): 1.4–1.9 s for the batch
    /// of new rows, 0.6–1.1 s for the same batch adding to existing rows. Most of it is redb
    /// built without optimization; no timing is asserted.
    #[test]
    fn ten_thousand_rows_in_one_batch() {
        let tmp = TempDir::new("batch");
        let store = Store::open(&tmp.0).unwrap();
        let rows: Vec<SpendRow> = (0..2_000u64)
            .flat_map(|u| {
                (1..=5).map(move |d| {
                    row(
                        SpendScope::User(format!("user-{u}")),
                        20260100 + d,
                        u,
                        (d as u64, 1),
                    )
                })
            })
            .collect();
        assert_eq!(rows.len(), 10_000);
        let start = Instant::now();
        store.add_spend(&rows).unwrap();
        let first = start.elapsed();
        let start = Instant::now();
        store.add_spend(&rows).unwrap();
        let second = start.elapsed();
        eprintln!("10,000-row add_spend: new rows {first:?}, existing rows {second:?}");

        let all = store.spend_all(0, u32::MAX).unwrap();
        assert_eq!(all.len(), 10_000);
        let nano: u64 = all.iter().map(|(_, _, t)| t.nano_usd).sum();
        assert_eq!(nano, 2 * 5 * (0..2_000u64).sum::<u64>());
        assert!(all.iter().all(|(_, _, t)| t.requests == 2));
        assert_eq!(
            store
                .spend(&SpendScope::User("user-1999".into()), 20260103, 20260104)
                .unwrap(),
            vec![
                (20260103, totals(2 * 1999, 6, 2, 2)),
                (20260104, totals(2 * 1999, 8, 2, 2))
            ]
        );
    }
}
