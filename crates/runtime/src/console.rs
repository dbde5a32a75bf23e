//! Terminals: the pty is created inside the container (from its own devpts instance) and the
//! master is handed to the caller over `--console-socket` with `SCM_RIGHTS`, as runc does.

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;

use rustix::fs::OFlags;
use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer,
    SendAncillaryMessage, SendFlags,
};

use crate::error::{Context, Error, Result};
use crate::rootfs::safepath::{Root, fd_path};

/// A pty pair.
#[derive(Debug)]
pub struct Pty {
    /// Master side, for the caller.
    pub master: OwnedFd,
    /// Slave side, the container's stdio.
    pub slave: OwnedFd,
    /// `/dev/pts/N`.
    pub name: String,
}

/// Open a new pty from the devpts instance at `<root>/dev/pts`.
pub fn open_pty(root: &Root) -> Result<Pty> {
    let master = root
        .open_at(
            Path::new("/dev/pts/ptmx"),
            OFlags::RDWR | OFlags::NOCTTY,
            false,
        )
        .ctx(|| "open /dev/pts/ptmx in the container (is devpts mounted on /dev/pts?)")?;
    rustix::pty::unlockpt(&master).ctx(|| "unlock the pty")?;
    let name = rustix::pty::ptsname(&master, Vec::new()).ctx(|| "get the pty's name")?;
    let name = name.to_string_lossy().into_owned();
    let slave = rustix::pty::ioctl_tiocgptpeer(
        &master,
        rustix::pty::OpenptFlags::RDWR | rustix::pty::OpenptFlags::NOCTTY,
    )
    .ctx(|| format!("open the pty slave {name}"))?;
    Ok(Pty {
        master,
        slave,
        name,
    })
}

/// Bind the pty slave over `/dev/console` in the container.
pub fn bind_console(root: &Root, pty: &Pty) -> Result<()> {
    let target = root.create_file(Path::new("/dev/console"), 0o600)?;
    rustix::mount::mount_bind(fd_path(&pty.slave).as_str(), fd_path(&target).as_str())
        .ctx(|| format!("bind {} on /dev/console", pty.name))
}

/// Set the terminal size.
pub fn set_size(fd: impl AsFd, rows: u16, cols: u16) -> Result<()> {
    let ws = rustix::termios::Winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    rustix::termios::tcsetwinsize(fd, ws).ctx(|| "set the terminal size")
}

/// Make `slave` the calling process's controlling terminal and stdio.
pub fn become_session_leader_on(slave: &OwnedFd) -> Result<()> {
    rustix::process::setsid().ctx(|| "start a new session for the terminal")?;
    rustix::process::ioctl_tiocsctty(slave).ctx(|| "make the pty the controlling terminal")?;
    for target in 0..3 {
        dup_onto(slave.as_fd(), target)?;
    }
    Ok(())
}

/// `dup2(fd, target)`.
pub fn dup_onto(fd: BorrowedFd<'_>, target: i32) -> Result<()> {
    // SAFETY: dup2 only manipulates the descriptor table; `fd` is open and `target` is a small
    // stdio number we own (the process replaces its own stdio before exec).
    let rc = unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&fd), target) };
    if rc < 0 {
        return Err(Error::sys(
            format!("dup2 onto fd {target}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// Send `fd` over a unix socket with `SCM_RIGHTS`, with `name` as the payload.
pub fn send_fd(socket: impl AsFd, fd: BorrowedFd<'_>, name: &str) -> Result<()> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    let fds = [fd];
    if !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::InvalidArgument("ancillary buffer too small".into()));
    }
    let payload = if name.is_empty() { "fd" } else { name };
    rustix::net::sendmsg(
        socket,
        &[IoSlice::new(payload.as_bytes())],
        &mut anc,
        SendFlags::empty(),
    )
    .ctx(|| "send the terminal to the console socket")?;
    Ok(())
}

/// Receive one fd sent with [`send_fd`].
pub fn recv_fd(socket: impl AsFd) -> Result<OwnedFd> {
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut buf = [0u8; 4096];
    rustix::net::recvmsg(
        socket,
        &mut [std::io::IoSliceMut::new(&mut buf)],
        &mut anc,
        RecvFlags::CMSG_CLOEXEC,
    )
    .ctx(|| "receive the terminal from the container")?;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = msg {
            if let Some(fd) = fds.next() {
                return Ok(fd);
            }
        }
    }
    Err(Error::Child(
        "the container closed the console socket without sending a terminal".into(),
    ))
}

/// Connect to a console socket path.
pub fn connect(path: &Path) -> Result<OwnedFd> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::UNIX,
        rustix::net::SocketType::STREAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )
    .ctx(|| "create a unix socket")?;
    let addr = rustix::net::SocketAddrUnix::new(path)
        .ctx(|| format!("console socket path {}", path.display()))?;
    rustix::net::connect(&sock, &addr)
        .ctx(|| format!("connect to console socket {}", path.display()))?;
    Ok(sock)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fds_pass_over_a_socket() {
        let (a, b) = rustix::net::socketpair(
            rustix::net::AddressFamily::UNIX,
            rustix::net::SocketType::STREAM,
            rustix::net::SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        let (r, w) = rustix::pipe::pipe().unwrap();
        send_fd(&a, w.as_fd(), "/dev/pts/9").unwrap();
        let got = recv_fd(&b).unwrap();
        rustix::io::write(&got, b"hi").unwrap();
        let mut buf = [0u8; 2];
        rustix::io::read(&r, &mut buf).unwrap();
        assert_eq!(&buf, b"hi");
    }
}
