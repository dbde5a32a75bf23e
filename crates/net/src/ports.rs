//! Published ports: Docker's `-p` syntax, random host ports, and the in-use check.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::Error;

/// One published port.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The host address ("" = every address).
    pub host_ip: String,
    /// The host port; 0 = pick a free one.
    pub host_port: u16,
    /// The container's port.
    pub container_port: u16,
    /// `tcp` or `udp`.
    pub protocol: String,
}

fn port(what: &str, s: &str, spec: &str) -> Result<u16, Error> {
    s.parse::<u16>()
        .ok()
        .filter(|p| *p != 0 || what == "host")
        .ok_or_else(|| Error::invalid("--publish", spec, format!("invalid {what} port {s:?}")))
}

/// Docker's `-p`: `[ip:][hostPort:]containerPort[/tcp|udp]`; host ranges are not supported.
pub fn parse_publish(spec: &str) -> Result<PortMapping, Error> {
    let (rest, protocol) = match spec.rsplit_once('/') {
        Some((r, p)) => (r, p.to_ascii_lowercase()),
        None => (spec, "tcp".to_owned()),
    };
    if protocol != "tcp" && protocol != "udp" {
        return Err(Error::invalid(
            "--publish",
            spec,
            format!("invalid protocol {protocol:?}: use tcp or udp"),
        ));
    }
    // An IPv6 host address is bracketed: [::1]:8080:80.
    let (host_ip, rest) = if let Some(r) = rest.strip_prefix('[') {
        let (ip, r) = r.split_once(']').ok_or_else(|| {
            Error::invalid("--publish", spec, "unterminated [ in the host address")
        })?;
        (ip.to_owned(), r.trim_start_matches(':'))
    } else {
        let parts: Vec<&str> = rest.split(':').collect();
        match parts.len() {
            1 | 2 => (String::new(), rest),
            3 => {
                let n = parts[0].len() + 1;
                (parts[0].to_owned(), &rest[n..])
            }
            _ => return Err(Error::invalid("--publish", spec, "too many colons")),
        }
    };
    if !host_ip.is_empty() && host_ip.parse::<IpAddr>().is_err() {
        return Err(Error::invalid(
            "--publish",
            spec,
            format!("invalid host IP {host_ip:?}"),
        ));
    }
    let (host_port, container_port) = match rest.split_once(':') {
        Some((h, c)) => (
            if h.is_empty() {
                0
            } else {
                port("host", h, spec)?
            },
            port("container", c, spec)?,
        ),
        None => (0, port("container", rest, spec)?),
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        protocol,
    })
}

pub(crate) fn addr_of(p: &PortMapping, port: u16) -> SocketAddr {
    let ip = p
        .host_ip
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

/// A host port reserved for a published mapping while its container runs, as docker-proxy
/// holds it: a socket bound to the host address (TCP: bound, not listening). It has neither
/// `SO_REUSEADDR` nor `SO_REUSEPORT`, so any other bind of that port on the host fails with
/// `EADDRINUSE` (a listening socket would also accept what the DNAT rules do not catch). The
/// traffic itself goes through the portmap plugin's DNAT, which rewrites it before any local
/// socket is looked up. Close-on-exec, so no plugin or shim inherits it.
#[derive(Debug)]
pub(crate) struct Held {
    _fd: std::os::fd::OwnedFd,
}

/// Bind the host address of `p` (port 0: the kernel picks a free one) and keep the socket.
pub(crate) fn reserve(p: &PortMapping, port: u16) -> std::io::Result<(u16, Held)> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let a = addr_of(p, port);
    let family = if a.is_ipv4() {
        AddressFamily::INET
    } else {
        AddressFamily::INET6
    };
    let typ = if p.protocol == "udp" {
        SocketType::DGRAM
    } else {
        SocketType::STREAM
    };
    let fd = rustix::net::socket_with(family, typ, SocketFlags::CLOEXEC, None)?;
    rustix::net::bind(&fd, &a)?;
    let got = SocketAddr::try_from(rustix::net::getsockname(&fd)?)?;
    Ok((got.port(), Held { _fd: fd }))
}

fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
}

/// Check every fixed host port is free (not bound on the host, not published by another
/// container of this root) and give random ones a free port; every host port comes back
/// reserved ([`Held`]) for as long as the caller keeps the sockets.
pub(crate) fn resolve(
    wanted: &[PortMapping],
    others: &[PortMapping],
) -> Result<(Vec<PortMapping>, Vec<Held>), Error> {
    let mut out: Vec<PortMapping> = Vec::new();
    let mut held = Vec::new();
    for w in wanted {
        let mut p = w.clone();
        let in_use = || Error::PortInUse {
            addr: addr_of(w, w.host_port).to_string(),
            proto: w.protocol.clone(),
        };
        if p.host_port == 0 {
            for _ in 0..16 {
                let (got, h) = reserve(&p, 0).map_err(|e| Error::Invalid {
                    what: "--publish",
                    value: format!("{}/{}", w.container_port, w.protocol),
                    reason: format!("cannot find a free host port: {e}"),
                })?;
                let cand = PortMapping {
                    host_port: got,
                    ..p.clone()
                };
                if !others.iter().chain(&out).any(|o| clash(o, &cand)) {
                    p.host_port = got;
                    held.push(h);
                    break;
                }
            }
            if p.host_port == 0 {
                return Err(in_use());
            }
        } else {
            if others.iter().chain(&out).any(|o| clash(o, &p)) {
                return Err(in_use());
            }
            let (_, h) = reserve(&p, p.host_port).map_err(|_| in_use())?;
            held.push(h);
        }
        out.push(p);
    }
    Ok((out, held))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pm(ip: &str, h: u16, c: u16, proto: &str) -> PortMapping {
        PortMapping {
            host_ip: ip.into(),
            host_port: h,
            container_port: c,
            protocol: proto.into(),
        }
    }

    #[test]
    fn parses_dockers_forms() {
        assert_eq!(parse_publish("80").unwrap(), pm("", 0, 80, "tcp"));
        assert_eq!(parse_publish("8080:80").unwrap(), pm("", 8080, 80, "tcp"));
        assert_eq!(
            parse_publish("127.0.0.1:8080:80/udp").unwrap(),
            pm("127.0.0.1", 8080, 80, "udp")
        );
        assert_eq!(
            parse_publish("127.0.0.1::80").unwrap(),
            pm("127.0.0.1", 0, 80, "tcp")
        );
        assert_eq!(
            parse_publish("[::1]:8080:80").unwrap(),
            pm("::1", 8080, 80, "tcp")
        );
        for bad in ["", "x", "80/sctp", "1:2:3:4", "70000", "nope:1:2", "8080:0"] {
            assert!(parse_publish(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn port_in_use_is_refused() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let e = resolve(&[pm("127.0.0.1", port, 80, "tcp")], &[]).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
        assert!(
            e.to_string().contains(&format!("127.0.0.1:{port}/tcp")),
            "{e}"
        );
        // Another container of this root publishing it is a clash too.
        drop(l);
        let e = resolve(&[pm("", port, 80, "tcp")], &[pm("", port, 81, "tcp")]).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
    }

    #[test]
    fn random_ports_are_assigned() {
        let (got, held) = resolve(&[pm("127.0.0.1", 0, 80, "tcp")], &[]).unwrap();
        assert_ne!(got[0].host_port, 0);
        assert_eq!(held.len(), 1);
    }

    /// What holding a port relies on, checked on this kernel: a bound socket without
    /// SO_REUSEADDR (TCP not even listening) makes every other bind of the port fail with
    /// EADDRINUSE, also binds that set SO_REUSEADDR (std's TcpListener does) and binds of one
    /// address when every address is held; dropping it frees the port.
    #[test]
    fn a_held_port_cannot_be_bound_by_anyone_else() {
        let (port, held) = reserve(&pm("", 0, 80, "tcp"), 0).unwrap();
        for addr in [format!("0.0.0.0:{port}"), format!("127.0.0.1:{port}")] {
            let e = std::net::TcpListener::bind(&addr).unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{addr}: {e}");
        }
        let e = reserve(&pm("127.0.0.1", 0, 80, "tcp"), port).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE));
        drop(held);
        drop(std::net::TcpListener::bind(("0.0.0.0", port)).unwrap());

        let (port, held) = reserve(&pm("127.0.0.1", 0, 53, "udp"), 0).unwrap();
        let e = std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
        let e = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EADDRINUSE), "{e}");
        drop(held);
        drop(std::net::UdpSocket::bind(("127.0.0.1", port)).unwrap());
    }
}
