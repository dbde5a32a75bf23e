//! `Top`, `Stats`, `CopyFrom`/`CopyTo`, and user lookups inside a root filesystem. Every path
//! inside a container's root filesystem is resolved with `openat2(RESOLVE_IN_ROOT)`, so a
//! symlink in the container can never lead to a host file.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use berth_api::v1::{ContainerStats, TopResponse, TopRow};
use rustix::fs::{Mode, OFlags, ResolveFlags};
use tonic::Status as RpcStatus;

use crate::container::Container;
use crate::record::now_nanos;
use crate::{Engine, err_chain};

/// Open `path` inside `rootfs` as if `rootfs` were `/`.
pub(crate) fn open_in_root(rootfs: &Path, path: &str, flags: OFlags) -> std::io::Result<OwnedFd> {
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let rel = path.trim_start_matches('/');
    let rel = if rel.is_empty() { "." } else { rel };
    // With `..` in the path the kernel answers EAGAIN when any rename or mount happened on
    // the system during the lookup; retrying is the documented remedy.
    let mut tries = 0;
    loop {
        match rustix::fs::openat2(
            &root,
            rel,
            flags | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS,
        ) {
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) if tries < 1000 => tries += 1,
            r => return Ok(r?),
        }
    }
}

fn read_in_root(rootfs: &Path, path: &str) -> std::io::Result<String> {
    let fd = open_in_root(rootfs, path, OFlags::RDONLY)?;
    let mut s = String::new();
    std::fs::File::from(fd).read_to_string(&mut s)?;
    Ok(s)
}

/// `user[:group]` -> (uid, gid), names looked up in the root filesystem's passwd and group.
pub(crate) fn resolve_user(rootfs: &Path, spec: &str) -> Result<(u32, u32), String> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let passwd = read_in_root(rootfs, "/etc/passwd").unwrap_or_default();
    let (uid, mut gid) = if let Ok(n) = user.parse::<u32>() {
        let gid = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[2].parse() == Ok(n))
            .and_then(|f| f[3].parse().ok())
            .unwrap_or(0);
        (n, gid)
    } else {
        let f: Vec<&str> = passwd
            .lines()
            .map(|l| l.split(':').collect::<Vec<_>>())
            .find(|f| f.len() > 3 && f[0] == user)
            .ok_or_else(|| {
                format!("unable to find user {user}: no matching entries in passwd file")
            })?;
        (
            f[2].parse()
                .map_err(|_| format!("bad uid for user {user} in /etc/passwd"))?,
            f[3].parse().unwrap_or(0),
        )
    };
    if let Some(g) = group {
        gid = if let Ok(n) = g.parse::<u32>() {
            n
        } else {
            let groups = read_in_root(rootfs, "/etc/group").unwrap_or_default();
            groups
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() > 2 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?
        };
    }
    Ok((uid, gid))
}

fn clk_tck() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(n).ok().filter(|n| *n > 0).unwrap_or(100)
}

struct ProcInfo {
    uid: String,
    pid: i32,
    ppid: i32,
    cpu_ticks: u64,
    start_ticks: u64,
    tty: String,
    cmd: String,
}

fn proc_info(pid: i32) -> Option<ProcInfo> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let close = stat.rfind(')')?;
    let comm = &stat[stat.find('(')? + 1..close];
    let f: Vec<&str> = stat[close + 2..].split_whitespace().collect();
    // f[0] = state (field 3); field n is f[n - 3].
    let ppid = f.get(1)?.parse().ok()?;
    let tty_nr: u64 = f.get(4)?.parse().ok()?;
    let utime: u64 = f.get(11)?.parse().ok()?;
    let stime: u64 = f.get(12)?.parse().ok()?;
    let start: u64 = f.get(19)?.parse().ok()?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let uid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|v| v.split_whitespace().nth(1))
        .unwrap_or("0")
        .to_owned();
    let uid = if uid == "0" { "root".to_owned() } else { uid };
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmd = if cmdline.is_empty() {
        format!("[{comm}]")
    } else {
        cmdline
            .split(|b| *b == 0)
            .filter(|s| !s.is_empty())
            .map(|s| String::from_utf8_lossy(s).into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    };
    let major = (tty_nr >> 8) & 0xfff;
    let minor = (tty_nr & 0xff) | ((tty_nr >> 12) & 0xfff00);
    let tty = match major {
        0 => "?".to_owned(),
        136..=143 => format!("pts/{}", (major - 136) * 256 + minor),
        4 => format!("tty{minor}"),
        _ => "?".to_owned(),
    };
    Some(ProcInfo {
        uid,
        pid,
        ppid,
        cpu_ticks: utime + stime,
        start_ticks: start,
        tty,
        cmd,
    })
}

fn uptime_secs() -> f64 {
    std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0)
}

#[allow(
    clippy::cast_precision_loss,
    clippy::cast_possible_truncation,
    clippy::cast_sign_loss
)]
fn top_rows(pids: &[i32]) -> TopResponse {
    let hz = clk_tck();
    let up = uptime_secs();
    let now = now_nanos() / 1_000_000_000;
    let boot = now as f64 - up;
    let mut rows = Vec::new();
    for &pid in pids {
        let Some(p) = proc_info(pid) else { continue };
        let started = p.start_ticks as f64 / hz as f64;
        let elapsed = (up - started).max(0.001);
        let cpu_secs = p.cpu_ticks / hz;
        let c = ((p.cpu_ticks as f64 / hz as f64) / elapsed * 100.0) as u64;
        let st = (boot + started) as i64;
        let sod = st.rem_euclid(86_400);
        let stime = format!("{:02}:{:02}", sod / 3600, (sod / 60) % 60);
        let time = format!(
            "{:02}:{:02}:{:02}",
            cpu_secs / 3600,
            (cpu_secs / 60) % 60,
            cpu_secs % 60
        );
        rows.push(TopRow {
            fields: vec![
                p.uid,
                p.pid.to_string(),
                p.ppid.to_string(),
                c.to_string(),
                stime,
                p.tty,
                time,
                p.cmd,
            ],
        });
    }
    TopResponse {
        titles: ["UID", "PID", "PPID", "C", "STIME", "TTY", "TIME", "CMD"]
            .map(String::from)
            .to_vec(),
        processes: rows,
    }
}

/// Run the host's `ps ARGS` and keep the rows of `pids`; the last column keeps its spaces.
fn ps_top(args: &[String], pids: &[i32]) -> Result<TopResponse, String> {
    let out = std::process::Command::new("ps")
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ps: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ps {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    parse_ps(&String::from_utf8_lossy(&out.stdout), pids)
}

fn parse_ps(text: &str, pids: &[i32]) -> Result<TopResponse, String> {
    let mut lines = text.lines();
    let titles: Vec<String> = lines
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let pid_col = titles
        .iter()
        .position(|t| t == "PID")
        .ok_or("couldn't find the PID field in the ps output: give ps options that print it")?;
    let mut processes = Vec::new();
    for line in lines {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < titles.len() {
            continue;
        }
        let Ok(pid) = fields[pid_col].parse::<i32>() else {
            continue;
        };
        if !pids.contains(&pid) {
            continue;
        }
        let last = titles.len() - 1;
        let mut row: Vec<String> = fields[..last].iter().map(|f| (*f).to_owned()).collect();
        row.push(fields[last..].join(" "));
        processes.push(TopRow { fields: row });
    }
    Ok(TopResponse { titles, processes })
}

fn host_cpu_nanos() -> u64 {
    let hz = clk_tck();
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            let line = s.lines().find(|l| l.starts_with("cpu "))?.to_owned();
            Some(
                line.split_whitespace()
                    .skip(1)
                    .take(8)
                    .filter_map(|v| v.parse::<u64>().ok())
                    .sum::<u64>(),
            )
        })
        .map_or(0, |ticks| ticks * (1_000_000_000 / hz))
}

fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb * 1024)
}

fn net_bytes(pid: i32) -> (u64, u64) {
    let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/net/dev")) else {
        return (0, 0);
    };
    let mut rx = 0;
    let mut tx = 0;
    for l in s.lines().skip(2) {
        let Some((iface, rest)) = l.split_once(':') else {
            continue;
        };
        if iface.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = rest
            .split_whitespace()
            .filter_map(|v| v.parse().ok())
            .collect();
        rx += f.first().copied().unwrap_or(0);
        tx += f.get(8).copied().unwrap_or(0);
    }
    (rx, tx)
}

fn blkio(dir: Option<&PathBuf>) -> (u64, u64) {
    let Some(dir) = dir else { return (0, 0) };
    let Ok(s) = std::fs::read_to_string(dir.join("blkio.throttle.io_service_bytes")) else {
        return (0, 0);
    };
    let (mut r, mut w) = (0, 0);
    for l in s.lines() {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 {
            let v: u64 = f[2].parse().unwrap_or(0);
            match f[1] {
                "Read" => r += v,
                "Write" => w += v,
                _ => {}
            }
        }
    }
    (r, w)
}

impl Engine {
    /// `Top`.
    /// `Top`: the container's processes, in ps's `-ef` columns; with `ps_args`, as Docker
    /// does, the host's `ps` runs with those arguments and only the container's rows are kept
    /// (found by the `PID` column, which the arguments must therefore produce).
    pub(crate) async fn top(
        &self,
        c: &Container,
        ps_args: Vec<String>,
    ) -> Result<TopResponse, RpcStatus> {
        let client = {
            let m = c.lock();
            match (&m.shim, m.rec.status.is_active()) {
                (Some(s), true) => s.clone(),
                _ => {
                    return Err(RpcStatus::failed_precondition(format!(
                        "container {} is not running",
                        c.id
                    )));
                }
            }
        };
        tokio::task::spawn_blocking(move || {
            let pids = client.pids().map_err(|e| {
                RpcStatus::internal(format!("cannot list the processes: {}", err_chain(&e)))
            })?;
            if ps_args.is_empty() {
                Ok(top_rows(&pids))
            } else {
                ps_top(&ps_args, &pids).map_err(RpcStatus::invalid_argument)
            }
        })
        .await
        .map_err(|e| RpcStatus::internal(e.to_string()))?
    }

    /// One `Stats` sample.
    pub(crate) fn stats_sample(&self, c: &Container) -> ContainerStats {
        let (name, path, pid) = {
            let m = c.lock();
            (m.rec.name.clone(), m.rec.cgroups_path.clone(), m.rec.pid)
        };
        let mut out = ContainerStats {
            id: c.id.clone(),
            name,
            time_unix_nanos: now_nanos(),
            system_cpu_nanos: host_cpu_nanos(),
            online_cpus: std::thread::available_parallelism()
                .map_or(1, |n| u32::try_from(n.get()).unwrap_or(1)),
            ..Default::default()
        };
        if let Ok(layout) = berth_cgroups::Layout::detect() {
            if let Ok(mgr) = berth_cgroups::Manager::resolve(&layout, Some(&path), &c.id, false) {
                if let Ok(s) = mgr.stats() {
                    out.cpu_usage_nanos = s.cpu_usage_ns.unwrap_or(0);
                    out.memory_usage = s.memory_usage.unwrap_or(0);
                    out.memory_limit = s.memory_limit.unwrap_or_else(host_memory);
                    out.pids = s.pids_current.unwrap_or(0);
                }
                let blk = mgr
                    .paths()
                    .v1
                    .iter()
                    .find(|(k, _)| k.split(',').any(|c| c == "blkio"))
                    .map(|(_, p)| p);
                (out.block_read, out.block_write) = blkio(blk);
            }
        }
        if pid > 0 {
            (out.net_rx, out.net_tx) = net_bytes(pid);
        }
        out
    }

    /// `CopyFrom`: a tar of `path` in the container's root filesystem, sent in chunks.
    pub(crate) fn copy_from(
        &self,
        c: &Container,
        path: &str,
        tx: tokio::sync::mpsc::Sender<Result<berth_api::v1::Chunk, RpcStatus>>,
    ) -> Result<(), RpcStatus> {
        let rootfs = self.bundle_dir(&c.id).join("rootfs");
        let fd = open_in_root(&rootfs, path, OFlags::PATH).map_err(|e| {
            RpcStatus::not_found(format!(
                "Could not find the file {path} in container {}: {e}",
                c.name()
            ))
        })?;
        let base = Path::new(path)
            .file_name()
            .map_or_else(|| ".".into(), |n| n.to_string_lossy().into_owned());
        let w = ChunkWriter {
            tx,
            buf: Vec::with_capacity(CHUNK),
        };
        let mut b = tar::Builder::new(w);
        b.follow_symlinks(false);
        let meta = rustix::fs::fstat(&fd).map_err(|e| {
            RpcStatus::not_found(format!("Could not stat {path} in container {}: {e}", c.id))
        })?;
        let is_dir =
            rustix::fs::FileType::from_raw_mode(meta.st_mode) == rustix::fs::FileType::Directory;
        let res = if is_dir {
            // The walk below the directory goes by its resolved host path, which lies inside the
            // root filesystem; entries are archived as they are (symlinks are not followed).
            let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
                .ok()
                .filter(|p| p.starts_with(&rootfs))
                .ok_or_else(|| {
                    RpcStatus::internal(format!("cannot resolve {path} in container {}", c.id))
                })?;
            b.append_dir_all(&base, &real)
        } else {
            let file = open_in_root(
                &rootfs,
                path,
                OFlags::RDONLY | OFlags::NOCTTY | OFlags::NONBLOCK,
            )
            .map_err(|e| {
                RpcStatus::not_found(format!("cannot open {path} in container {}: {e}", c.id))
            })?;
            b.append_file(&base, &mut std::fs::File::from(file))
        };
        res.and_then(|()| b.into_inner()?.flush()).map_err(|e| {
            RpcStatus::internal(format!("cannot archive {path} of container {}: {e}", c.id))
        })?;
        drop(fd);
        Ok(())
    }

    /// `CopyTo`: extract a tar stream into directory `path` of the container.
    pub(crate) fn copy_to(
        &self,
        c: &Container,
        path: &str,
        reader: impl Read + Send,
    ) -> Result<(), RpcStatus> {
        let rootfs = self.bundle_dir(&c.id).join("rootfs");
        let fd = open_in_root(&rootfs, path, OFlags::PATH | OFlags::DIRECTORY).map_err(|e| {
            RpcStatus::not_found(format!(
                "Could not find the directory {path} in container {}: {e}",
                c.name()
            ))
        })?;
        let real = PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()));
        let opts = berth_unpack::Options {
            whiteouts: berth_unpack::Whiteouts::Apply,
            ..Default::default()
        };
        berth_unpack::apply_layer(reader, berth_unpack::Compression::None, &real, &opts).map_err(
            |e| {
                RpcStatus::invalid_argument(format!(
                    "cannot extract into {path} of container {}: {}",
                    c.id,
                    err_chain(&e)
                ))
            },
        )?;
        drop(fd);
        Ok(())
    }
}

const CHUNK: usize = 64 * 1024;

struct ChunkWriter {
    tx: tokio::sync::mpsc::Sender<Result<berth_api::v1::Chunk, RpcStatus>>,
    buf: Vec<u8>,
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.flush()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let data = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        self.tx
            .blocking_send(Ok(berth_api::v1::Chunk { data }))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "client went away"))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn ps_output_is_filtered_by_pid_and_keeps_the_command_whole() {
        let text = "  PID USER     COMMAND\n    1 root     /sbin/init splash\n   42 root     sleep 1000\n   43 root     sh -c x\n";
        let r = super::parse_ps(text, &[42, 43]).unwrap();
        assert_eq!(r.titles, ["PID", "USER", "COMMAND"]);
        let rows: Vec<Vec<String>> = r.processes.into_iter().map(|p| p.fields).collect();
        assert_eq!(
            rows,
            [["42", "root", "sleep 1000"], ["43", "root", "sh -c x"]]
        );
        let err = super::parse_ps("USER COMMAND\nroot x\n", &[1]).unwrap_err();
        assert!(err.contains("PID"), "{err}");
    }

    #[test]
    fn users_resolve_inside_the_rootfs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(
            d.path().join("etc/passwd"),
            "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65533:n:/:/bin/false\n",
        )
        .unwrap();
        std::fs::write(d.path().join("etc/group"), "root:x:0:\nstaff:x:50:\n").unwrap();
        assert_eq!(super::resolve_user(d.path(), "nobody"), Ok((65534, 65533)));
        assert_eq!(
            super::resolve_user(d.path(), "nobody:staff"),
            Ok((65534, 50))
        );
        assert_eq!(super::resolve_user(d.path(), "1000:7"), Ok((1000, 7)));
        assert!(
            super::resolve_user(d.path(), "ghost")
                .unwrap_err()
                .contains("no matching entries")
        );
    }
}
