//! One shim kept started ahead of need ([`berth_shim::Standby`]): a container's start hands
//! it the container instead of spawning and executing a fresh shim, which takes about 1.5 ms
//! of `berth run`. The engine keeps at most one, refills it after each use on a blocking
//! thread, and falls back to a fresh shim whenever none is ready (a burst of starts). The
//! standby shim waits on a pipe that only this process holds: if the daemon exits or dies, it
//! reads end-of-file and exits too.

use std::sync::Mutex;

use berth_shim::Standby;

use crate::Engine;

#[derive(Default)]
pub(crate) struct State {
    shim: Option<Standby>,
    filling: bool,
}

/// The engine's standby shim slot.
#[derive(Default)]
pub(crate) struct Slot(Mutex<State>);

impl std::ops::Deref for Slot {
    type Target = Mutex<State>;
    fn deref(&self) -> &Mutex<State> {
        &self.0
    }
}

impl Engine {
    /// The standby shim, if one is ready; a refill is started either way.
    pub(crate) fn take_standby(&self) -> Option<Standby> {
        let taken = self.standby_slot().lock().ok()?.shim.take();
        self.refill_standby();
        taken
    }

    /// Start a standby shim in the background unless one is ready or on its way.
    pub(crate) fn refill_standby(&self) {
        {
            let Ok(mut st) = self.standby_slot().lock() else {
                return;
            };
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
