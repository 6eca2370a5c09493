//! Hash maps for module state: fast, and seeded at random.
//!
//! Keys taken from log lines (addresses, user names) are chosen by whoever
//! writes those lines, so a fixed hash function would let an attacker make
//! every key collide and slow a module to a crawl. These maps use foldhash,
//! seeded from the host's random source, which is both fast in WebAssembly
//! and unpredictable from outside. std's default (SipHash) is as safe but
//! several times slower per lookup.

use std::hash::BuildHasher;

/// The [`BuildHasher`] of [`HashMap`] and [`HashSet`].
#[derive(Clone, Debug)]
pub struct RandomState(foldhash::fast::SeedableRandomState);

impl Default for RandomState {
    fn default() -> Self {
        // std's RandomState draws its keys from the host's random source.
        let seed = std::collections::hash_map::RandomState::new().hash_one(0x5eed_u64);
        RandomState(foldhash::fast::SeedableRandomState::with_seed(
            seed,
            foldhash::SharedSeed::global_fixed(),
        ))
    }
}

impl BuildHasher for RandomState {
    type Hasher = foldhash::fast::FoldHasher<'static>;

    fn build_hasher(&self) -> Self::Hasher {
        self.0.build_hasher()
    }
}

/// `std::collections::HashMap` with a fast, randomly seeded hasher.
///
/// ```
/// let mut sessions: correlator_sdk::collections::HashMap<String, u32> = Default::default();
/// sessions.insert("alice".to_owned(), 1);
/// assert_eq!(sessions.get("alice"), Some(&1));
/// ```
pub type HashMap<K, V> = std::collections::HashMap<K, V, RandomState>;

/// `std::collections::HashSet` with a fast, randomly seeded hasher.
pub type HashSet<T> = std::collections::HashSet<T, RandomState>;
