//! One shim kept started ahead of need ([`berth_shim::Standby`]): a container's start hands
//! it the container instead of spawning and executing a fresh shim, which takes about 1.5 ms
//! of `berth run`. The engine keeps at most one and falls back to a fresh shim whenever none
//! is ready (a burst of starts). The standby shim waits on a pipe that only this process
//! holds: if the daemon exits or dies, it reads end-of-file and exits too.
//!
//! The refill after a use waits until the daemon is idle: no create, start, `run` session or
//! removal in flight ([`Engine::busy`]). Spawning the next shim is an exec whose start-up
//! costs about a millisecond of CPU here, and started at once it competed with the very
//! container that took the standby (measured: `run --rm` about 4% slower). A start that finds
//! no standby refills at once, since starts are evidently coming one after another.

use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use berth_shim::Standby;

use crate::Engine;

/// How long the daemon must stay idle before a refill starts: longer than the gap between a
/// `run`'s create and its attach, shorter than the gap between two scripted `run`s.
const IDLE_GRACE: Duration = Duration::from_millis(1);

#[derive(Default)]
pub(crate) struct State {
    shim: Option<Standby>,
    filling: bool,
    /// Used and not refilled yet: refill once idle.
    wanted: bool,
}

/// The engine's standby shim slot.
#[derive(Default)]
pub(crate) struct Slot {
    state: Mutex<State>,
    busy: AtomicUsize,
}

impl std::ops::Deref for Slot {
    type Target = Mutex<State>;
    fn deref(&self) -> &Mutex<State> {
        &self.state
    }
}

/// A container operation in flight ([`Engine::busy`]); the last one to end lets a wanted
/// refill start.
pub(crate) struct Busy(Engine);

impl Drop for Busy {
    fn drop(&mut self) {
        if self.0.standby_slot().busy.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.refill_when_idle();
        }
    }
}

impl Engine {
    /// Mark a container operation in flight until the guard is dropped.
    pub(crate) fn busy(&self) -> Busy {
        self.standby_slot().busy.fetch_add(1, Ordering::AcqRel);
        Busy(self.clone())
    }

    /// Hand the container `cfg` to the standby shim, if one is ready; its report pipe comes
    /// back. Without one, a refill starts at once; after a use, once the daemon is idle.
    pub(crate) fn give_standby(&self, cfg: &berth_shim::ShimConfig) -> Option<OwnedFd> {
        let taken = {
            let Ok(mut st) = self.standby_slot().lock() else {
                return None;
            };
            let taken = st.shim.take();
            st.wanted = true;
            taken
        };
        let Some(sb) = taken else {
            self.refill_standby();
            return None;
        };
        let report = sb.give(cfg);
        if self.standby_slot().busy.load(Ordering::Acquire) == 0 {
            self.refill_when_idle();
        }
        report
    }

    /// Refill a used standby and the spare snapshot (`spare.rs`) once the daemon has been
    /// idle for [`IDLE_GRACE`].
    fn refill_when_idle(&self) {
        let standby_wanted = self.standby_slot().lock().is_ok_and(|st| st.wanted);
        if !standby_wanted && !self.spare_wanted() {
            // Nothing to refill: no timer to wake the runtime for.
            return;
        }
        let refill = |e: &Engine| {
            if e.standby_slot().lock().is_ok_and(|st| st.wanted) {
                e.refill_standby();
            }
            e.refill_spare();
        };
        let Ok(h) = tokio::runtime::Handle::try_current() else {
            refill(self);
            return;
        };
        let e = self.clone();
        h.spawn(async move {
            tokio::time::sleep(IDLE_GRACE).await;
            // Busy again: the operation in flight refills when it ends.
            if e.standby_slot().busy.load(Ordering::Acquire) == 0 {
                refill(&e);
            }
        });
    }

    /// Start a standby shim in the background unless one is ready or on its way.
    pub(crate) fn refill_standby(&self) {
        {
            let Ok(mut st) = self.standby_slot().lock() else {
                return;
            };
            st.wanted = false;
            if st.shim.is_some() || st.filling {
                return;
            }
            st.filling = true;
        }
        let e = self.clone();
        let started = tokio::runtime::Handle::try_current().map(|h| {
            h.spawn_blocking(move || {
                // The default namespace's containers get their cgroup directories from the standby.
                let sb = Standby::start(
                    &e.config().shim_binary,
                    &e.config().state.join("shims"),
                    Some("/berth/default"),
                );
                if let Err(err) = &sb {
                    tracing::debug!("no standby shim: {err}");
                }
                if let Ok(mut st) = e.standby_slot().lock() {
                    st.filling = false;
                    st.shim = sb.ok();
                }
            })
        });
        if started.is_err() {
            if let Ok(mut st) = self.standby_slot().lock() {
                st.filling = false;
            }
        }
    }
}
