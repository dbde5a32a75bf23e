//! The name server of a user-defined network: bound to the network's gateway address (UDP
//! port 53) inside berthd, it answers the names and aliases of the network's containers and
//! forwards every other query, unchanged, to the upstream resolvers.

use std::collections::HashMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

/// The TTL of answers about containers (Docker's embedded server uses 600 s; short, since
/// containers come and go).
const TTL: u32 = 60;

/// Names (lower case, no trailing dot) to addresses.
pub type Names = HashMap<String, Vec<Ipv4Addr>>;

/// A running name server; dropping it stops it.
pub struct Responder {
    addr: SocketAddr,
    names: Arc<RwLock<Names>>,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Responder {
    /// Bind `addr` and serve: `names` answered, the rest forwarded to `upstreams`.
    pub fn start(addr: SocketAddr, upstreams: Vec<SocketAddr>) -> io::Result<Responder> {
        let sock = UdpSocket::bind(addr)?;
        sock.set_read_timeout(Some(Duration::from_millis(500)))?;
        let names = Arc::new(RwLock::new(Names::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (n, s) = (names.clone(), stop.clone());
        let thread = std::thread::Builder::new()
            .name("berth-dns".into())
            .spawn(move || serve(&sock, &n, &upstreams, &s))?;
        Ok(Responder {
            addr,
            names,
            stop,
            thread: Some(thread),
        })
    }

    /// The address served.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replace the names answered.
    pub fn set_names(&self, names: Names) {
        *self.names.write().unwrap_or_else(|p| p.into_inner()) = names;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The host's resolvers (`/etc/resolv.conf`), port 53: berthd runs in the host's network
/// namespace, so a loopback stub (systemd-resolved) is reachable from here.
pub fn host_upstreams() -> Vec<SocketAddr> {
    std::fs::read_to_string("/etc/resolv.conf")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            (f.next() == Some("nameserver")).then_some(())?;
            let ip: std::net::IpAddr = f.next()?.split('%').next()?.parse().ok()?;
            Some(SocketAddr::new(ip, 53))
        })
        .collect()
}

fn serve(sock: &UdpSocket, names: &RwLock<Names>, upstreams: &[SocketAddr], stop: &AtomicBool) {
    let mut buf = [0u8; 4096];
    while !stop.load(Ordering::Relaxed) {
        let Ok((n, from)) = sock.recv_from(&mut buf) else {
            continue;
        };
        let query = buf[..n].to_vec();
        let local = {
            let names = names.read().unwrap_or_else(|p| p.into_inner());
            answer(&query, &names)
        };
        match local {
            Some(reply) => {
                let _ = sock.send_to(&reply, from);
            }
            None => {
                // Forwarding waits for the upstream: a thread of its own per query, so a slow
                // upstream never holds up the names of the network.
                let Ok(out) = sock.try_clone() else { continue };
                let ups = upstreams.to_vec();
                let _ = std::thread::Builder::new()
                    .name("berth-dns-fwd".into())
                    .spawn(move || forward(&out, from, &query, &ups));
            }
        }
    }
}

/// The reply to `query` if it asks about a name of the network; `None`: forward it.
pub(crate) fn answer(query: &[u8], names: &Names) -> Option<Vec<u8>> {
    let req = Message::from_vec(query).ok()?;
    if req.message_type() != MessageType::Query {
        return None;
    }
    let q = req.queries().first()?;
    let name = q
        .name()
        .to_ascii()
        .trim_end_matches('.')
        .to_ascii_lowercase();
    let ips = names.get(&name)?;
    let mut resp = Message::new();
    resp.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(req.op_code())
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(q.clone());
    // A names the network knows has only IPv4 addresses: other types get an empty NOERROR.
    if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        for ip in ips {
            resp.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(*ip))));
        }
    }
    resp.to_vec().ok()
}

fn forward(sock: &UdpSocket, from: SocketAddr, query: &[u8], upstreams: &[SocketAddr]) {
    for up in upstreams {
        let bind: SocketAddr = if up.is_ipv4() {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(u) = UdpSocket::bind(bind) else {
            continue;
        };
        let _ = u.set_read_timeout(Some(Duration::from_secs(2)));
        if u.connect(up).and_then(|()| u.send(query)).is_err() {
            continue;
        }
        let mut buf = [0u8; 4096];
        if let Ok(n) = u.recv(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
            return;
        }
    }
    // No upstream answered: SERVFAIL, so the client does not wait for its own timeout.
    if let Ok(req) = Message::from_vec(query) {
        let mut resp = Message::error_msg(req.id(), req.op_code(), ResponseCode::ServFail);
        for q in req.queries() {
            resp.add_query(q.clone());
        }
        if let Ok(b) = resp.to_vec() {
            let _ = sock.send_to(&b, from);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(7)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_known_names_and_leaves_the_rest() {
        let mut names = Names::new();
        names.insert("web".into(), vec![Ipv4Addr::new(10, 0, 0, 2)]);
        let r = Message::from_vec(&answer(&query("WEB.", RecordType::A), &names).unwrap()).unwrap();
        assert_eq!(r.id(), 7);
        assert_eq!(r.answers().len(), 1);
        assert_eq!(
            r.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(10, 0, 0, 2)))
        );
        let r =
            Message::from_vec(&answer(&query("web.", RecordType::AAAA), &names).unwrap()).unwrap();
        assert!(r.answers().is_empty());
        assert_eq!(r.response_code(), ResponseCode::NoError);
        assert!(answer(&query("example.com.", RecordType::A), &names).is_none());
        assert!(answer(b"garbage", &names).is_none());
    }

    #[test]
    fn forwards_to_the_upstream_and_serves_locally() {
        // An upstream on loopback that answers everything with 192.0.2.1.
        let up = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up_addr = up.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 512];
            let (n, from) = up.recv_from(&mut buf).unwrap();
            let req = Message::from_vec(&buf[..n]).unwrap();
            let mut resp = Message::new();
            resp.set_id(req.id())
                .set_message_type(MessageType::Response);
            let q = req.queries()[0].clone();
            resp.add_answer(Record::from_rdata(
                q.name().clone(),
                5,
                RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
            ));
            resp.add_query(q);
            up.send_to(&resp.to_vec().unwrap(), from).unwrap();
        });
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = probe.local_addr().unwrap();
        drop(probe);
        let r = Responder::start(addr, vec![up_addr]).unwrap();
        let mut names = Names::new();
        names.insert("db".into(), vec![Ipv4Addr::new(10, 0, 0, 3)]);
        r.set_names(names);
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 512];
        for (name, want) in [("db.", [10, 0, 0, 3]), ("elsewhere.test.", [192, 0, 2, 1])] {
            c.send_to(&query(name, RecordType::A), addr).unwrap();
            let n = c.recv(&mut buf).unwrap();
            let m = Message::from_vec(&buf[..n]).unwrap();
            assert_eq!(
                m.answers()[0].data(),
                &RData::A(A(Ipv4Addr::from(want))),
                "{name}"
            );
        }
    }
}
