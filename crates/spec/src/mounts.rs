//! The container's mounts: Docker's defaults, the managed /etc files, `-v`, `--mount`,
//! `--tmpfs` and the `--init` binary.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::{Error, EtcFiles, parse};

/// `/dev/shm`'s size: Docker's default 64 MiB.
pub(crate) const SHM_SIZE: u64 = 64 * 1024 * 1024;

/// Where `--init` puts the init binary.
pub(crate) const INIT_PATH: &str = "/sbin/berth-init";

fn mount(dest: &str, typ: &str, source: &str, options: &[&str]) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(PathBuf::from(source)));
    m.set_options(Some(options.iter().map(|o| (*o).to_owned()).collect()));
    m
}

fn owned_mount(dest: &str, typ: &str, source: &Path, options: Vec<String>) -> Mount {
    let mut m = Mount::default();
    m.set_destination(PathBuf::from(dest));
    m.set_typ(Some(typ.to_owned()));
    m.set_source(Some(source.to_owned()));
    m.set_options(Some(options));
    m
}

/// Docker's default mounts. `privileged` makes /sys and the cgroup tree writable.
pub(crate) fn defaults(privileged: bool) -> Vec<Mount> {
    let sys_mode = if privileged { "rw" } else { "ro" };
    let shm_size = format!("size={SHM_SIZE}");
    vec![
        mount("/proc", "proc", "proc", &["nosuid", "noexec", "nodev"]),
        mount(
            "/dev",
            "tmpfs",
            "tmpfs",
            &["nosuid", "strictatime", "mode=755", "size=65536k"],
        ),
        mount(
            "/dev/pts",
            "devpts",
            "devpts",
            &[
                "nosuid",
                "noexec",
                "newinstance",
                "ptmxmode=0666",
                "mode=0620",
                "gid=5",
            ],
        ),
        mount(
            "/sys",
            "sysfs",
            "sysfs",
            &["nosuid", "noexec", "nodev", sys_mode],
        ),
        mount(
            "/sys/fs/cgroup",
            "cgroup",
            "cgroup",
            &["nosuid", "noexec", "nodev", "relatime", sys_mode],
        ),
        mount(
            "/dev/mqueue",
            "mqueue",
            "mqueue",
            &["nosuid", "noexec", "nodev"],
        ),
        mount(
            "/dev/shm",
            "tmpfs",
            "shm",
            &["nosuid", "noexec", "nodev", "mode=1777", &shm_size],
        ),
    ]
}

/// Binds of the managed /etc files (read-only with `--read-only`, as Docker's).
pub(crate) fn etc(etc: &EtcFiles, read_only: bool) -> Vec<Mount> {
    let rw = if read_only { "ro" } else { "rw" };
    let opts = || vec!["rbind".to_owned(), "rprivate".to_owned(), rw.to_owned()];
    vec![
        owned_mount("/etc/hostname", "bind", &etc.hostname, opts()),
        owned_mount("/etc/hosts", "bind", &etc.hosts, opts()),
        owned_mount("/etc/resolv.conf", "bind", &etc.resolv_conf, opts()),
    ]
}

/// The `--init` binary, read-only.
pub(crate) fn init(binary: &Path) -> Mount {
    owned_mount(
        INIT_PATH,
        "bind",
        binary,
        vec!["rbind".into(), "rprivate".into(), "ro".into()],
    )
}

/// A user mount from `config.mounts` (or a parsed `--tmpfs`).
pub(crate) fn user(m: &berth_api::v1::Mount) -> Result<Mount, Error> {
    let target = m.target.as_str();
    if !target.starts_with('/') {
        return Err(Error::Config(format!(
            "invalid mount target {target:?}: the path in the container must be absolute"
        )));
    }
    match m.r#type.as_str() {
        "bind" => bind(m),
        "tmpfs" => Ok(tmpfs(m)),
        // The engine turns volumes into binds of their directories before building the spec.
        "volume" => Err(Error::Config(format!(
            "the volume mount at {target} was not resolved to a host directory (volumes are created by berthd, not by the spec builder)"
        ))),
        other => Err(Error::Config(format!(
            "unsupported mount type {other:?} for {target}: use bind, tmpfs or volume"
        ))),
    }
}

fn bind(m: &berth_api::v1::Mount) -> Result<Mount, Error> {
    let source = Path::new(&m.source);
    if !source.is_absolute() {
        return Err(Error::Config(format!(
            "invalid bind source {:?} for {}: it must be an absolute host path",
            m.source, m.target
        )));
    }
    let create = m.options.iter().any(|o| o == parse::OPT_CREATE_SOURCE);
    match std::fs::metadata(source) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && create => {
            std::fs::create_dir_all(source).map_err(|e| {
                Error::io(
                    format!(
                        "create the missing bind source directory {}",
                        source.display()
                    ),
                    e,
                )
            })?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::Config(format!(
                "bind source path does not exist: {}",
                m.source
            )));
        }
        Err(e) => {
            return Err(Error::io(
                format!("stat bind source {}", source.display()),
                e,
            ));
        }
    }
    let mut recursive = true;
    let mut propagation = "rprivate".to_owned();
    let mut extra = Vec::new();
    for o in &m.options {
        match o.as_str() {
            o if o == parse::OPT_CREATE_SOURCE => {}
            "bind" => recursive = false,
            "rbind" | "ro" | "rw" => {}
            "shared" | "rshared" | "slave" | "rslave" | "private" | "rprivate" => {
                propagation = o.to_owned()
            }
            // Docker's volume/SELinux/consistency knobs have no meaning for a bind here.
            "nocopy" | "z" | "Z" | "consistent" | "cached" | "delegated" => {}
            other => extra.push(other.to_owned()),
        }
    }
    let mut opts = vec![
        if recursive { "rbind" } else { "bind" }.to_owned(),
        propagation,
    ];
    opts.push(if m.read_only { "ro" } else { "rw" }.to_owned());
    opts.extend(extra);
    Ok(owned_mount(&m.target, "bind", source, opts))
}

fn tmpfs(m: &berth_api::v1::Mount) -> Mount {
    let mut opts: Vec<String> = Vec::new();
    let given = |flag: &str| m.options.iter().any(|o| o == flag);
    for (default, opposite) in [("nosuid", "suid"), ("nodev", "dev"), ("noexec", "exec")] {
        if !given(opposite) && !given(default) {
            opts.push(default.to_owned());
        }
    }
    opts.extend(
        m.options
            .iter()
            .filter(|o| *o != "ro" && *o != "rw")
            .cloned(),
    );
    if m.read_only || given("ro") {
        opts.push("ro".into());
    }
    owned_mount(&m.target, "tmpfs", Path::new("tmpfs"), opts)
}

/// Normalised destination for comparisons ("/a/b/" == "/a//b").
pub(crate) fn norm(p: &Path) -> PathBuf {
    let mut out = PathBuf::from("/");
    for c in p.components() {
        match c {
            Component::Normal(n) => out.push(n),
            Component::ParentDir => {
                out.pop();
            }
            _ => {}
        }
    }
    out
}

/// Depth of a destination, to mount parents before children.
pub(crate) fn depth(p: &Path) -> usize {
    norm(p).components().count()
}
