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

/// Forget the entries of `map` seen longest ago (by `latest`, a time) until
/// at most `keep` are left, and return how many were forgotten: how a
/// module bounds a map whose keys an attacker chooses (addresses, user
/// names), the newest kept. One pass to find the cut and one to remove, so
/// call it when the map is well past `keep` (say, a tenth), not for every
/// new key.
///
/// ```
/// use correlator_sdk::collections::{HashMap, forget_oldest};
///
/// let mut last_seen: HashMap<String, i64> = HashMap::default();
/// for n in 0..20 {
///     last_seen.insert(format!("192.0.2.{n}"), 1_000 + n);
/// }
/// assert_eq!(forget_oldest(&mut last_seen, 9, |&time| time), 11);
/// assert!(last_seen.contains_key("192.0.2.19") && !last_seen.contains_key("192.0.2.10"));
/// ```
pub fn forget_oldest<K, V>(
    map: &mut HashMap<K, V>,
    keep: usize,
    latest: impl Fn(&V) -> i64,
) -> usize {
    if map.len() <= keep {
        return 0;
    }
    let evict = map.len() - keep;
    let mut times: Vec<i64> = map.values().map(&latest).collect();
    let (_, &mut threshold, _) = times.select_nth_unstable(evict - 1);
    let mut left = evict;
    map.retain(|_, value| {
        if left > 0 && latest(value) <= threshold {
            left -= 1;
            false
        } else {
            true
        }
    });
    evict - left
}
