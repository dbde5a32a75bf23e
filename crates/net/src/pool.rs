//! Subnets: the default pool, the host's routes and a host-wide claim registry, so that several
//! Berth roots (and the tests' parallel daemons) never pick overlapping subnets.

use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use ipnet::Ipv4Net;

use crate::Error;

/// Docker's default address pools: 172.17-31.0.0/16, then 192.168.0-240.0/20; then podman's
/// 10.89.0-255.0/24 so parallel test roots do not run dry.
pub(crate) fn default_pool() -> impl Iterator<Item = Ipv4Net> {
    let a = (17..=31u8).map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16));
    let b = (0..16u8).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20));
    let c = (0..=255u8).map(|i| Ipv4Net::new(Ipv4Addr::new(10, 89, i, 0), 24));
    a.chain(b).chain(c).filter_map(Result::ok)
}

/// The IPv4 prefixes the host routes (except the default route), from `/proc/net/route`.
pub(crate) fn host_routes() -> Vec<Ipv4Net> {
    let text = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?;
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?;
            if mask == 0 {
                return None;
            }
            // The file prints the addresses in the host's byte order (little-endian here).
            let dst = Ipv4Addr::from(u32::from_be(dst.to_le()));
            let prefix = u32::from_be(mask.to_le()).count_ones();
            Ipv4Net::new(dst, u8::try_from(prefix).ok()?).ok()
        })
        .collect()
}

pub(crate) fn overlaps(a: &Ipv4Net, b: &Ipv4Net) -> bool {
    a.contains(&b.network()) || b.contains(&a.network())
}

/// The host-wide registry: `DIR/lock` (flock) and one file per claimed subnet naming the
/// network record that owns it; a claim whose record is gone is stale.
pub(crate) struct Claims {
    pub dir: PathBuf,
}

pub(crate) struct Locked {
    _fd: OwnedFd,
}

impl Claims {
    pub fn lock(&self) -> Result<Locked, Error> {
        let io = |e: std::io::Error| Error::io("lock", &self.dir.join("lock"), e);
        std::fs::create_dir_all(self.dir.join("subnets")).map_err(io)?;
        let fd = rustix::fs::open(
            self.dir.join("lock"),
            rustix::fs::OFlags::CREATE | rustix::fs::OFlags::RDWR | rustix::fs::OFlags::CLOEXEC,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .map_err(|e| io(e.into()))?;
        rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive)
            .map_err(|e| io(e.into()))?;
        Ok(Locked { _fd: fd })
    }

    fn file(&self, net: &Ipv4Net) -> PathBuf {
        self.dir
            .join("subnets")
            .join(format!("{}_{}", net.network(), net.prefix_len()))
    }

    /// Live claims: (subnet, owner record).
    pub fn live(&self, _l: &Locked) -> Vec<(Ipv4Net, PathBuf)> {
        let Ok(rd) = std::fs::read_dir(self.dir.join("subnets")) else {
            return Vec::new();
        };
        rd.flatten()
            .filter_map(|e| {
                let name = e.file_name().to_string_lossy().replace('_', "/");
                let net: Ipv4Net = name.parse().ok()?;
                let owner = PathBuf::from(std::fs::read_to_string(e.path()).ok()?);
                if owner.exists() {
                    Some((net, owner))
                } else {
                    let _ = std::fs::remove_file(e.path());
                    None
                }
            })
            .collect()
    }

    pub fn claim(&self, _l: &Locked, net: &Ipv4Net, owner: &Path) -> Result<(), Error> {
        let f = self.file(net);
        std::fs::write(&f, owner.as_os_str().as_encoded_bytes())
            .map_err(|e| Error::io("write", &f, e))
    }

    pub fn release(&self, _l: &Locked, net: &Ipv4Net, owner: &Path) {
        let f = self.file(net);
        if std::fs::read(&f).is_ok_and(|o| o == owner.as_os_str().as_encoded_bytes()) {
            let _ = std::fs::remove_file(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pool_starts_like_docker() {
        let v: Vec<_> = default_pool().take(2).map(|n| n.to_string()).collect();
        assert_eq!(v, ["172.17.0.0/16", "172.18.0.0/16"]);
        assert!(default_pool().count() > 256);
    }

    #[test]
    fn overlap() {
        let a: Ipv4Net = "10.0.0.0/16".parse().unwrap();
        let b: Ipv4Net = "10.0.3.0/24".parse().unwrap();
        let c: Ipv4Net = "10.1.0.0/24".parse().unwrap();
        assert!(overlaps(&a, &b) && overlaps(&b, &a));
        assert!(!overlaps(&a, &c));
    }

    #[test]
    fn routes_parse() {
        // Whatever the host has, every entry is a valid prefix and none is the default route.
        assert!(host_routes().iter().all(|n| n.prefix_len() > 0));
    }

    #[test]
    fn stale_claims_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let c = Claims {
            dir: d.path().to_owned(),
        };
        let l = c.lock().unwrap();
        let owner = d.path().join("owner.json");
        std::fs::write(&owner, "{}").unwrap();
        let n: Ipv4Net = "10.9.0.0/24".parse().unwrap();
        c.claim(&l, &n, &owner).unwrap();
        assert_eq!(c.live(&l), vec![(n, owner.clone())]);
        std::fs::remove_file(&owner).unwrap();
        assert!(c.live(&l).is_empty());
    }
}
