//! Durable state: what a module keeps across restarts of the host.
//!
//! The host keeps each instance's keys and values in its store and makes
//! writes durable at checkpoints: it calls [`Module::checkpoint`], the
//! module writes what changed, and the host commits every module's writes
//! at once with the stream position they reach. [`Module::init`] reads the
//! state back. After a crash a module starts from the last checkpoint,
//! never from half of one.
//!
//! Keep state in ordinary Rust values while processing, and write them in
//! `checkpoint` with [`save`]; that costs one write per checkpoint, not one
//! per record:
//!
//! ```
//! use correlator_sdk::{state, Module};
//! # use correlator_sdk::{Descriptor, Record};
//!
//! #[derive(Default, serde::Serialize, serde::Deserialize)]
//! struct Counts {
//!     records: u64,
//! }
//!
//! struct Counter {
//!     counts: Counts,
//! }
//!
//! impl Module for Counter {
//! #   fn describe() -> Descriptor { Descriptor::new("counter", "counts records") }
//!     fn init() -> Result<Self, String> {
//!         let counts = state::load("counts")?.unwrap_or_default();
//!         Ok(Counter { counts })
//!     }
//!     fn process(&mut self, _record: &Record<'_>) {
//!         self.counts.records += 1;
//!     }
//!     fn checkpoint(&mut self) {
//!         if let Err(error) = state::save("counts", &self.counts) {
//!             correlator_sdk::log::warn(&error);
//!         }
//!     }
//! }
//! ```
//!
//! [`Module::checkpoint`]: crate::Module::checkpoint
//! [`Module::init`]: crate::Module::init

use crate::sys::state as host;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// The bytes stored under `key`, with this run's writes applied.
pub fn get(key: &str) -> Option<Vec<u8>> {
    host::get(key)
}

/// Store `value` under `key`. Refused when the key is empty or longer than
/// 1024 bytes, or when the instance's state would outgrow its
/// `limits.state_mib`.
pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    host::set(key, value)
}

/// Remove `key`.
pub fn delete(key: &str) {
    host::delete(key);
}

/// Every key the instance has, sorted.
pub fn keys() -> Vec<String> {
    host::keys()
}

/// Bytes of one stored piece of a value saved with [`save`]. A value is
/// serialised piece by piece, so that saving a large state needs this much
/// memory beyond the state itself, not a second copy of it.
const PIECE_BYTES: usize = 256 << 10;

/// The first byte of what [`save`] stores under its key: the value itself
/// follows, or the number of pieces stored under `KEY#1`, `KEY#2`, ...
const WHOLE: u8 = 0;
const IN_PIECES: u8 = 1;

/// Store `value` under `key`, serialised compactly (postcard). A value
/// larger than 256 KiB is stored in pieces under `key#1`, `key#2`, ...
/// (never name other keys so).
pub fn save<T: Serialize + ?Sized>(key: &str, value: &T) -> Result<(), String> {
    save_in(&mut HostStore, key, value)
}

/// The value stored under `key` by [`save`], if there is one. An error
/// (naming the key) when the bytes do not deserialise as `T`: state written
/// by another layout, which [`Module::migrate`](crate::Module::migrate)
/// should have rewritten.
pub fn load<T: DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    load_from(&mut HostStore, key)
}

/// Where [`save`] and [`load`] keep bytes: the host, or a map in tests.
trait Store {
    fn get(&mut self, key: &str) -> Option<Vec<u8>>;
    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String>;
    fn delete(&mut self, key: &str);
}

/// The host's `state` interface.
struct HostStore;

impl Store for HostStore {
    fn get(&mut self, key: &str) -> Option<Vec<u8>> {
        host::get(key)
    }

    fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
        host::set(key, value)
    }

    fn delete(&mut self, key: &str) {
        host::delete(key);
    }
}

fn save_in<T: Serialize + ?Sized>(
    store: &mut impl Store,
    key: &str,
    value: &T,
) -> Result<(), String> {
    let stored_before = stored_pieces(store, key);
    let pieces = postcard::serialize_with_flavor(
        value,
        Pieces {
            store: &mut *store,
            key,
            buffer: vec![WHOLE],
            stored: 0,
            error: None,
        },
    );
    let written = match pieces {
        Ok(written) => written?,
        Err(error) => return Err(format!("cannot serialise state \"{key}\": {error}")),
    };
    for stale in written + 1..=stored_before {
        store.delete(&piece_key(key, stale));
    }
    Ok(())
}

fn load_from<T: DeserializeOwned>(store: &mut impl Store, key: &str) -> Result<Option<T>, String> {
    let Some(stored) = store.get(key) else {
        return Ok(None);
    };
    let bytes = match stored.split_first() {
        Some((&WHOLE, value)) => value.to_vec(),
        Some((&IN_PIECES, _)) => {
            let mut bytes = Vec::new();
            for piece in 1..=stored_pieces(store, key) {
                let piece = store
                    .get(&piece_key(key, piece))
                    .ok_or_else(|| format!("state \"{key}\" lacks its piece {piece}"))?;
                bytes.extend_from_slice(&piece);
            }
            bytes
        }
        _ => return Err(format!("state \"{key}\" was not stored by state::save")),
    };
    postcard::from_bytes(&bytes)
        .map(Some)
        .map_err(|error| {
            format!(
                "state \"{key}\" does not read as this version's layout ({error}); a module must raise its STATE_VERSION when its layout changes, and --discard-state INSTANCE starts it empty"
            )
        })
}

fn piece_key(key: &str, piece: u32) -> String {
    format!("{key}#{piece}")
}

/// The number of pieces the value under `key` is stored in (0 if whole).
fn stored_pieces(store: &mut impl Store, key: &str) -> u32 {
    match store.get(key).as_deref() {
        Some([IN_PIECES, count @ ..]) => {
            count.try_into().map(u32::from_le_bytes).unwrap_or_default()
        }
        _ => 0,
    }
}

/// A postcard flavor that hands the store a piece whenever one is full.
struct Pieces<'a, S: Store> {
    store: &'a mut S,
    key: &'a str,
    buffer: Vec<u8>,
    stored: u32,
    error: Option<String>,
}

impl<S: Store> Pieces<'_, S> {
    fn store_piece(&mut self) -> postcard::Result<()> {
        self.stored += 1;
        let result = self
            .store
            .set(&piece_key(self.key, self.stored), &self.buffer);
        self.buffer.clear();
        result.map_err(|error| {
            self.error = Some(error);
            postcard::Error::SerializeBufferFull
        })
    }
}

impl<S: Store> postcard::ser_flavors::Flavor for Pieces<'_, S> {
    /// How many pieces were stored (0: the value was stored whole).
    type Output = Result<u32, String>;

    fn try_push(&mut self, byte: u8) -> postcard::Result<()> {
        self.try_extend(&[byte])
    }

    fn try_extend(&mut self, mut data: &[u8]) -> postcard::Result<()> {
        while !data.is_empty() {
            if self.buffer.len() >= PIECE_BYTES {
                if self.stored == 0 {
                    // The value does not fit whole: the buffer so far,
                    // without its marker, is the first piece.
                    self.buffer.remove(0);
                }
                self.store_piece()?;
            }
            let room = PIECE_BYTES - self.buffer.len().min(PIECE_BYTES);
            let (now, later) = data.split_at(room.min(data.len()));
            self.buffer.extend_from_slice(now);
            data = later;
        }
        Ok(())
    }

    fn finalize(mut self) -> postcard::Result<Self::Output> {
        if let Some(error) = self.error.take() {
            return Ok(Err(error));
        }
        if self.stored == 0 {
            return Ok(self.store.set(self.key, &self.buffer).map(|()| 0));
        }
        if !self.buffer.is_empty() {
            self.store_piece()?;
        }
        let mut header = vec![IN_PIECES];
        header.extend_from_slice(&self.stored.to_le_bytes());
        Ok(self.store.set(self.key, &header).map(|()| self.stored))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    impl Store for BTreeMap<String, Vec<u8>> {
        fn get(&mut self, key: &str) -> Option<Vec<u8>> {
            BTreeMap::get(self, key).cloned()
        }

        fn set(&mut self, key: &str, value: &[u8]) -> Result<(), String> {
            if value.len() > PIECE_BYTES + 1 {
                return Err(format!("{key}: {} bytes is more than a piece", value.len()));
            }
            self.insert(key.to_owned(), value.to_vec());
            Ok(())
        }

        fn delete(&mut self, key: &str) {
            self.remove(key);
        }
    }

    #[test]
    fn small_values_are_stored_whole_and_large_ones_in_pieces_that_shrink_again() {
        let mut store = BTreeMap::new();
        save_in(&mut store, "small", &(7u32, "seven")).expect("saved");
        assert_eq!(store.keys().collect::<Vec<_>>(), ["small"]);
        assert_eq!(
            load_from::<(u32, String)>(&mut store, "small"),
            Ok(Some((7, "seven".to_owned())))
        );

        // 600,000 bytes of strings: three pieces.
        let large: Vec<String> = (0..60_000).map(|n| format!("{n:09}")).collect();
        save_in(&mut store, "large", &large).expect("saved");
        assert_eq!(
            store.keys().collect::<Vec<_>>(),
            ["large", "large#1", "large#2", "large#3", "small"]
        );
        assert_eq!(load_from(&mut store, "large"), Ok(Some(large)));

        // Smaller: two pieces, the stale third deleted.
        let smaller: Vec<String> = (0..30_000).map(|n| format!("{n:09}")).collect();
        save_in(&mut store, "large", &smaller).expect("saved");
        assert_eq!(
            store.keys().collect::<Vec<_>>(),
            ["large", "large#1", "large#2", "small"]
        );
        assert_eq!(load_from(&mut store, "large"), Ok(Some(smaller)));
        // Whole again.
        save_in(&mut store, "large", &1u8).expect("saved");
        assert_eq!(store.keys().collect::<Vec<_>>(), ["large", "small"]);
        assert_eq!(load_from(&mut store, "large"), Ok(Some(1u8)));

        assert_eq!(load_from::<u8>(&mut store, "absent"), Ok(None));
        store.insert("raw".into(), vec![9, 9]);
        assert_eq!(
            load_from::<u8>(&mut store, "raw"),
            Err("state \"raw\" was not stored by state::save".into())
        );
        store.remove("large");
        save_in(&mut store, "large", &vec![0u8; 300_000]).expect("saved");
        store.remove("large#2");
        assert_eq!(
            load_from::<Vec<u8>>(&mut store, "large"),
            Err("state \"large\" lacks its piece 2".into())
        );
    }
}
