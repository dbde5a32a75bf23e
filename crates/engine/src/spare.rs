//! One container snapshot prepared ahead of need. A create spends most of its time on the
//! snapshot's record, whose commit waits for a sync of the metadata file (1-2 ms here, more on
//! a busy disk). Once the daemon is idle, the engine prepares the writable layer of the next
//! container of the image last created from, under a fresh container id; a create of that
//! image in that namespace takes it and becomes that id, with nothing left to commit.
//!
//! * A spare is an Active snapshot named like a container without a container record, which
//!   is what boot removes (`recover.rs`): a daemon that stops or dies leaves nothing behind.
//! * It holds its image's layers like a container does, so image removal and pruning drop it
//!   first and keep refills away while they run ([`Engine::hold_spares`]).
//! * Only the overlay snapshotter gets one: an empty upper directory costs nothing, while a
//!   native snapshot is a copy of the whole image.

use std::sync::{Condvar, Mutex, MutexGuard};

use crate::{Engine, err_chain};

/// A prepared snapshot: its namespace, parent (the image's top layer) and key (the id of the
/// container that takes it), and its mounts.
pub(crate) struct Spare {
    ns: String,
    parent: String,
    pub(crate) id: String,
    pub(crate) mounts: Vec<berth_store::Mount>,
}

#[derive(Default)]
struct State {
    ready: Option<Spare>,
    /// The (namespace, parent) a refill is preparing.
    filling: Option<(String, String)>,
    /// What the last create wanted: refill that once idle.
    wanted: Option<(String, String)>,
    /// Image removals in flight: no refill meanwhile.
    held: usize,
}

/// The engine's spare snapshot slot.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<State>,
    changed: Condvar,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// A refill's end: publishes its spare (if any) and wakes whoever waits for it.
struct Filled(Engine, Option<Spare>);

impl Drop for Filled {
    fn drop(&mut self) {
        let slot = self.0.spare_slot();
        let mut st = slot.lock();
        st.filling = None;
        st.ready = self.1.take();
        slot.changed.notify_all();
    }
}

/// Keeps refills off while an image removal runs; see [`Engine::hold_spares`].
pub(crate) struct Hold(Engine);

impl Drop for Hold {
    fn drop(&mut self) {
        self.0.spare_slot().lock().held -= 1;
    }
}

impl Engine {
    /// Take the spare snapshot for a container of `parent` in `ns` (blocking: a refill of
    /// just that one in flight is waited for, as the create's own prepare would queue behind
    /// its commit anyway). `None` if there is none; the next idle moment prepares one.
    pub(crate) fn take_spare(&self, ns: &str, parent: Option<&str>) -> Option<Spare> {
        let parent = parent?;
        if !self.store().snapshots.is_overlay() {
            return None;
        }
        let want = (ns.to_owned(), parent.to_owned());
        let slot = self.spare_slot();
        let mut st = slot.lock();
        st.wanted = Some(want.clone());
        loop {
            if st
                .ready
                .as_ref()
                .is_some_and(|s| s.ns == want.0 && s.parent == want.1)
            {
                return st.ready.take();
            }
            if st.filling.as_ref() != Some(&want) {
                return None;
            }
            st = slot.changed.wait(st).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Whether a create asked for a spare that no refill has started on yet.
    pub(crate) fn spare_wanted(&self) -> bool {
        self.spare_slot().lock().wanted.is_some()
    }

    /// Prepare the spare the last create wanted, unless it is ready, on its way or held
    /// off. Called once the daemon is idle (`standby.rs`).
    pub(crate) fn refill_spare(&self) {
        let (want, stale) = {
            let mut st = self.spare_slot().lock();
            if st.held > 0 || st.filling.is_some() {
                return;
            }
            let Some(want) = st.wanted.take() else {
                return;
            };
            if st
                .ready
                .as_ref()
                .is_some_and(|s| s.ns == want.0 && s.parent == want.1)
            {
                return;
            }
            st.filling = Some(want.clone());
            (want, st.ready.take())
        };
        let e = self.clone();
        let fill = move || {
            // Ends the refill however it ends, so no create waits for it in vain.
            let mut done = Filled(e.clone(), None);
            if let Some(old) = stale {
                e.remove_spare(&old);
            }
            let (ns, parent) = want;
            let id = crate::record::new_id();
            match e.store().snapshots.prepare(&ns, &id, Some(&parent)) {
                Ok(mounts) => {
                    tracing::debug!("spare snapshot {ns}/{id} of {parent} ready");
                    done.1 = Some(Spare {
                        ns,
                        parent,
                        id,
                        mounts,
                    });
                }
                Err(err) => tracing::debug!("no spare snapshot of {parent}: {}", err_chain(&err)),
            }
        };
        match tokio::runtime::Handle::try_current() {
            Ok(h) => drop(h.spawn_blocking(fill)),
            Err(_) => fill(),
        }
    }

    /// Drop the spare snapshot and keep refills off until the returned guard is dropped: for
    /// image removals and prunes, which the spare's hold on its image's layers would hinder.
    /// Blocking: waits for a refill in flight.
    pub(crate) fn hold_spares(&self) -> Hold {
        let slot = self.spare_slot();
        let old = {
            let mut st = slot.lock();
            st.held += 1;
            while st.filling.is_some() {
                st = slot.changed.wait(st).unwrap_or_else(|e| e.into_inner());
            }
            st.ready.take()
        };
        if let Some(old) = old {
            self.remove_spare(&old);
        }
        Hold(self.clone())
    }

    fn remove_spare(&self, s: &Spare) {
        match self.store().snapshots.remove(&s.ns, &s.id) {
            Ok(()) | Err(berth_store::Error::NotFound { .. }) => {}
            Err(err) => tracing::warn!(
                "cannot remove the spare snapshot {}/{} (boot removes it): {}",
                s.ns,
                s.id,
                err_chain(&err)
            ),
        }
    }
}
