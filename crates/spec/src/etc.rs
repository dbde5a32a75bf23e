//! The container's managed `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf`.

use std::net::IpAddr;
use std::path::{Path, PathBuf};

use crate::{Error, EtcFiles};

/// Where the host's files are read from (tests point these elsewhere).
pub(crate) struct HostFiles<'a> {
    pub hosts: &'a str,
    pub resolv_conf: &'a str,
    /// systemd-resolved's upstream list, used when the host's resolv.conf only names the
    /// local stub (127.0.0.53), which a container cannot reach.
    pub resolved_upstream: &'a str,
}

pub(crate) const HOST: HostFiles<'static> = HostFiles {
    hosts: "/etc/hosts",
    resolv_conf: "/etc/resolv.conf",
    resolved_upstream: "/run/systemd/resolve/resolv.conf",
};

/// Docker's fallback when no usable nameserver is left.
const FALLBACK_NAMESERVERS: &[&str] = &["8.8.8.8", "8.8.4.4"];

/// "name:ip" (or "name=ip", IPv6 optionally in brackets) -> (name, ip).
pub(crate) fn parse_extra_host(s: &str) -> Result<(String, IpAddr), Error> {
    let bad = |reason: String| Error::invalid("--add-host", s, reason);
    let (name, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| bad(format!("invalid argument {s:?}: use name:ip")))?;
    if name.is_empty() || name.contains(char::is_whitespace) {
        return Err(bad(format!("invalid host name {name:?}")));
    }
    let ip_str = ip.trim_start_matches('[').trim_end_matches(']');
    if ip_str == "host-gateway" {
        return Err(bad(
            "host-gateway is resolved by berthd to the host's address; it reached the spec unresolved".into(),
        ));
    }
    let ip: IpAddr = ip_str
        .parse()
        .map_err(|_| bad(format!("invalid IP address in add-host: {ip:?}")))?;
    Ok((name.to_owned(), ip))
}

fn read_host(path: &str) -> Result<String, Error> {
    let path = Path::new(path);
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(e) => Err(Error::io(format!("read the host's {}", path.display()), e)),
    }
}

fn is_loopback_nameserver(line: &str) -> bool {
    let mut f = line.split_whitespace();
    if f.next() != Some("nameserver") {
        return false;
    }
    f.next()
        .map(|a| a.split('%').next().unwrap_or(a))
        .and_then(|a| a.parse::<IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
}

fn is_nameserver(line: &str) -> bool {
    line.split_whitespace().next() == Some("nameserver")
}

/// The container's resolv.conf from the host's.
pub(crate) fn resolv_conf(
    host: &HostFiles,
    network_mode: &str,
    dns: &[String],
) -> Result<String, Error> {
    for d in dns {
        d.parse::<IpAddr>()
            .map_err(|_| Error::invalid("--dns", d, format!("{d} is not an ip address")))?;
    }
    let mut text = read_host(host.resolv_conf)?;
    let host_net = network_mode == "host";
    if !host_net
        && text.lines().any(is_nameserver)
        && text
            .lines()
            .filter(|l| is_nameserver(l))
            .all(is_loopback_nameserver)
    {
        let upstream = read_host(host.resolved_upstream)?;
        if upstream
            .lines()
            .any(|l| is_nameserver(l) && !is_loopback_nameserver(l))
        {
            text = upstream;
        }
    }
    let mut out: Vec<String> = Vec::new();
    let mut had_nameserver = false;
    for line in text.lines() {
        if is_nameserver(line) {
            if !dns.is_empty() || (!host_net && is_loopback_nameserver(line)) {
                continue;
            }
            had_nameserver = true;
        }
        out.push(line.to_owned());
    }
    for d in dns {
        out.push(format!("nameserver {d}"));
    }
    if dns.is_empty() && !had_nameserver && !host_net {
        for d in FALLBACK_NAMESERVERS {
            out.push(format!("nameserver {d}"));
        }
    }
    let mut s = out.join("\n");
    s.push('\n');
    Ok(s)
}

/// The container's /etc/hosts.
pub(crate) fn hosts(
    host: &HostFiles,
    hostname: &str,
    network_mode: &str,
    extra_hosts: &[String],
) -> Result<String, Error> {
    let extra = extra_hosts
        .iter()
        .map(|h| parse_extra_host(h))
        .collect::<Result<Vec<_>, _>>()?;
    let mut s = if network_mode == "host" {
        let mut t = read_host(host.hosts)?;
        if !t.is_empty() && !t.ends_with('\n') {
            t.push('\n');
        }
        t
    } else {
        let mut t = String::from(
            "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nff00::0\tip6-mcastprefix\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n",
        );
        if !hostname.is_empty() {
            t.push_str(&format!("127.0.1.1\t{hostname}\n"));
        }
        t
    };
    for (name, ip) in extra {
        s.push_str(&format!("{ip}\t{name}\n"));
    }
    Ok(s)
}

fn write(path: PathBuf, contents: &str) -> Result<PathBuf, Error> {
    std::fs::write(&path, contents)
        .map_err(|e| Error::io(format!("write {}", path.display()), e))?;
    Ok(path)
}

pub(crate) fn write_all(
    host: &HostFiles,
    dir: &Path,
    hostname: &str,
    network_mode: &str,
    dns: &[String],
    extra_hosts: &[String],
) -> Result<EtcFiles, Error> {
    // Compute everything first so a bad value leaves no files behind.
    let hosts = hosts(host, hostname, network_mode, extra_hosts)?;
    let resolv = resolv_conf(host, network_mode, dns)?;
    std::fs::create_dir_all(dir).map_err(|e| Error::io(format!("create {}", dir.display()), e))?;
    Ok(EtcFiles {
        hostname: write(dir.join("hostname"), &format!("{hostname}\n"))?,
        hosts: write(dir.join("hosts"), &hosts)?,
        resolv_conf: write(dir.join("resolv.conf"), &resolv)?,
    })
}
