//! A whole store as one byte string, and back: how a partition's state
//! moves between machines (`stream/worker.rs` keeps it in JetStream). A
//! worker works on a local store as any run does, and after each commit
//! exports it; the worker that takes the partition over imports the last
//! export into a fresh file.
//!
//! Layout: [`MAGIC`], then entries until the end, each a table tag (one
//! byte) followed by its key parts and value, every string or byte string
//! as a u32 length (little-endian) and the bytes, every number as a u64.

use super::{CHECKPOINTS, DEAD, ENTRIES, META, NOTICES, OUTBOX, OWNERS, StateError, StateStore};
use redb::{ReadableDatabase as _, ReadableTable as _, TableDefinition};
use std::path::Path;

/// The first bytes of a snapshot, with the layout's version.
const MAGIC: &[u8] = b"correlator-state-1\n";

/// Tables by tag, in the order they are written.
const TAG_META: u8 = 0;
const TAG_OWNERS: u8 = 1;
const TAG_ENTRIES: u8 = 2;
const TAG_CHECKPOINTS: u8 = 3;
const TAG_OUTBOX: u8 = 4;
const TAG_DEAD: u8 = 5;
const TAG_NOTICES: u8 = 6;

/// Tables keyed by a name, with byte values.
const NAMED: [(u8, TableDefinition<'static, &str, &[u8]>); 3] = [
    (TAG_OWNERS, OWNERS),
    (TAG_CHECKPOINTS, CHECKPOINTS),
    (TAG_NOTICES, NOTICES),
];

/// A table keyed by a handler and a number.
type NumberedTable = TableDefinition<'static, (&'static str, u64), &'static [u8]>;

/// Tables keyed by a handler and a number.
const NUMBERED: [(u8, NumberedTable); 2] = [(TAG_OUTBOX, OUTBOX), (TAG_DEAD, DEAD)];

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    // Values are bounded by instances' state quotas, far below 4 GiB.
    let len = u32::try_from(bytes.len()).unwrap_or(u32::MAX);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Reads a snapshot's fields in order.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn bytes(&mut self) -> Option<&'a [u8]> {
        let (len, rest) = self.rest.split_first_chunk::<4>()?;
        let (bytes, rest) = rest.split_at_checked(u32::from_le_bytes(*len) as usize)?;
        self.rest = rest;
        Some(bytes)
    }

    fn text(&mut self) -> Option<&'a str> {
        std::str::from_utf8(self.bytes()?).ok()
    }

    fn number(&mut self) -> Option<u64> {
        let (number, rest) = self.rest.split_first_chunk::<8>()?;
        self.rest = rest;
        Some(u64::from_le_bytes(*number))
    }
}

impl StateStore {
    /// Everything in the store (its app, owners, entries, checkpoint,
    /// outboxes, dead letters and notices) as one byte string, from one
    /// read transaction: a consistent picture of the last commit.
    pub fn export(&self) -> Result<Vec<u8>, StateError> {
        let read = self.db.begin_read().map_err(|e| self.error(e))?;
        let mut out = MAGIC.to_vec();
        macro_rules! each {
            ($definition:expr, |$key:ident, $value:ident| $body:block) => {
                match read.open_table($definition) {
                    Ok(table) => {
                        for entry in table.iter().map_err(|e| self.error(e))? {
                            let (key, value) = entry.map_err(|e| self.error(e))?;
                            let ($key, $value) = (key.value(), value.value());
                            $body
                        }
                    }
                    Err(redb::TableError::TableDoesNotExist(_)) => {}
                    Err(error) => return Err(self.error(error)),
                }
            };
        }
        each!(META, |key, value| {
            out.push(TAG_META);
            put_bytes(&mut out, key.as_bytes());
            put_bytes(&mut out, value.as_bytes());
        });
        each!(ENTRIES, |key, value| {
            out.push(TAG_ENTRIES);
            put_bytes(&mut out, key.0.as_bytes());
            put_bytes(&mut out, key.1.as_bytes());
            put_bytes(&mut out, value);
        });
        for (tag, definition) in NAMED {
            each!(definition, |key, value| {
                out.push(tag);
                put_bytes(&mut out, key.as_bytes());
                put_bytes(&mut out, value);
            });
        }
        for (tag, definition) in NUMBERED {
            each!(definition, |key, value| {
                out.push(tag);
                put_bytes(&mut out, key.0.as_bytes());
                out.extend_from_slice(&key.1.to_le_bytes());
                put_bytes(&mut out, value);
            });
        }
        Ok(out)
    }

    /// A store at `path` (any file there is replaced) holding what
    /// `snapshot` (from [`StateStore::export`]) holds, for `app`.
    pub fn import(path: &Path, app: &str, snapshot: &[u8]) -> Result<StateStore, StateError> {
        let damaged = |reason: &str| StateError::Database {
            path: path.to_owned(),
            reason: format!("the snapshot it is made from is damaged: {reason}"),
        };
        let Some(body) = snapshot.strip_prefix(MAGIC) else {
            return Err(damaged(
                "it does not start as a correlator state snapshot does",
            ));
        };
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => {
                return Err(StateError::Database {
                    path: path.to_owned(),
                    reason: format!("cannot replace it: {error}"),
                });
            }
        }
        let store = StateStore::open(path, app, true)?;
        let write = store.db.begin_write().map_err(|e| store.error(e))?;
        {
            let mut fields = Fields { rest: body };
            let mut meta = write.open_table(META).map_err(|e| store.error(e))?;
            let mut entries = write.open_table(ENTRIES).map_err(|e| store.error(e))?;
            let mut named = NAMED
                .iter()
                .map(|(_, definition)| write.open_table(*definition).map_err(|e| store.error(e)))
                .collect::<Result<Vec<_>, _>>()?;
            let mut numbered = NUMBERED
                .iter()
                .map(|(_, definition)| write.open_table(*definition).map_err(|e| store.error(e)))
                .collect::<Result<Vec<_>, _>>()?;
            while let Some((&tag, rest)) = fields.rest.split_first() {
                fields.rest = rest;
                let cut = || damaged(&format!("an entry of table {tag} is cut short"));
                match tag {
                    TAG_META => {
                        let (key, value) = (fields.text(), fields.text());
                        let (Some(key), Some(value)) = (key, value) else {
                            return Err(cut());
                        };
                        // The store is `app`'s, whoever exported it.
                        if key != "app" {
                            meta.insert(key, value).map_err(|e| store.error(e))?;
                        }
                    }
                    TAG_ENTRIES => {
                        let (instance, key, value) = (fields.text(), fields.text(), fields.bytes());
                        let (Some(instance), Some(key), Some(value)) = (instance, key, value)
                        else {
                            return Err(cut());
                        };
                        entries
                            .insert((instance, key), value)
                            .map_err(|e| store.error(e))?;
                    }
                    _ => {
                        if let Some(at) = NAMED.iter().position(|(named, _)| *named == tag) {
                            let (key, value) = (fields.text(), fields.bytes());
                            let (Some(key), Some(value)) = (key, value) else {
                                return Err(cut());
                            };
                            named[at].insert(key, value).map_err(|e| store.error(e))?;
                        } else if let Some(at) =
                            NUMBERED.iter().position(|(numbered, _)| *numbered == tag)
                        {
                            let (key, number, value) =
                                (fields.text(), fields.number(), fields.bytes());
                            let (Some(key), Some(number), Some(value)) = (key, number, value)
                            else {
                                return Err(cut());
                            };
                            numbered[at]
                                .insert((key, number), value)
                                .map_err(|e| store.error(e))?;
                        } else {
                            return Err(damaged(&format!("table tag {tag} is unknown")));
                        }
                    }
                }
            }
        }
        write.commit().map_err(|e| store.error(e))?;
        Ok(store)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_store::{Checkpoint, InstanceCommit, OutboxChanges, Ownership};

    #[test]
    fn a_store_comes_back_whole_from_its_snapshot() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = StateStore::open(&dir.path().join("a.redb"), "app", false).expect("open");
        let owner = Ownership {
            component: "builtin:sshd".into(),
            digest: "d".into(),
            version: 3,
        };
        let mut writes = crate::state_store::PendingWrites::new();
        writes.insert("sessions".into(), Some(b"\x00\x01binary".to_vec()));
        writes.insert("window".into(), Some(b"{}".to_vec()));
        let checkpoint = Checkpoint {
            clock: crate::types::Timestamp {
                seconds: 1_700_000_000,
                nanoseconds: 5,
                offset_minutes: 60,
            },
            last_record_minute: Some(28_333_333),
            source: "stream CORRELATOR, partition 3".into(),
            position: 1234,
            records: 99,
            written_at: 1,
            files: Vec::new(),
            journal_cursor: None,
            exchange: None,
        };
        let mut outbox = OutboxChanges::default();
        outbox.added.push(("mail".into(), 7, b"message".to_vec()));
        store
            .commit(
                &[InstanceCommit {
                    instance: "OpenSSH",
                    owner: &owner,
                    writes: &writes,
                }],
                &checkpoint,
                &outbox,
            )
            .expect("commit");
        let snapshot = store.export().expect("export");
        let copy =
            StateStore::import(&dir.path().join("b.redb"), "app", &snapshot).expect("import");
        assert_eq!(copy.checkpoint().expect("read"), Some(checkpoint));
        assert_eq!(copy.owner("OpenSSH").expect("read"), Some(owner));
        assert_eq!(
            copy.get("OpenSSH", "sessions").expect("read"),
            Some(b"\x00\x01binary".to_vec())
        );
        assert_eq!(copy.keys("OpenSSH").expect("read").len(), 2);
        assert_eq!(
            copy.outbox().expect("read"),
            [("mail".to_owned(), 7, b"message".to_vec())]
        );
        assert_eq!(copy.export().expect("export"), snapshot);
        let error = StateStore::import(
            &dir.path().join("c.redb"),
            "app",
            &snapshot[..snapshot.len() - 2],
        )
        .err()
        .expect("refused");
        assert!(error.to_string().contains("is cut short"), "{error}");
        let error = StateStore::import(&dir.path().join("c.redb"), "app", b"hello")
            .err()
            .expect("refused");
        assert!(error.to_string().contains("does not start as"), "{error}");
    }
}
