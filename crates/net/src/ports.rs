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

fn addr_of(p: &PortMapping, port: u16) -> SocketAddr {
    let ip = p
        .host_ip
        .parse::<IpAddr>()
        .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
    SocketAddr::new(ip, port)
}

/// Bind the host address to test it is free (port 0: let the kernel pick one); the socket is
/// closed again (the plugin's DNAT rules carry the traffic).
fn probe(p: &PortMapping, port: u16) -> std::io::Result<u16> {
    let a = addr_of(p, port);
    if p.protocol == "udp" {
        Ok(std::net::UdpSocket::bind(a)?.local_addr()?.port())
    } else {
        Ok(std::net::TcpListener::bind(a)?.local_addr()?.port())
    }
}

fn clash(a: &PortMapping, b: &PortMapping) -> bool {
    a.protocol == b.protocol
        && a.host_port == b.host_port
        && (a.host_ip.is_empty() || b.host_ip.is_empty() || a.host_ip == b.host_ip)
}

/// Check every fixed host port is free (not bound on the host, not published by another
/// container of this root) and give random ones a free port.
pub(crate) fn resolve(
    wanted: &[PortMapping],
    others: &[PortMapping],
) -> Result<Vec<PortMapping>, Error> {
    let mut out: Vec<PortMapping> = Vec::new();
    for w in wanted {
        let mut p = w.clone();
        let in_use = || Error::PortInUse {
            addr: addr_of(w, w.host_port).to_string(),
            proto: w.protocol.clone(),
        };
        if p.host_port == 0 {
            for _ in 0..16 {
                let got = probe(&p, 0).map_err(|e| Error::Invalid {
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
            probe(&p, p.host_port).map_err(|_| in_use())?;
        }
        out.push(p);
    }
    Ok(out)
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
        // Another container of this root publishing it is a clash too.
        drop(l);
        let e = resolve(&[pm("", port, 80, "tcp")], &[pm("", port, 81, "tcp")]).unwrap_err();
        assert!(e.to_string().contains("already in use"), "{e}");
    }

    #[test]
    fn random_ports_are_assigned() {
        let got = resolve(&[pm("127.0.0.1", 0, 80, "tcp")], &[]).unwrap();
        assert_ne!(got[0].host_port, 0);
    }
}
