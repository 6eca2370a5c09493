//! The durable state store: every module instance's keys and values, who
//! wrote them, and the checkpoint they belong to, in one redb database in
//! the run directory.
//!
//! redb commits are atomic and crash-safe (copy-on-write pages, a checksummed
//! commit slot): after `kill -9` or a power cut the file opens at the last
//! commit. The host commits once per checkpoint, with every instance's
//! writes since the previous one and the stream position they reach, so the
//! state on disk is always the state after one known record.
//!
//! The store belongs to one app: opening it for another is refused (the
//! original loaded any pickle file it was given). Each instance's state
//! records the component and the state version that wrote it, checked at
//! start-up by the loader.

use crate::types::Timestamp;
mod snapshot;

use redb::{Database, ReadOnlyDatabase, ReadableDatabase, ReadableTable as _, TableDefinition};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `"app"` → the owning app's name.
const META: TableDefinition<&str, &str> = TableDefinition::new("meta");
/// Instance name → its [`Ownership`], JSON.
const OWNERS: TableDefinition<&str, &[u8]> = TableDefinition::new("owners");
/// (instance, key) → value.
const ENTRIES: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("entries");
/// `"last"` → the latest [`Checkpoint`], JSON.
const CHECKPOINTS: TableDefinition<&str, &[u8]> = TableDefinition::new("checkpoints");
/// (handler, number) → a delivery waiting in its outbox (`delivery/`).
const OUTBOX: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("outbox");
/// (handler, number) → a delivery given up, with why (the dead letters).
const DEAD: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("dead_letters");
/// What each handler's notifier holds (`notify.rs`), by handler.
const NOTICES: TableDefinition<&str, &[u8]> = TableDefinition::new("notices");

/// Makes a delivery to send again of a dead letter (`None`: it cannot).
pub type Revive = dyn Fn(&[u8]) -> Option<Vec<u8>>;

/// Which kept deliveries an `outbox` command is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Letters {
    /// Those waiting in an outbox.
    Waiting,
    /// Those given up.
    Dead,
}

/// What changed in the handlers' outboxes since the last commit: the
/// deliveries handed over, and those done with (accepted, or given up).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct OutboxChanges {
    /// (handler, number, the delivery as stored).
    pub added: Vec<(String, u64, Vec<u8>)>,
    /// (handler, number).
    pub removed: Vec<(String, u64)>,
    /// (handler, number, the delivery given up and why, as stored): kept
    /// apart as dead letters.
    pub dead: Vec<(String, u64, Vec<u8>)>,
    /// (handler, what its notifier holds, as stored): the latest replaces
    /// the stored one (`notify.rs`).
    pub notices: Vec<(String, Vec<u8>)>,
}

impl OutboxChanges {
    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.removed.is_empty()
            && self.dead.is_empty()
            && self.notices.is_empty()
    }

    /// Take `other`'s changes after these. A delivery both added and
    /// removed before a commit is never written (its removal stays: it
    /// removes nothing).
    pub fn merge(&mut self, other: OutboxChanges) {
        self.added.extend(other.added);
        self.removed.extend(other.removed);
        self.dead.extend(other.dead);
        self.notices.extend(other.notices);
        if self.removed.is_empty() {
            return;
        }
        let removed: std::collections::HashSet<(&str, u64)> = self
            .removed
            .iter()
            .map(|(handler, number)| (handler.as_str(), *number))
            .collect();
        self.added
            .retain(|(handler, number, _)| !removed.contains(&(handler.as_str(), *number)));
    }
}

/// Who wrote an instance's state.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ownership {
    /// The component's declared name (its descriptor's `name`).
    pub component: String,
    /// SHA-256 of the component file that last wrote it, for messages.
    pub digest: String,
    /// The module's `state-version`.
    pub version: u32,
}

/// Where the stream was when the state was committed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// The stream clock: the time of the last record processed.
    #[serde(with = "timestamp_as_tuple")]
    pub clock: Timestamp,
    /// The last minute boundary whose ticks were given, when ticks followed
    /// the records' time; `None` when they followed the wall clock.
    pub last_record_minute: Option<i64>,
    /// What was being read: a capture's path, or `network`.
    pub source: String,
    /// Position of the last record processed in `source` (a capture's line).
    pub position: u64,
    /// Records processed in this run up to the checkpoint.
    pub records: u64,
    /// Wall-clock time of the commit, seconds since the epoch.
    pub written_at: u64,
    /// Followed files (`--follow`): how far each was read, as of the
    /// last record processed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub files: Vec<FileMark>,
    /// The systemd journal (`--journal`): the cursor of the last entry
    /// processed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub journal_cursor: Option<String>,
    /// A worker's partition: where it stands in the keyed messages of the
    /// other partitions (`stream/exchange.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exchange: Option<crate::stream::exchange::ExchangeMark>,
}

/// How far the inputs that are read rather than received (followed files,
/// the journal) stand once a batch's records are processed: carried by the
/// batch, stored by the checkpoint after it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputMarks {
    /// Each followed file.
    pub files: Vec<FileMark>,
    /// The journal's cursor.
    pub journal_cursor: Option<String>,
    /// A worker's partition: where it stands in the exchange.
    pub exchange: Option<crate::stream::exchange::ExchangeMark>,
}

/// How far one followed file was read: the file is known by its device
/// and inode (a rotation renames it, and its path then names another), and
/// `offset` is the byte after the last line handed on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileMark {
    /// The path it was followed under.
    pub path: String,
    /// Its device and inode.
    pub device: u64,
    /// Its inode.
    pub inode: u64,
    /// Bytes read through the end of the last line handed on.
    pub offset: u64,
}

impl Checkpoint {
    /// Where a run stood at this checkpoint, for people: `after record N
    /// of SOURCE (stream clock ..., committed ... UTC)`.
    pub fn describe(&self) -> String {
        let utc = crate::record::time::format_utc;
        format!(
            "after record {} of {} (stream clock {}, committed {})",
            self.position,
            self.source,
            utc(self.clock.seconds),
            utc(i64::try_from(self.written_at).unwrap_or(i64::MAX))
        )
    }
}

/// A [`Timestamp`] (a generated type) as `[seconds, nanoseconds, offset]`.
mod timestamp_as_tuple {
    use crate::types::Timestamp;
    use serde::{Deserialize as _, Deserializer, Serialize as _, Serializer};

    pub fn serialize<S: Serializer>(time: &Timestamp, serializer: S) -> Result<S::Ok, S::Error> {
        (time.seconds, time.nanoseconds, time.offset_minutes).serialize(serializer)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Timestamp, D::Error> {
        let (seconds, nanoseconds, offset_minutes) = <(i64, u32, i16)>::deserialize(deserializer)?;
        Ok(Timestamp {
            seconds,
            nanoseconds,
            offset_minutes,
        })
    }
}

/// What went wrong with the state store.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// redb could not open, read or write the file.
    #[error("state store {path}: {reason}")]
    Database {
        /// The store file.
        path: PathBuf,
        /// redb's reason, in words (its error repeats its source).
        reason: String,
    },
    /// Another process has the store open (a store has one user at a time).
    #[error("state store {path}: another correlator process has it open")]
    InUse {
        /// The store file.
        path: PathBuf,
    },
    /// The store was not closed cleanly: opening it to write repairs it,
    /// opening it only to read cannot.
    #[error("state store {path}: it was not closed cleanly; the next start repairs it")]
    NeedsRepair {
        /// The store file.
        path: PathBuf,
    },
    /// The file holds another app's state.
    #[error(
        "state store {path} belongs to app \"{owner}\", not \"{app}\"; give each app its own system.run_dir (or state.file), or start with --discard-all-state to delete the other app's state"
    )]
    OtherApp {
        /// The store file.
        path: PathBuf,
        /// The app that wrote it.
        owner: String,
        /// The app starting now.
        app: String,
    },
    /// A record in the store does not parse.
    #[error("state store {path}: {what} is damaged: {reason}")]
    Damaged {
        /// The store file.
        path: PathBuf,
        /// Which record.
        what: String,
        /// Why it does not parse.
        reason: String,
    },
}

/// What one entry counts against an instance's `limits.state_mib`: its key
/// and value, and 64 bytes for what the database keeps beside them, so
/// that a flood of tiny keys is bounded too.
pub fn entry_bytes(key_len: usize, value_len: usize) -> u64 {
    (key_len + value_len) as u64 + 64
}

/// One instance's writes since the last commit: `None` deletes the key.
pub type PendingWrites = BTreeMap<String, Option<Vec<u8>>>;

/// One instance's part of a commit.
pub struct InstanceCommit<'a> {
    /// The instance name.
    pub instance: &'a str,
    /// Who writes it.
    pub owner: &'a Ownership,
    /// What changed.
    pub writes: &'a PendingWrites,
}

/// The open store.
pub struct StateStore {
    db: Database,
    path: PathBuf,
}

/// A store opened only to be looked at (for `correlator check`): redb's
/// read-only mode, so nothing in the file changes.
pub struct StateView {
    db: ReadOnlyDatabase,
    path: PathBuf,
}

impl StateView {
    /// The deliveries waiting, or given up (as [`StateStore::letters`]).
    pub fn letters(&self, which: Letters) -> Result<Vec<(String, u64, Vec<u8>)>, StateError> {
        self.reader().letters(which)
    }

    /// Open `path` to look at it. `Ok(None)` when there is no store yet;
    /// an error when it belongs to another app (as [`StateStore::open`]
    /// says), is not a store, was not closed cleanly (the next start
    /// repairs it), or another process has it open.
    pub fn open(path: &Path, app: &str) -> Result<Option<StateView>, StateError> {
        if !path.exists() {
            return Ok(None);
        }
        let db = ReadOnlyDatabase::open(path).map_err(|error| open_failed(path, error))?;
        let view = StateView {
            db,
            path: path.to_owned(),
        };
        match view.reader().app()? {
            Some(owner) if owner != app => Err(StateError::OtherApp {
                path: path.to_owned(),
                owner,
                app: app.to_owned(),
            }),
            _ => Ok(Some(view)),
        }
    }

    fn reader(&self) -> Reader<'_, ReadOnlyDatabase> {
        Reader {
            db: &self.db,
            path: &self.path,
        }
    }

    /// Who wrote `instance`'s state, if it has any.
    pub fn owner(&self, instance: &str) -> Result<Option<Ownership>, StateError> {
        self.reader().owner(instance)
    }

    /// Every key of `instance`, sorted, with the length of its value.
    pub fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError> {
        self.reader().keys(instance)
    }

    /// The latest checkpoint, if any was committed.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        self.reader().checkpoint()
    }
}

/// The reads a store and a read-only view of one share.
struct Reader<'a, D> {
    db: &'a D,
    path: &'a Path,
}

impl<D: ReadableDatabase> Reader<'_, D> {
    /// The deliveries waiting, or given up: (handler, number, as stored),
    /// by handler and number.
    fn letters(&self, which: Letters) -> Result<Vec<(String, u64, Vec<u8>)>, StateError> {
        let definition = match which {
            Letters::Waiting => OUTBOX,
            Letters::Dead => DEAD,
        };
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(definition) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(self.error(error)),
        };
        let mut letters = Vec::new();
        for entry in table.iter().map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (handler, number) = key.value();
            letters.push((handler.to_owned(), number, value.value().to_vec()));
        }
        Ok(letters)
    }

    fn error(&self, error: impl Into<redb::Error>) -> StateError {
        StateError::Database {
            path: self.path.to_owned(),
            reason: error.into().to_string(),
        }
    }

    fn damaged(&self, what: &str, error: &serde_json::Error) -> StateError {
        StateError::Damaged {
            path: self.path.to_owned(),
            what: what.to_owned(),
            reason: error.to_string(),
        }
    }

    /// The app the store belongs to; `None` for a new store.
    fn app(&self) -> Result<Option<String>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(META) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let app = table.get("app").map_err(|e| self.error(e))?;
        Ok(app.map(|guard| guard.value().to_owned()))
    }

    /// Who wrote `instance`'s state, if it has any.
    fn owner(&self, instance: &str) -> Result<Option<Ownership>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(OWNERS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let Some(guard) = table.get(instance).map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(guard.value())
            .map(Some)
            .map_err(|error| self.damaged(&format!("the owner of \"{instance}\""), &error))
    }

    /// The latest checkpoint, if any was committed.
    fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(CHECKPOINTS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let Some(guard) = table.get("last").map_err(|e| self.error(e))? else {
            return Ok(None);
        };
        serde_json::from_slice(guard.value())
            .map(Some)
            .map_err(|error| self.damaged("the checkpoint", &error))
    }

    /// Every key of `instance` with the size of its value, sorted.
    fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(ENTRIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(error) => return Err(self.error(error)),
        };
        let mut keys = Vec::new();
        for entry in table.range((instance, "")..).map_err(|e| self.error(e))? {
            let (key, value) = entry.map_err(|e| self.error(e))?;
            let (owner, key) = key.value();
            if owner != instance {
                break;
            }
            keys.push((key.to_owned(), value.value().len()));
        }
        Ok(keys)
    }

    /// `read` of the value of `key` of `instance`, if there is one.
    fn read_value<T>(
        &self,
        instance: &str,
        key: &str,
        read: impl FnOnce(&[u8]) -> T,
    ) -> Result<Option<T>, StateError> {
        let transaction = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match transaction.open_table(ENTRIES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let value = table.get((instance, key)).map_err(|e| self.error(e))?;
        Ok(value.map(|guard| read(guard.value())))
    }
}

/// The reads an instance's state makes (`host/state.rs`): of the store a
/// run commits to, or of a read-only view, on which `check` starts the
/// modules so that one that cannot read its state fails there as at `run`.
pub trait StateReads: Send + Sync {
    /// The value of `key` of `instance`.
    fn get(&self, instance: &str, key: &str) -> Result<Option<Vec<u8>>, StateError>;
    /// The length of the value of `key` of `instance`.
    fn value_len(&self, instance: &str, key: &str) -> Result<Option<usize>, StateError>;
    /// Every key of `instance`, sorted, with the length of its value.
    fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError>;
}

impl StateReads for StateStore {
    fn get(&self, instance: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        StateStore::get(self, instance, key)
    }

    fn value_len(&self, instance: &str, key: &str) -> Result<Option<usize>, StateError> {
        StateStore::value_len(self, instance, key)
    }

    fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError> {
        StateStore::keys(self, instance)
    }
}

impl StateReads for StateView {
    fn get(&self, instance: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.reader().read_value(instance, key, <[u8]>::to_vec)
    }

    fn value_len(&self, instance: &str, key: &str) -> Result<Option<usize>, StateError> {
        self.reader().read_value(instance, key, <[u8]>::len)
    }

    fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError> {
        StateView::keys(self, instance)
    }
}

/// Why redb could not open `path`.
fn open_failed(path: &Path, error: redb::DatabaseError) -> StateError {
    let path = path.to_owned();
    match error {
        redb::DatabaseError::DatabaseAlreadyOpen => StateError::InUse { path },
        redb::DatabaseError::RepairAborted => StateError::NeedsRepair { path },
        other => StateError::Database {
            path,
            reason: other.to_string(),
        },
    }
}

impl StateStore {
    /// Open (or create) the store at `path` for `app`. A store of another
    /// app is refused. With `take_over`, everything in the store is deleted
    /// first (whoever's it was) and it becomes `app`'s.
    pub fn open(path: &Path, app: &str, take_over: bool) -> Result<StateStore, StateError> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|error| StateError::Database {
                path: path.to_owned(),
                reason: format!("cannot create its directory: {error}"),
            })?;
        }
        let db = Database::create(path).map_err(|error| open_failed(path, error))?;
        let store = StateStore {
            db,
            path: path.to_owned(),
        };
        match store.app()? {
            _ if take_over => store.reset(app)?,
            Some(owner) if owner == app => {}
            Some(owner) => {
                return Err(StateError::OtherApp {
                    path: path.to_owned(),
                    owner,
                    app: app.to_owned(),
                });
            }
            None => store.reset(app)?,
        }
        Ok(store)
    }

    /// The store's file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn reader(&self) -> Reader<'_, Database> {
        Reader {
            db: &self.db,
            path: &self.path,
        }
    }

    fn error(&self, error: impl Into<redb::Error>) -> StateError {
        self.reader().error(error)
    }

    fn damaged(&self, what: &str, error: &serde_json::Error) -> StateError {
        self.reader().damaged(what, error)
    }

    /// The app the store belongs to; `None` for a new store.
    fn app(&self) -> Result<Option<String>, StateError> {
        self.reader().app()
    }

    /// Who wrote `instance`'s state, if it has any.
    pub fn owner(&self, instance: &str) -> Result<Option<Ownership>, StateError> {
        self.reader().owner(instance)
    }

    /// Every key of `instance`, sorted, with the length of its value.
    pub fn keys(&self, instance: &str) -> Result<Vec<(String, usize)>, StateError> {
        self.reader().keys(instance)
    }

    /// Empty the store and give it to `app`.
    fn reset(&self, app: &str) -> Result<(), StateError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        for table in [OWNERS, CHECKPOINTS] {
            write.delete_table(table).map_err(|e| self.error(e))?;
        }
        write.delete_table(ENTRIES).map_err(|e| self.error(e))?;
        write.delete_table(OUTBOX).map_err(|e| self.error(e))?;
        write.delete_table(DEAD).map_err(|e| self.error(e))?;
        write.delete_table(NOTICES).map_err(|e| self.error(e))?;
        {
            let mut meta = write.open_table(META).map_err(|e| self.error(e))?;
            meta.insert("app", app).map_err(|e| self.error(e))?;
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// The latest checkpoint, if any was committed.
    pub fn checkpoint(&self) -> Result<Option<Checkpoint>, StateError> {
        self.reader().checkpoint()
    }

    /// Delete `instance`'s state and owner.
    pub fn discard(&self, instance: &str) -> Result<(), StateError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        {
            let mut owners = write.open_table(OWNERS).map_err(|e| self.error(e))?;
            owners.remove(instance).map_err(|e| self.error(e))?;
            let mut entries = write.open_table(ENTRIES).map_err(|e| self.error(e))?;
            entries
                .retain_in(
                    (instance, "")..=(instance, "\u{10ffff}"),
                    |(owner, _), _| owner != instance,
                )
                .map_err(|e| self.error(e))?;
        }
        write.commit().map_err(|e| self.error(e))
    }

    /// Delete every module's state and owner and the checkpoint, in one
    /// commit, keeping what handlers hold (deliveries waiting, dead
    /// letters, notices): a replay that starts over must neither count on
    /// from the old state nor, if killed before its first checkpoint, be
    /// continued from the old position.
    pub fn forget_modules(&self) -> Result<(), StateError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        for table in [OWNERS, CHECKPOINTS] {
            write.delete_table(table).map_err(|e| self.error(e))?;
        }
        write.delete_table(ENTRIES).map_err(|e| self.error(e))?;
        write.commit().map_err(|e| self.error(e))
    }

    /// The value of `key` of `instance`.
    pub fn get(&self, instance: &str, key: &str) -> Result<Option<Vec<u8>>, StateError> {
        self.reader().read_value(instance, key, <[u8]>::to_vec)
    }

    /// The length of the value of `key` of `instance`, without copying it.
    pub fn value_len(&self, instance: &str, key: &str) -> Result<Option<usize>, StateError> {
        self.reader().read_value(instance, key, <[u8]>::len)
    }

    /// Commit every instance's writes, their owners and the checkpoint in
    /// one transaction. Returns each instance's change in stored bytes.
    pub fn commit(
        &self,
        instances: &[InstanceCommit<'_>],
        checkpoint: &Checkpoint,
        outbox: &OutboxChanges,
    ) -> Result<Vec<i64>, StateError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        self.write_outbox(&write, outbox)?;
        let mut growth = Vec::with_capacity(instances.len());
        {
            let mut owners = write.open_table(OWNERS).map_err(|e| self.error(e))?;
            let mut entries = write.open_table(ENTRIES).map_err(|e| self.error(e))?;
            for commit in instances {
                let mut grown = 0i64;
                for (key, value) in commit.writes {
                    let old = match value {
                        Some(value) => entries
                            .insert((commit.instance, key.as_str()), value.as_slice())
                            .map_err(|e| self.error(e))?
                            .map(|old| old.value().len()),
                        None => entries
                            .remove((commit.instance, key.as_str()))
                            .map_err(|e| self.error(e))?
                            .map(|old| old.value().len()),
                    };
                    let new = value
                        .as_ref()
                        .map_or(0, |v| entry_bytes(key.len(), v.len()));
                    let old = old.map_or(0, |len| entry_bytes(key.len(), len));
                    grown += i64::try_from(new).unwrap_or(i64::MAX)
                        - i64::try_from(old).unwrap_or(i64::MAX);
                }
                let owner = serde_json::to_vec(commit.owner)
                    .map_err(|error| self.damaged("an owner", &error))?;
                owners
                    .insert(commit.instance, owner.as_slice())
                    .map_err(|e| self.error(e))?;
                growth.push(grown);
            }
            let mut checkpoints = write.open_table(CHECKPOINTS).map_err(|e| self.error(e))?;
            let checkpoint = serde_json::to_vec(checkpoint)
                .map_err(|error| self.damaged("the checkpoint", &error))?;
            checkpoints
                .insert("last", checkpoint.as_slice())
                .map_err(|e| self.error(e))?;
        }
        write.commit().map_err(|e| self.error(e))?;
        Ok(growth)
    }

    /// Commit outbox changes alone (after the last checkpoint of a run,
    /// for what the courier did while the run ended).
    pub fn commit_outbox(&self, outbox: &OutboxChanges) -> Result<(), StateError> {
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        self.write_outbox(&write, outbox)?;
        write.commit().map_err(|e| self.error(e))
    }

    fn write_outbox(
        &self,
        write: &redb::WriteTransaction,
        outbox: &OutboxChanges,
    ) -> Result<(), StateError> {
        if outbox.is_empty() {
            return Ok(());
        }
        let mut table = write.open_table(OUTBOX).map_err(|e| self.error(e))?;
        for (handler, number, stored) in &outbox.added {
            table
                .insert((handler.as_str(), *number), stored.as_slice())
                .map_err(|e| self.error(e))?;
        }
        for (handler, number) in &outbox.removed {
            table
                .remove((handler.as_str(), *number))
                .map_err(|e| self.error(e))?;
        }
        if !outbox.notices.is_empty() {
            let mut notices = write.open_table(NOTICES).map_err(|e| self.error(e))?;
            for (handler, stored) in &outbox.notices {
                notices
                    .insert(handler.as_str(), stored.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        if !outbox.dead.is_empty() {
            let mut dead = write.open_table(DEAD).map_err(|e| self.error(e))?;
            for (handler, number, stored) in &outbox.dead {
                dead.insert((handler.as_str(), *number), stored.as_slice())
                    .map_err(|e| self.error(e))?;
            }
        }
        Ok(())
    }

    /// What `handler`'s notifier held at the last checkpoint, if anything.
    pub fn notices(&self, handler: &str) -> Result<Option<Vec<u8>>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let table = match read.open_table(NOTICES) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(error) => return Err(self.error(error)),
        };
        let stored = table.get(handler).map_err(|e| self.error(e))?;
        Ok(stored.map(|value| value.value().to_vec()))
    }

    /// Every delivery waiting in an outbox: (handler, number, as stored),
    /// by handler and number.
    pub fn outbox(&self) -> Result<Vec<(String, u64, Vec<u8>)>, StateError> {
        self.letters(Letters::Waiting)
    }

    /// The deliveries waiting, or given up: (handler, number, as stored),
    /// by handler and number.
    pub fn letters(&self, which: Letters) -> Result<Vec<(String, u64, Vec<u8>)>, StateError> {
        self.reader().letters(which)
    }

    /// Remove the deliveries `which` that `select` picks (by handler and
    /// number); with `revive`, each is first put back in its outbox as
    /// `revive` makes it (from a dead letter, the delivery to send again).
    /// Returns how many were taken.
    pub fn take_letters(
        &self,
        which: Letters,
        select: impl Fn(&str, u64) -> bool,
        revive: Option<&Revive>,
    ) -> Result<u64, StateError> {
        let picked: Vec<(String, u64, Vec<u8>)> = self
            .letters(which)?
            .into_iter()
            .filter(|(handler, number, _)| select(handler, *number))
            .collect();
        let definition = match which {
            Letters::Waiting => OUTBOX,
            Letters::Dead => DEAD,
        };
        let write = self.db.begin_write().map_err(|e| self.error(e))?;
        let mut taken = 0;
        {
            let mut table = write.open_table(definition).map_err(|e| self.error(e))?;
            // Reviving moves dead letters to the outbox (another table).
            let revive = revive.filter(|_| which == Letters::Dead);
            let mut outbox = match revive {
                Some(_) => Some(write.open_table(OUTBOX).map_err(|e| self.error(e))?),
                None => None,
            };
            for (handler, number, bytes) in &picked {
                if let (Some(revive), Some(outbox)) = (revive, outbox.as_mut()) {
                    let Some(delivery) = revive(bytes) else {
                        continue;
                    };
                    outbox
                        .insert((handler.as_str(), *number), delivery.as_slice())
                        .map_err(|e| self.error(e))?;
                }
                table
                    .remove((handler.as_str(), *number))
                    .map_err(|e| self.error(e))?;
                taken += 1;
            }
        }
        write.commit().map_err(|e| self.error(e))?;
        Ok(taken)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn owner(version: u32) -> Ownership {
        Ownership {
            component: "sshd".into(),
            digest: "abc".into(),
            version,
        }
    }

    fn checkpoint(position: u64) -> Checkpoint {
        Checkpoint {
            clock: Timestamp {
                seconds: 1_676_905_200,
                nanoseconds: 5,
                offset_minutes: 60,
            },
            last_record_minute: Some(27_948_420),
            source: "x.cap".into(),
            position,
            records: position,
            written_at: 1,
            files: Vec::new(),
            journal_cursor: None,
            exchange: None,
        }
    }

    #[test]
    fn writes_owners_and_checkpoint_survive_reopening() -> Result<(), StateError> {
        let dir = tempfile::tempdir().map_err(|e| StateError::Database {
            path: PathBuf::new(),
            reason: e.to_string(),
        })?;
        let path = dir.path().join("sub").join("state.redb");
        {
            let store = StateStore::open(&path, "app", false)?;
            assert_eq!(store.checkpoint()?, None);
            let mut writes = PendingWrites::new();
            writes.insert("b".into(), Some(vec![1, 2, 3]));
            writes.insert("a".into(), Some(vec![9]));
            let mut other = PendingWrites::new();
            other.insert("a".into(), Some(vec![7, 7]));
            let grown = store.commit(
                &[
                    InstanceCommit {
                        instance: "one",
                        owner: &owner(1),
                        writes: &writes,
                    },
                    InstanceCommit {
                        instance: "onex",
                        owner: &owner(2),
                        writes: &other,
                    },
                ],
                &checkpoint(7),
                &OutboxChanges::default(),
            )?;
            assert_eq!(grown, [6 + 2 * 64, 3 + 64]);
            let mut delete = PendingWrites::new();
            delete.insert("b".into(), None);
            delete.insert("absent".into(), None);
            let grown = store.commit(
                &[InstanceCommit {
                    instance: "one",
                    owner: &owner(1),
                    writes: &delete,
                }],
                &checkpoint(9),
                &OutboxChanges::default(),
            )?;
            assert_eq!(grown, [-4 - 64]);
        }
        let store = StateStore::open(&path, "app", false)?;
        assert_eq!(store.keys("one")?, [("a".to_owned(), 1)]);
        assert_eq!(store.keys("onex")?, [("a".to_owned(), 2)]);
        assert_eq!(store.get("one", "a")?, Some(vec![9]));
        assert_eq!(store.value_len("onex", "a")?, Some(2));
        assert_eq!(store.value_len("one", "b")?, None);
        assert_eq!(store.get("one", "b")?, None);
        assert_eq!(store.owner("onex")?, Some(owner(2)));
        assert_eq!(store.owner("two")?, None);
        assert_eq!(store.checkpoint()?, Some(checkpoint(9)));
        store.discard("one")?;
        assert_eq!(store.keys("one")?, []);
        assert_eq!(store.owner("one")?, None);
        assert_eq!(store.keys("onex")?, [("a".to_owned(), 2)]);
        drop(store);

        match StateStore::open(&path, "other", false) {
            Err(StateError::OtherApp { owner, app, .. }) => {
                assert_eq!((owner.as_str(), app.as_str()), ("app", "other"));
            }
            Err(error) => panic!("unexpected error {error}"),
            Ok(_) => panic!("another app's store was opened"),
        }
        let store = StateStore::open(&path, "other", true)?;
        assert_eq!(store.keys("onex")?, []);
        assert_eq!(store.checkpoint()?, None);
        store.commit(
            &[InstanceCommit {
                instance: "one",
                owner: &owner(1),
                writes: &PendingWrites::from([("k".to_owned(), Some(vec![1]))]),
            }],
            &checkpoint(1),
            &OutboxChanges::default(),
        )?;
        drop(store);
        // Taking over one's own store empties it too.
        let store = StateStore::open(&path, "other", true)?;
        assert_eq!(store.keys("one")?, []);
        assert_eq!(store.checkpoint()?, None);
        Ok(())
    }
}
