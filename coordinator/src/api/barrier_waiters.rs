//! [`BarrierWaiters`]: wakes the calls waiting at a barrier when this node applies a change to
//! it — one watcher task per node follows the applied state, and only the waiters of a barrier
//! whose generation moved are woken, instead of every waiter on every applied entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use tokio::sync::Notify;

use super::LeaderRouter;

/// Barriers with waiting calls on this node, each with what was last seen of it.
#[derive(Clone, Default)]
pub struct BarrierWaiters {
    watched: Arc<Mutex<BTreeMap<String, Watched>>>,
}

struct Watched {
    notify: Arc<Notify>,
    /// (generation, ended, entered) when last looked at.
    seen: (u64, bool, bool),
    waiting: usize,
}

/// A waiting call's registration; unregisters when dropped.
pub struct Registration {
    waiters: BarrierWaiters,
    name: String,
    /// Woken when the barrier's generation moves.
    pub notify: Arc<Notify>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut watched = self.waiters.watched.lock().expect("waiters lock");
        if let Some(entry) = watched.get_mut(&self.name) {
            entry.waiting -= 1;
            if entry.waiting == 0 {
                watched.remove(&self.name);
            }
        }
    }
}

impl BarrierWaiters {
    /// Starts the watcher over `router`'s applied state.
    pub fn start(router: LeaderRouter) -> Self {
        let waiters = Self::default();
        let watcher = waiters.clone();
        tokio::spawn(async move { watcher.watch(router).await });
        waiters
    }

    /// Registers a call waiting at barrier `name`.
    pub fn register(&self, name: &str) -> Registration {
        let mut watched = self.watched.lock().expect("waiters lock");
        let entry = watched.entry(name.to_owned()).or_insert_with(|| Watched {
            notify: Arc::new(Notify::new()),
            seen: (0, false, false),
            waiting: 0,
        });
        entry.waiting += 1;
        Registration {
            waiters: self.clone(),
            name: name.to_owned(),
            notify: entry.notify.clone(),
        }
    }

    async fn watch(&self, router: LeaderRouter) {
        let mut metrics = router.raft().metrics();
        loop {
            let seen = metrics.borrow_and_update().last_applied;
            let names: Vec<String> = {
                let watched = self.watched.lock().expect("waiters lock");
                watched.keys().cloned().collect()
            };
            if !names.is_empty() {
                let (now, _) = router.read_local(false, |state| {
                    names
                        .iter()
                        .map(|name| {
                            let key = state.barriers.get(name).map(|b| {
                                let current = &b.current;
                                (current.number, current.end.is_some(), current.entered)
                            });
                            (name.clone(), key)
                        })
                        .collect::<Vec<_>>()
                });
                let mut watched = self.watched.lock().expect("waiters lock");
                for (name, key) in now {
                    let Some(entry) = watched.get_mut(&name) else {
                        continue;
                    };
                    // A deleted barrier reads as generation 0, ended.
                    let key = key.unwrap_or((0, true, false));
                    if key != entry.seen {
                        entry.seen = key;
                        entry.notify.notify_waiters();
                    }
                }
            }
            if metrics.wait_for(|m| m.last_applied != seen).await.is_err() {
                return;
            }
        }
    }
}
