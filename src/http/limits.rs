//! Connection limits of the listeners: a cap on open connections (past it, new ones wait in
//! the kernel's backlog instead of taking memory), and a smaller cap per address for peers
//! that are not trusted proxies, so that one client cannot hold every connection (idle
//! keep-alive or slow-header connections). A trusted reverse proxy is not capped per
//! address: all of its users arrive through it. Header size and header read time are bounded
//! by the HTTP layer itself (`server`). Nothing here reads requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Open connections per listener at most.
pub const MAX_CONNECTIONS: usize = 16_384;
/// Open connections per address at most, for peers that are not trusted proxies.
pub const MAX_CONNECTIONS_PER_PEER: u32 = 128;

/// The limits of one listener.
#[derive(Debug)]
pub struct Limits {
    open: Arc<Semaphore>,
    per_peer: Mutex<HashMap<IpAddr, u32>>,
    per_peer_max: u32,
}

/// One admitted connection; dropping it frees its place.
#[derive(Debug)]
pub struct Slot {
    _open: OwnedSemaphorePermit,
    peer: Option<(Arc<Limits>, IpAddr)>,
}

impl Limits {
    pub fn new(max: usize, per_peer_max: u32) -> Arc<Limits> {
        Arc::new(Limits {
            open: Arc::new(Semaphore::new(max.max(1))),
            per_peer: Mutex::new(HashMap::new()),
            per_peer_max,
        })
    }

    /// Waits for a free place among all connections.
    pub async fn place(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.open).acquire_owned().await.ok()
    }

    /// Admits a connection from `peer` on the place it got: always for a trusted proxy,
    /// within the per-address cap for anyone else.
    pub fn admit(
        self: &Arc<Self>,
        place: OwnedSemaphorePermit,
        peer: IpAddr,
        trusted: bool,
    ) -> Option<Slot> {
        if trusted {
            return Some(Slot {
                _open: place,
                peer: None,
            });
        }
        let mut counts = self.lock();
        let n = counts.entry(peer).or_insert(0);
        if *n >= self.per_peer_max {
            return None;
        }
        *n += 1;
        Some(Slot {
            _open: place,
            peer: Some((Arc::clone(self), peer)),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, u32>> {
        self.per_peer.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Some((limits, peer)) = self.peer.take() {
            let mut counts = limits.lock();
            if let Some(n) = counts.get_mut(&peer) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    counts.remove(&peer);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn untrusted_peers_are_capped_per_address_and_places_come_back() {
        let l = Limits::new(10, 2);
        let a: IpAddr = "203.0.113.1".parse().unwrap();
        let b: IpAddr = "203.0.113.2".parse().unwrap();
        let s1 = l.admit(l.place().await.unwrap(), a, false).unwrap();
        let _s2 = l.admit(l.place().await.unwrap(), a, false).unwrap();
        assert!(
            l.admit(l.place().await.unwrap(), a, false).is_none(),
            "third from a"
        );
        assert!(
            l.admit(l.place().await.unwrap(), b, false).is_some(),
            "another address"
        );
        let trusted: Vec<_> = (0..5)
            .map(|_| l.open.clone().try_acquire_owned().unwrap())
            .map(|p| l.admit(p, a, true).unwrap())
            .collect();
        assert_eq!(
            trusted.len(),
            5,
            "a trusted proxy is not capped per address"
        );
        drop(s1);
        assert!(
            l.admit(l.place().await.unwrap(), a, false).is_some(),
            "freed"
        );
        // Held: the second from a, the five trusted ones (the others were dropped at once).
        assert_eq!(l.open.available_permits(), 10 - 6);
    }
}
