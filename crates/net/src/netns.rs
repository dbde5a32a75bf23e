//! Network namespaces as bind-mounted nsfs files, and the few link operations the plugins do
//! not do for us (loopback up, bridge removal), through ioctls on a socket.

use std::io;
use std::path::Path;

fn create_target(path: &Path) -> io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map(drop)
}

/// A new network namespace kept alive by a bind mount at `path`, its loopback up.
pub(crate) fn create(path: &Path) -> io::Result<()> {
    create_target(path)?;
    let target = path.to_owned();
    // A thread of its own: unshare(CLONE_NEWNET) changes only the calling thread, which ends
    // right after, so no other thread of the daemon ever runs in the new namespace.
    // A small stack: glibc keeps the stacks of exited threads for reuse (up to 40 MiB), so
    // with default 2 MiB stacks a burst of starts left tens of MiB resident in berthd.
    let res = std::thread::Builder::new()
        .name("berth-netns".into())
        .stack_size(64 * 1024)
        .spawn(move || -> io::Result<()> {
            // SAFETY: unshare(2) takes no pointers; it moves only this short-lived thread.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return Err(io::Error::last_os_error());
            }
            rustix::mount::mount_bind("/proc/thread-self/ns/net", &target)?;
            set_up("lo", true)
        })?
        .join()
        .map_err(|_| io::Error::other("the netns thread panicked"))?;
    if res.is_err() {
        let _ = remove(path);
    }
    res
}

/// Bind `/proc/<pid>/ns/net` (another container's namespace) at `path`.
pub(crate) fn join(path: &Path, pid: i32) -> io::Result<()> {
    create_target(path)?;
    let res = rustix::mount::mount_bind(format!("/proc/{pid}/ns/net"), path).map_err(Into::into);
    if res.is_err() {
        let _ = std::fs::remove_file(path);
    }
    res
}

/// Unmount and remove `path`; idempotent.
pub(crate) fn remove(path: &Path) -> io::Result<()> {
    match rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH) {
        Ok(()) | Err(rustix::io::Errno::INVAL) | Err(rustix::io::Errno::NOENT) => {}
        Err(e) => return Err(e.into()),
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.len() >= req.ifr_name.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "interface name too long",
        ));
    }
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn socket() -> io::Result<std::os::fd::OwnedFd> {
    rustix::net::socket(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        None,
    )
    .map_err(Into::into)
}

/// Bring interface `name` of the caller's network namespace up or down.
pub(crate) fn set_up(name: &str, up: bool) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let sock = socket()?;
    let mut req = ifreq(name)?;
    // The request's type is `c_ulong` in glibc and `c_int` in musl (`libc::Ioctl`).
    let (get, set) = (
        libc::SIOCGIFFLAGS as libc::Ioctl,
        libc::SIOCSIFFLAGS as libc::Ioctl,
    );
    // SAFETY: SIOCGIFFLAGS reads and fills the ifreq we own for the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), get, &mut req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: after SIOCGIFFLAGS the union holds the flags.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    // IFF_UP is bit 0: it fits the short the ioctl uses.
    const UP: libc::c_short = 1;
    let flags = if up { flags | UP } else { flags & !UP };
    req.ifr_ifru.ifru_flags = flags;
    // SAFETY: SIOCSIFFLAGS reads the ifreq we own.
    if unsafe { libc::ioctl(sock.as_raw_fd(), set, &req) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `SIOCBRDELBR` from linux/sockios.h (the libc crate does not define it).
const SIOCBRDELBR: libc::Ioctl = 0x89a1;

/// Whether the host has an interface called `name`.
pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// Take the bridge `name` down and delete it (the bridge plugin creates bridges but never
/// deletes them); absent is fine.
pub(crate) fn delete_bridge(name: &str) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if !link_exists(name) {
        return Ok(());
    }
    set_up(name, false)?;
    let sock = socket()?;
    let c = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: SIOCBRDELBR reads the NUL-terminated name, which outlives the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), SIOCBRDELBR, c.as_ptr()) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENXIO) {
            return Err(e);
        }
    }
    Ok(())
}
