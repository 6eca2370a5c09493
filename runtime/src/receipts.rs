//! Receipts: telling a sender that its messages are safe.
//!
//! A sender that resends what was not confirmed (RELP) must be told about a
//! message only once losing the runtime can no longer lose it: once a state
//! checkpoint covering it is committed, or, without state, once its events
//! are handled. A message's receipt travels with it, from the connection
//! through the parser into the batch that carries it, and from there on
//! with the batch ([`crate::record::BatchBuilder::receipts`]): the module
//! thread holds the receipts of processed batches until the next checkpoint
//! commits (or, without state, hands them to the handler thread behind the
//! batch's events). Delivering a receipt sends the message's number back to
//! its connection, which answers the sender.
//!
//! A receipt that is dropped undelivered (the run aborted, a checkpoint
//! failed until the end) tells the connection nothing: the sender resends
//! the message to the next run.

use std::sync::Arc;

/// Where one connection hears which of its messages are safe: each
/// delivery is a list of the numbers the connection gave its messages.
/// The connection learns that no more will come when every copy is gone.
#[derive(Debug)]
pub struct ReceiptSink {
    numbers: tokio::sync::mpsc::UnboundedSender<Vec<u64>>,
}

impl ReceiptSink {
    /// A sink and the connection's end of it.
    pub fn new() -> (Arc<Self>, tokio::sync::mpsc::UnboundedReceiver<Vec<u64>>) {
        let (numbers, receiver) = tokio::sync::mpsc::unbounded_channel();
        (Arc::new(ReceiptSink { numbers }), receiver)
    }
}

/// The receipts of the messages in one batch (or in several, merged),
/// grouped by connection in the order they were added.
#[derive(Debug, Default)]
pub struct Receipts {
    entries: Vec<(Arc<ReceiptSink>, Vec<u64>)>,
}

impl Receipts {
    /// Add message `number` of the connection behind `sink`.
    pub fn add(&mut self, sink: &Arc<ReceiptSink>, number: u64) {
        match self.entries.last_mut() {
            Some((last, numbers)) if Arc::ptr_eq(last, sink) => numbers.push(number),
            _ => self.entries.push((Arc::clone(sink), vec![number])),
        }
    }

    /// Whether no receipt is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Messages whose receipts are held.
    pub fn len(&self) -> usize {
        self.entries.iter().map(|(_, numbers)| numbers.len()).sum()
    }

    /// Take `other`'s receipts after these.
    pub fn append(&mut self, other: &mut Receipts) {
        for (sink, numbers) in other.entries.drain(..) {
            match self.entries.last_mut() {
                Some((last, held)) if Arc::ptr_eq(last, &sink) => held.extend(numbers),
                _ => self.entries.push((sink, numbers)),
            }
        }
    }

    /// Tell every connection that these messages are safe. A connection
    /// that has gone hears nothing (its sender resends on reconnecting).
    pub fn deliver(self) {
        for (sink, numbers) in self.entries {
            let _ = sink.numbers.send(numbers);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receipts_reach_their_own_connection_in_the_order_they_were_added() {
        let (first, mut first_hears) = ReceiptSink::new();
        let (second, mut second_hears) = ReceiptSink::new();
        let mut receipts = Receipts::default();
        receipts.add(&first, 1);
        receipts.add(&first, 2);
        receipts.add(&second, 7);
        let mut later = Receipts::default();
        later.add(&second, 8);
        later.add(&first, 3);
        receipts.append(&mut later);
        assert!(later.is_empty());
        assert_eq!(receipts.len(), 5);
        receipts.deliver();
        assert_eq!(first_hears.try_recv().ok(), Some(vec![1, 2]));
        assert_eq!(first_hears.try_recv().ok(), Some(vec![3]));
        assert_eq!(second_hears.try_recv().ok(), Some(vec![7, 8]));
        drop((first, second));
        assert!(first_hears.try_recv().is_err());
        assert!(second_hears.try_recv().is_err());
    }
}
