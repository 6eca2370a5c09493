//! Connection slots: who may hold one of the `listen.max_connections`, and
//! whose slot goes to a newcomer when they are all taken.
//!
//! A connection that has not sent a byte yet holds its slot only until a
//! connection that needs one comes: when every slot (or every slot of one
//! address, `listen.max_connections_per_address`) is taken, the oldest
//! silent connection is closed to make room, and only when none is silent
//! is the newcomer refused. So connections that open and say nothing (a
//! scanner, a broken sender, an attacker) cannot lock senders out, while a
//! sender that is talking never loses its connection to them.

use std::collections::{BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError};
use tokio_util::sync::CancellationToken;

/// The slots of one listener (TCP and TLS share them).
pub struct Slots {
    max_connections: usize,
    max_per_address: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    next_id: u64,
    open: HashMap<u64, Holder>,
    /// Ids of open connections that have sent nothing yet, oldest first.
    silent: BTreeSet<u64>,
    per_address: HashMap<IpAddr, PerAddress>,
}

struct Holder {
    address: IpAddr,
    /// Cancelled to close the connection when its slot is given away.
    close: CancellationToken,
}

#[derive(Default)]
struct PerAddress {
    open: usize,
    silent: BTreeSet<u64>,
}

/// What became of a new connection.
pub enum Admission {
    /// It has a slot (after `evicted`, a silent connection, was closed to
    /// make room, if that was needed).
    Admitted {
        /// The slot; dropping it frees it.
        slot: Slot,
        /// Whether a silent connection was closed for it.
        evicted: bool,
    },
    /// Every slot it could have is held by a connection that talks.
    Refused(Limit),
}

/// The limit a refused connection ran into.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    /// `listen.max_connections`.
    Total,
    /// `listen.max_connections_per_address`.
    PerAddress,
}

/// One connection's slot.
pub struct Slot {
    slots: Arc<Slots>,
    id: u64,
    /// Cancelled when the slot is given to another connection.
    pub close: CancellationToken,
}

impl Slots {
    /// Slots for at most `max_connections` connections, at most
    /// `max_per_address` from one address.
    pub fn new(max_connections: usize, max_per_address: usize) -> Arc<Slots> {
        Arc::new(Slots {
            max_connections,
            max_per_address,
            inner: Mutex::new(Inner::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // Nothing that holds the lock can panic halfway through an update
        // that matters more than the counts being briefly off.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for a connection from `address`, closing the oldest silent
    /// connection (of that address, when its limit is the one reached) if
    /// that is what it takes.
    pub fn admit(self: &Arc<Self>, address: IpAddr) -> Admission {
        let mut inner = self.lock();
        let mut evicted = false;
        let from_address = inner.per_address.get(&address).map_or(0, |a| a.open);
        if from_address >= self.max_per_address {
            let oldest = inner
                .per_address
                .get(&address)
                .and_then(|a| a.silent.first().copied());
            match oldest {
                Some(id) => {
                    inner.evict(id);
                    evicted = true;
                }
                None => return Admission::Refused(Limit::PerAddress),
            }
        }
        if inner.open.len() >= self.max_connections {
            match inner.silent.first().copied() {
                Some(id) => {
                    inner.evict(id);
                    evicted = true;
                }
                None => return Admission::Refused(Limit::Total),
            }
        }
        let id = inner.next_id;
        inner.next_id += 1;
        let close = CancellationToken::new();
        inner.open.insert(
            id,
            Holder {
                address,
                close: close.clone(),
            },
        );
        inner.silent.insert(id);
        let per_address = inner.per_address.entry(address).or_default();
        per_address.open += 1;
        per_address.silent.insert(id);
        Admission::Admitted {
            slot: Slot {
                slots: Arc::clone(self),
                id,
                close,
            },
            evicted,
        }
    }

    /// Connections holding a slot now.
    #[cfg(test)]
    fn open(&self) -> usize {
        self.lock().open.len()
    }
}

impl Inner {
    /// Close connection `id` and free its slot now.
    fn evict(&mut self, id: u64) {
        if let Some(holder) = self.release(id) {
            holder.close.cancel();
        }
    }

    /// Free connection `id`'s slot, if it still holds one.
    fn release(&mut self, id: u64) -> Option<Holder> {
        let holder = self.open.remove(&id)?;
        self.silent.remove(&id);
        if let Some(per_address) = self.per_address.get_mut(&holder.address) {
            per_address.open = per_address.open.saturating_sub(1);
            per_address.silent.remove(&id);
            if per_address.open == 0 {
                self.per_address.remove(&holder.address);
            }
        }
        Some(holder)
    }
}

impl Slot {
    /// The connection sent its first bytes: its slot is no longer given
    /// away to make room.
    pub fn spoke(&self) {
        let mut inner = self.slots.lock();
        if inner.silent.remove(&self.id)
            && let Some(address) = inner.open.get(&self.id).map(|h| h.address)
            && let Some(per_address) = inner.per_address.get_mut(&address)
        {
            per_address.silent.remove(&self.id);
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots.lock().release(self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> (Slot, bool) {
        match admission {
            Admission::Admitted { slot, evicted } => (slot, evicted),
            Admission::Refused(limit) => panic!("refused for {limit:?}"),
        }
    }

    fn refused(admission: Admission) -> Limit {
        match admission {
            Admission::Admitted { .. } => panic!("admitted"),
            Admission::Refused(limit) => limit,
        }
    }

    #[test]
    fn silent_connections_give_their_slots_to_newcomers_oldest_first() {
        let slots = Slots::new(3, 2);
        let a: IpAddr = [192, 0, 2, 1].into();
        let b: IpAddr = [192, 0, 2, 2].into();
        let c: IpAddr = [192, 0, 2, 3].into();
        let (first, _) = admitted(slots.admit(a));
        let (second, _) = admitted(slots.admit(a));
        first.spoke();
        // a is at its limit: its oldest silent connection (second) goes.
        let (third, evicted) = admitted(slots.admit(a));
        assert!(evicted);
        assert!(second.close.is_cancelled());
        assert!(!first.close.is_cancelled());
        third.spoke();
        // a has two talking: a third from a is refused.
        assert_eq!(refused(slots.admit(a)), Limit::PerAddress);
        let (fourth, evicted) = admitted(slots.admit(b));
        assert!(!evicted);
        assert_eq!(slots.open(), 3);
        // Full: the only silent one (fourth) makes room.
        let (fifth, evicted) = admitted(slots.admit(c));
        assert!(evicted && fourth.close.is_cancelled());
        fifth.spoke();
        assert_eq!(refused(slots.admit(b)), Limit::Total);
        // The evicted connection's task ends later; its slot is not freed
        // twice.
        drop(second);
        drop(fourth);
        assert_eq!(slots.open(), 3);
        drop(fifth);
        assert_eq!(slots.open(), 2);
        let (_sixth, evicted) = admitted(slots.admit(b));
        assert!(!evicted);
    }
}
