//! Sliding-window counting in record time.

use crate::collections::HashMap;
use std::borrow::Borrow;
use std::collections::VecDeque;
use std::hash::Hash;

/// Counts occurrences per key within the last `window` seconds of *record*
/// time (not wall-clock time), so that a replayed capture counts exactly as
/// the live stream did.
///
/// ```
/// use correlator_sdk::CountOverTime;
///
/// let mut failures: CountOverTime<String> = CountOverTime::new(300);
/// assert_eq!(failures.add("192.0.2.1", 1_000), 1);
/// assert_eq!(failures.add("192.0.2.1", 1_200), 2);
/// // 300 s after the first, the first has left the window.
/// assert_eq!(failures.add("192.0.2.1", 1_300), 2);
/// failures.clear("192.0.2.1");
/// assert_eq!(failures.count("192.0.2.1"), 0);
/// ```
///
/// It serialises (for [`crate::state::save`]) with its window; after
/// loading, [`CountOverTime::set_window`] applies the configured one.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(bound(
    serialize = "K: serde::Serialize + Hash + Eq",
    deserialize = "K: serde::Deserialize<'de> + Hash + Eq"
))]
pub struct CountOverTime<K> {
    window_seconds: i64,
    hits: HashMap<K, VecDeque<i64>>,
}

impl<K: Hash + Eq> CountOverTime<K> {
    /// A counter over the last `window_seconds` seconds.
    pub fn new(window_seconds: i64) -> Self {
        CountOverTime {
            window_seconds,
            hits: HashMap::default(),
        }
    }

    /// Count over the last `window_seconds` seconds from now on (for a
    /// counter loaded from state while the configuration changed).
    pub fn set_window(&mut self, window_seconds: i64) {
        self.window_seconds = window_seconds;
    }

    /// Record one occurrence for `key` at `time` (seconds since the epoch)
    /// and return the number of occurrences within the window ending there:
    /// those at most `window_seconds` before it, not as old as that.
    pub fn add<Q>(&mut self, key: &Q, time: i64) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let window = self.window_seconds;
        let hits = match self.hits.get_mut(key) {
            Some(hits) => hits,
            None => self.hits.entry(key.to_owned()).or_default(),
        };
        hits.push_back(time);
        while hits.front().is_some_and(|&first| first <= time - window) {
            hits.pop_front();
        }
        hits.len()
    }

    /// Occurrences currently counted for `key`.
    pub fn count<Q>(&self, key: &Q) -> usize
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.hits.get(key).map_or(0, VecDeque::len)
    }

    /// The time of the oldest occurrence for `key` still in the window
    /// (as of the last [`CountOverTime::add`] for it): when what is counted
    /// began.
    ///
    /// ```
    /// use correlator_sdk::CountOverTime;
    ///
    /// let mut failures: CountOverTime<String> = CountOverTime::new(300);
    /// failures.add("192.0.2.1", 1_000);
    /// failures.add("192.0.2.1", 1_200);
    /// assert_eq!(failures.oldest("192.0.2.1"), Some(1_000));
    /// failures.add("192.0.2.1", 1_300);
    /// assert_eq!(failures.oldest("192.0.2.1"), Some(1_200));
    /// assert_eq!(failures.oldest("192.0.2.2"), None);
    /// ```
    pub fn oldest<Q>(&self, key: &Q) -> Option<i64>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.hits.get(key)?.front().copied()
    }

    /// Forget every occurrence for `key`.
    pub fn clear<Q>(&mut self, key: &Q)
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.hits.remove(key);
    }

    /// Forget every key whose newest occurrence left the window before
    /// `time`, bounding memory for hosts that stop sending.
    pub fn expire(&mut self, time: i64) {
        let window = self.window_seconds;
        self.hits
            .retain(|_, hits| hits.back().is_some_and(|&last| last > time - window));
    }

    /// Keep at most `max_keys` keys, so that a flood of distinct keys (an
    /// attacker's many addresses) cannot grow the counter without bound:
    /// once there are more, keys out of the window at `time` are forgotten,
    /// then, if still too many, those whose newest occurrence is oldest,
    /// down to nine tenths of `max_keys` (so that this runs once per tenth
    /// of `max_keys` new keys, not for every one). Returns how many keys
    /// were forgotten before their time.
    ///
    /// ```
    /// use correlator_sdk::CountOverTime;
    ///
    /// let mut failures: CountOverTime<String> = CountOverTime::new(300);
    /// for n in 0..20 {
    ///     failures.add(&format!("192.0.2.{n}"), 1_000 + n);
    /// }
    /// assert_eq!(failures.shrink_to(10, 1_020), 11);
    /// assert_eq!(failures.len(), 9);
    /// // The newest are kept.
    /// assert_eq!((failures.count("192.0.2.19"), failures.count("192.0.2.10")), (1, 0));
    /// ```
    pub fn shrink_to(&mut self, max_keys: usize, time: i64) -> usize {
        if self.hits.len() <= max_keys {
            return 0;
        }
        self.expire(time);
        let target = max_keys - max_keys / 10;
        if self.hits.len() <= target {
            return 0;
        }
        crate::collections::forget_oldest(&mut self.hits, target, |hits| {
            hits.back().copied().unwrap_or(i64::MIN)
        })
    }

    /// Number of keys with occurrences in memory.
    pub fn len(&self) -> usize {
        self.hits.len()
    }

    /// Whether no key has occurrences in memory.
    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }
}
