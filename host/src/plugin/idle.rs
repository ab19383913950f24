//! Instances kept between requests: the explicit opt-in `requests_per_instance` (above 1)
//! of `[plugins.NAME]`.
//!
//! A fresh instance per request is the default and costs, for a small Rust guest, more
//! than the gateway's whole work on a proxied request (creating the store, instantiating,
//! tearing it down). A plugin that opts in has each instance serve up to
//! `requests_per_instance` requests, one after another: after a request whose calls all
//! succeeded, its store and instance go back here, and the next request of the **same
//! use** (same role, same `config`) takes them instead of instantiating.
//!
//! What the plugin gives up, and why it is opt-in: whatever the guest keeps in its memory
//! (globals, caches, a counter) is still there for the next request, which may come from
//! another client. The gateway still never lets a broken instance serve again: a call that
//! traps, times out, overruns its memory or returns invalid output discards its store, as
//! does a filter whose request ended before `on-response`. Instances are kept per use
//! because a guest may cache the config it read on its first request.
//!
//! Idle instances hold no concurrency permit but do hold their pool slot and memory; at
//! most [`MAX_IDLE`] (and at most the plugin's `limits.concurrency`) are kept per plugin,
//! the oldest dropped first. The list fills only up to the most instances a plugin had in
//! flight at once, which for a filter is every request waiting on its upstream: a cap
//! below that (32 was tried) makes a loaded route evict and re-create instances on most
//! requests, losing the gain.

use std::sync::{Mutex, PoisonError};

use wasmtime::Store;

use super::Role;
use super::bindings::authorizer::Authorizer;
use super::bindings::filter::Filter;
use super::bindings::handler::Handler;
use super::host::Host;

/// The most idle instances kept per plugin.
pub const MAX_IDLE: usize = 128;

/// An instance's typed exports, by the role it was instantiated for.
pub enum Bound {
    Handler(Handler),
    Filter(Filter),
    Authorizer(Authorizer),
}

impl Bound {
    fn role(&self) -> Role {
        match self {
            Bound::Handler(_) => Role::Handler,
            Bound::Filter(_) => Role::Filter,
            Bound::Authorizer(_) => Role::Authorizer,
        }
    }

    pub fn handler(self) -> Option<Handler> {
        match self {
            Bound::Handler(instance) => Some(instance),
            _ => None,
        }
    }

    pub fn filter(self) -> Option<Filter> {
        match self {
            Bound::Filter(instance) => Some(instance),
            _ => None,
        }
    }

    pub fn authorizer(self) -> Option<Authorizer> {
        match self {
            Bound::Authorizer(instance) => Some(instance),
            _ => None,
        }
    }
}

/// A store and its instance between two requests.
pub struct Kept {
    pub store: Store<Host>,
    pub bound: Bound,
    /// Requests it has served.
    pub served: u32,
}

/// One plugin's idle instances, most recently used last.
pub struct Idle {
    kept: Mutex<Vec<Kept>>,
    capacity: usize,
}

impl std::fmt::Debug for Idle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Idle")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

impl Idle {
    /// Room for `concurrency` idle instances, at most [`MAX_IDLE`].
    pub fn new(concurrency: usize) -> Idle {
        Idle {
            kept: Mutex::new(Vec::new()),
            capacity: concurrency.clamp(1, MAX_IDLE),
        }
    }

    /// The most recently used idle instance of `role` last used with `config`.
    pub fn take(&self, role: Role, config: &str) -> Option<Kept> {
        let mut kept = self.lock();
        let index = kept
            .iter()
            .rposition(|k| k.bound.role() == role && **k.store.data().config() == *config)?;
        Some(kept.remove(index))
    }

    /// Keeps `instance` for a later request; when full, the oldest idle instance goes.
    pub fn put(&self, instance: Kept) {
        let evicted = {
            let mut kept = self.lock();
            let evicted = (kept.len() >= self.capacity).then(|| kept.remove(0));
            kept.push(instance);
            evicted
        };
        // Dropped outside the lock: tearing a store down is the slow part.
        drop(evicted);
    }

    /// Drops every idle instance (after a reload: see `Plugins::drop_idle`).
    pub fn clear(&self) {
        let dropped = std::mem::take(&mut *self.lock());
        // Outside the lock, as in `put`.
        drop(dropped);
    }

    /// Idle instances now.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Kept>> {
        // A panic while holding the lock cannot leave the list inconsistent (each
        // operation is one push or remove), so a poisoned lock is used as it is.
        self.kept.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
