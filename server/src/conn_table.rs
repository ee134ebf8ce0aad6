//! Which connections may give up their place, and how many one peer may hold.
//!
//! The connection cap (`ITL_MAX_CONNECTIONS`) keeps the server alive under a flood, but a
//! flood of *slow* clients — a request head or body trickled a byte at a time, or sockets
//! opened and left silent — would fill it and keep every agent out for as long as they
//! hold it (measured before: ~1,060 such sockets took attestations from 18/s to 0.5/s).
//! Each such client is bounded in time (the head and the body each have the idle timeout
//! in all, not per byte), and this table does the rest:
//!
//! - **Making room**: with the cap full, a newly accepted connection takes the place of the
//!   one that has waited longest *without a request in progress* (still waiting for its
//!   request head, or idle between keep-alive requests). A connection whose request is being
//!   served is never closed for another; a slow client gives up its place to the next
//!   comer, and an agent, which sends its head at once, keeps its own.
//! - **Per peer**: at most `ITL_MAX_CONNECTIONS_PER_PEER` connections from one address at
//!   once (trusted proxies, `ITL_TRUSTED_PROXIES`, exempt: every client comes through
//!   them); more are answered 503 `too_many_connections` and closed.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::listener::{Signal, Trigger, signal};

/// The open connections, by the table's own number.
pub struct ConnTable {
    inner: Mutex<Inner>,
    per_peer: usize,
    /// Told when a connection starts waiting (it could give way now).
    waiting_tx: smol::channel::Sender<()>,
    waiting_rx: smol::channel::Receiver<()>,
}

#[derive(Default)]
struct Inner {
    next: u64,
    conns: HashMap<u64, Entry>,
    by_peer: HashMap<IpAddr, usize>,
}

struct Entry {
    peer: IpAddr,
    /// Since when it has been waiting for a request; `None` while one is served.
    waiting_since: Option<Instant>,
    /// Told to give way, not gone yet: its place is about to be free.
    closing: bool,
    close: Trigger,
}

/// One admitted connection's place in the table; dropping it leaves the table.
pub struct Place {
    table: Arc<ConnTable>,
    id: u64,
    /// Fires when the connection is to close to make room for another.
    pub closed: Signal,
}

impl ConnTable {
    pub fn new(per_peer: usize) -> Arc<ConnTable> {
        let (waiting_tx, waiting_rx) = smol::channel::bounded(1);
        Arc::new(ConnTable {
            inner: Mutex::default(),
            per_peer,
            waiting_tx,
            waiting_rx,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for a connection from `peer`, unless that peer holds its limit already
    /// (`exempt` peers have none).
    pub fn admit(self: &Arc<Self>, peer: IpAddr, exempt: bool) -> Option<Place> {
        let mut inner = self.lock();
        let held = inner.by_peer.get(&peer).copied().unwrap_or(0);
        if !exempt && held >= self.per_peer {
            return None;
        }
        inner.next += 1;
        let id = inner.next;
        let (close, closed) = signal();
        inner.conns.insert(
            id,
            Entry {
                peer,
                waiting_since: Some(Instant::now()),
                closing: false,
                close,
            },
        );
        *inner.by_peer.entry(peer).or_insert(0) += 1;
        Some(Place {
            table: self.clone(),
            id,
            closed,
        })
    }

    /// Closes the connection that has waited longest without a request in progress, other
    /// than `newcomer` (the one room is made for); whether room is being made (by it, or by
    /// one told to give way before and not gone yet).
    pub fn make_room(&self, newcomer: &Place) -> bool {
        let mut inner = self.lock();
        if inner.conns.values().any(|e| e.closing) {
            return true;
        }
        let oldest = inner
            .conns
            .iter()
            .filter(|(id, _)| **id != newcomer.id)
            .filter_map(|(id, e)| e.waiting_since.map(|t| (t, *id)))
            .min();
        match oldest.and_then(|(_, id)| inner.conns.get_mut(&id)) {
            Some(entry) => {
                entry.close.fire();
                // Closing: not chosen again.
                entry.waiting_since = None;
                entry.closing = true;
                true
            }
            None => false,
        }
    }

    /// Resolves when a connection has started waiting since the last call (it may give way
    /// to another now).
    pub async fn became_waiting(&self) {
        let _ = self.waiting_rx.recv().await;
    }

    /// Connections open.
    pub fn len(&self) -> usize {
        self.lock().conns.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Place {
    /// A request is being served: not to be closed for another connection.
    pub fn busy(&self) {
        if let Some(e) = self.table.lock().conns.get_mut(&self.id)
            && !e.closing
        {
            e.waiting_since = None;
        }
    }

    /// Its answer was sent: waiting for the next request (from now).
    pub fn waiting(&self) {
        if let Some(e) = self.table.lock().conns.get_mut(&self.id)
            && !e.closing
        {
            e.waiting_since = Some(Instant::now());
        }
        let _ = self.table.waiting_tx.try_send(());
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        let mut inner = self.table.lock();
        if let Some(e) = inner.conns.remove(&self.id)
            && let Some(n) = inner.by_peer.get_mut(&e.peer)
        {
            *n -= 1;
            if *n == 0 {
                inner.by_peer.remove(&e.peer);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peers_are_limited_and_the_longest_waiting_gives_way() {
        let table = ConnTable::new(2);
        let a: IpAddr = "127.0.0.2".parse().unwrap();
        let b: IpAddr = "127.0.0.3".parse().unwrap();
        let first = table.admit(a, false).unwrap();
        let second = table.admit(a, false).unwrap();
        assert!(table.admit(a, false).is_none(), "a third from one peer");
        let proxy = table.admit(a, true).expect("a trusted proxy has no limit");
        drop(proxy);
        let served = table.admit(b, false).unwrap();
        served.busy();
        // The oldest waiting one (first) gives way; a busy one never does, nor the newcomer.
        first.busy();
        second.waiting();
        assert!(table.make_room(&served));
        assert!(second.closed.has_fired());
        assert!(!first.closed.has_fired() && !served.closed.has_fired());
        assert!(table.make_room(&served), "second is giving way still");
        drop(second);
        served.waiting();
        assert!(!table.make_room(&served), "every other connection is busy");
        assert_eq!(table.len(), 2);
        drop((first, served));
        assert!(table.is_empty());
        assert!(
            table.admit(a, false).is_some(),
            "the peer's count went down"
        );
    }
}
