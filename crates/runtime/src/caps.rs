//! Linux capabilities of the container process: the five sets of `process.capabilities`.

use std::str::FromStr;

use caps::{CapSet, Capability as Cap, CapsHashSet};
use oci_spec::runtime::{Capabilities, LinuxCapabilities};

use crate::error::{Error, Result};

/// Convert an OCI capability set, skipping (with a warning) those this kernel or this runtime's
/// own bounding set cannot grant: a capability we do not hold can never be passed on.
pub fn to_caps(set: Option<&Capabilities>, grantable: &CapsHashSet, which: &str) -> CapsHashSet {
    let mut out = CapsHashSet::new();
    for c in set.into_iter().flatten() {
        let name = format!("CAP_{c}");
        match Cap::from_str(&name) {
            Ok(cap) if grantable.contains(&cap) => {
                out.insert(cap);
            }
            Ok(_) => tracing::warn!(
                "{which}: {name} is not in berth-runtime's own bounding set; it cannot be granted"
            ),
            Err(_) => tracing::warn!("{which}: unknown capability {name} ignored"),
        }
    }
    out
}

/// The capabilities the calling process can pass on.
pub fn grantable() -> CapsHashSet {
    caps::read(None, CapSet::Bounding).unwrap_or_default()
}

/// Drop every capability not in the bounding set (needs CAP_SETPCAP, so do it before changing uid).
pub fn apply_bounding(c: Option<&LinuxCapabilities>, grantable: &CapsHashSet) -> Result<()> {
    let keep = to_caps(
        c.and_then(|c| c.bounding().as_ref()),
        grantable,
        "capabilities.bounding",
    );
    for cap in grantable.iter() {
        if !keep.contains(cap) {
            caps::drop(None, CapSet::Bounding, *cap).map_err(|e| {
                Error::Unsupported(format!("drop {cap} from the bounding set: {e}"))
            })?;
        }
    }
    Ok(())
}

/// Set the effective, permitted, inheritable and ambient sets (after the uid change).
pub fn apply_sets(c: Option<&LinuxCapabilities>, grantable: &CapsHashSet) -> Result<()> {
    let get = |f: fn(&LinuxCapabilities) -> &Option<Capabilities>, which| {
        to_caps(c.and_then(|c| f(c).as_ref()), grantable, which)
    };
    let permitted = get(LinuxCapabilities::permitted, "capabilities.permitted");
    let effective = get(LinuxCapabilities::effective, "capabilities.effective");
    let inheritable = get(LinuxCapabilities::inheritable, "capabilities.inheritable");
    let ambient = get(LinuxCapabilities::ambient, "capabilities.ambient");
    let set = |which: CapSet, v: &CapsHashSet| {
        caps::set(None, which, v)
            .map_err(|e| Error::Unsupported(format!("set {which:?} capabilities to {v:?}: {e}")))
    };
    // Each capset must keep effective within permitted: inheritable first (while permitted is
    // still full), then shrink effective, then permitted.
    set(CapSet::Inheritable, &inheritable)?;
    set(CapSet::Effective, &effective)?;
    set(CapSet::Permitted, &permitted)?;
    caps::clear(None, CapSet::Ambient)
        .map_err(|e| Error::Unsupported(format!("clear ambient capabilities: {e}")))?;
    for cap in ambient {
        // An ambient capability must also be permitted and inheritable; like runc, a config that
        // asks for one that is not gets a warning rather than a failure.
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::warn!(
                "cannot raise ambient {cap} (it must also be permitted and inheritable): {e}"
            );
        }
    }
    Ok(())
}
