//! The logs a handle keeps open and indexed.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use super::{ThreadLog, file_name};
use crate::ids::ThreadId;

// ===== Cache =====

/// The logs a handle keeps open and indexed, least recently used dropped
/// first. An operation holds its log's `Arc`, so dropping it from here
/// never disturbs an operation in flight (a second `ThreadLog` for the same
/// thread coordinates with it through the file lock, as another handle
/// would).
pub(super) struct Cache {
    pub(super) capacity: usize,
    pub(super) tick: u64,
    pub(super) logs: HashMap<ThreadId, (Arc<Mutex<ThreadLog>>, u64)>,
    /// Threads by last use.
    pub(super) recent: BTreeMap<u64, ThreadId>,
}

impl Cache {
    pub(super) fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            tick: 0,
            logs: HashMap::new(),
            recent: BTreeMap::new(),
        }
    }

    pub(super) fn set_capacity(&mut self, capacity: usize) {
        self.capacity = capacity.max(1);
        self.evict();
    }

    /// The thread's log, created (empty, unread) on first use.
    pub(super) fn get(&mut self, thread: &ThreadId, dir: &Path) -> Arc<Mutex<ThreadLog>> {
        self.tick += 1;
        let tick = self.tick;
        if let Some((log, used)) = self.logs.get_mut(thread) {
            self.recent.remove(used);
            *used = tick;
            self.recent.insert(tick, thread.clone());
            return Arc::clone(log);
        }
        let log = Arc::new(Mutex::new(ThreadLog::new(
            dir.join(file_name(thread)),
            thread.clone(),
        )));
        self.logs.insert(thread.clone(), (Arc::clone(&log), tick));
        self.recent.insert(tick, thread.clone());
        self.evict();
        log
    }

    /// The thread's log if kept, without counting it as a use.
    pub(super) fn peek(&self, thread: &ThreadId) -> Option<Arc<Mutex<ThreadLog>>> {
        self.logs.get(thread).map(|(log, _)| Arc::clone(log))
    }

    pub(super) fn remove(&mut self, thread: &ThreadId) {
        if let Some((_, used)) = self.logs.remove(thread) {
            self.recent.remove(&used);
        }
    }

    pub(super) fn evict(&mut self) {
        while self.logs.len() > self.capacity {
            let Some((_, thread)) = self.recent.pop_first() else {
                break;
            };
            self.logs.remove(&thread);
        }
    }
}

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every mutation of a log's index happens after its I/O succeeded, and
    // the cache's are single inserts and removals, so a poisoned lock still
    // guards consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}
