//! Build the OCI runtime spec (`config.json`) of a container with Docker's defaults.
//!
//! Pure library, used by the engine (and, for [`parse`], by the CLI): [`build`] turns what the
//! user asked for ([`berth_api::v1::ContainerConfig`]) and the image's configuration into an
//! [`oci_spec::runtime::Spec`]; [`write_etc_files`] writes the managed `/etc/hostname`,
//! `/etc/hosts` and `/etc/resolv.conf` that the spec binds in.
//!
//! Side effects of [`build`] (everything else is computed): it reads the rootfs's
//! `/etc/passwd` and `/etc/group` (never following symlinks out of the rootfs), creates a
//! missing working directory inside the rootfs (as Docker does), creates a missing host
//! directory for `-v` bind sources (marked with [`parse::OPT_CREATE_SOURCE`]), reads
//! `seccomp=PATH` profiles, and lists the host's `/dev` for `--privileged`.
//!
//! Additions to the contract's API: [`container_hostname`], [`resolve_user`], [`seccomp_for`],
//! [`Error::for_flag`], [`parse::security_opt_kind`], [`parse::memory_swap`],
//! [`parse::human_size`], [`parse::OPT_CREATE_SOURCE`]. Deviation: [`parse::bytes`] takes the
//! flag to name in its error (`bytes("--memory", "512m")`), since several flags take sizes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{
    LinuxBuilder, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDevice, LinuxDeviceCgroup,
    LinuxDeviceType, LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccomp, PosixRlimit, PosixRlimitBuilder, ProcessBuilder,
    RootBuilder, Spec, SpecBuilder, UserBuilder,
};

mod caps;
mod error;
mod etc;
mod mounts;
pub mod parse;
mod seccomp;
mod user;

pub use error::Error;
pub use user::ResolvedUser;

/// Resolve a `-u` value (`name`, `uid`, `name:group`, `uid:gid`; empty = root) against the
/// rootfs's /etc/passwd and /etc/group (read without following symlinks out of `rootfs`), as
/// [`build`] does; for `exec -u`. Unknown names fail with
/// "unable to find user X: no matching entries in passwd file".
pub fn resolve_user(rootfs: &Path, user: &str) -> Result<ResolvedUser, Error> {
    user::resolve(rootfs, user)
}

/// Everything [`build`] needs.
pub struct Input<'a> {
    /// The container's id (64 hex chars); the default hostname is its first 12.
    pub id: &'a str,
    /// What the user asked for.
    pub config: &'a berth_api::v1::ContainerConfig,
    /// The image's configuration (Entrypoint, Cmd, Env, WorkingDir, User, StopSignal).
    pub image: &'a oci_spec::image::ImageConfiguration,
    /// Host path of the mounted rootfs (its /etc/passwd and /etc/group are read, never
    /// following symlinks out of it). Also `root.path` of the spec.
    pub rootfs: &'a Path,
    /// Host paths of hostname/hosts/resolv.conf to bind into the container.
    pub etc: &'a EtcFiles,
    /// Host path of berth-shim, bound at /sbin/berth-init for `--init`.
    pub init_binary: Option<&'a Path>,
    /// `linux.cgroupsPath`, e.g. `/berth/<ns>/<id>`.
    pub cgroups_path: String,
}

/// The result of [`build`].
#[derive(Debug, Clone)]
pub struct Built {
    /// The OCI runtime spec (config.json).
    pub spec: Spec,
    /// The signal `stop` sends first: `--stop-signal`, else the image's StopSignal, else SIGTERM.
    pub stop_signal: i32,
    /// Things to show the user that do not stop the container.
    pub warnings: Vec<String>,
}

/// Host paths of the container's managed `/etc` files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcFiles {
    /// Bound at /etc/hostname.
    pub hostname: PathBuf,
    /// Bound at /etc/hosts.
    pub hosts: PathBuf,
    /// Bound at /etc/resolv.conf.
    pub resolv_conf: PathBuf,
}

/// Docker's default `PATH`.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Paths Docker hides from containers (bind of /dev/null, or an empty read-only tmpfs).
pub const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

/// Paths Docker makes read-only in containers.
pub const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Docker's 14 default capabilities (`CAP_CHOWN`, ...).
pub fn default_capabilities() -> Vec<String> {
    caps::DEFAULT.iter().map(|c| (*c).to_owned()).collect()
}

/// The default seccomp profile (an equivalent of moby's) for a container with the default
/// capabilities on this host's architecture.
pub fn default_seccomp() -> LinuxSeccomp {
    seccomp_for(&default_capabilities())
}

/// The default seccomp profile for a container with `caps` (`CAP_` names): the syscall groups
/// governed by a capability (e.g. `mount` by `CAP_SYS_ADMIN`) are allowed when it has it.
pub fn seccomp_for(caps: &[String]) -> LinuxSeccomp {
    seccomp::default_for(caps)
}

/// The container's hostname: `--hostname`, else the host's with `--network host`, else the
/// first 12 characters of the id. The engine passes this to [`write_etc_files`].
pub fn container_hostname(id: &str, config: &berth_api::v1::ContainerConfig) -> String {
    if !config.hostname.is_empty() {
        return config.hostname.clone();
    }
    if config.network_mode == "host" {
        return rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .into_owned();
    }
    id.chars().take(12).collect()
}

/// Write `hostname`, `hosts` and `resolv.conf` into `dir` (created if missing).
///
/// * hosts: with `--network host` the host's /etc/hosts; otherwise localhost and Docker's
///   IPv6 lines plus `127.0.1.1 <hostname>`; then every `--add-host` (`name:ip`) entry.
/// * resolv.conf: the host's, with `--dns` servers replacing its nameservers; except with
///   `--network host`, loopback nameservers are dropped (systemd-resolved's upstream list is
///   used when the host only names its stub) and Docker's fallback (8.8.8.8, 8.8.4.4) is
///   used when none is left.
///
/// Bad `--dns`/`--add-host` values fail before any file is written.
pub fn write_etc_files(
    dir: &Path,
    hostname: &str,
    network_mode: &str,
    dns: &[String],
    extra_hosts: &[String],
) -> Result<EtcFiles, Error> {
    etc::write_all(&etc::HOST, dir, hostname, network_mode, dns, extra_hosts)
}

fn oci<T>(what: &str, r: Result<T, oci_spec::OciSpecError>) -> Result<T, Error> {
    r.map_err(|e| Error::Config(format!("building the spec's {what}: {e}")))
}

/// Docker's `ReplaceOrAppendEnvValues`: `K=V` replaces `K`'s entry or appends; a bare `K`
/// removes it.
fn merge_env(env: &mut Vec<String>, overrides: &[String]) {
    for o in overrides {
        let key = o.split_once('=').map_or(o.as_str(), |(k, _)| k);
        let pos = env
            .iter()
            .position(|e| e.split_once('=').map_or(e.as_str(), |(k, _)| k) == key);
        match (pos, o.contains('=')) {
            (Some(i), true) => env[i].clone_from(o),
            (Some(i), false) => {
                env.remove(i);
            }
            (None, true) => env.push(o.clone()),
            (None, false) => {}
        }
    }
}

fn env_has(env: &[String], key: &str) -> bool {
    env.iter()
        .any(|e| e.split_once('=').is_some_and(|(k, _)| k == key))
}

/// The process's argv from Docker's entrypoint/cmd rules.
fn args(
    config: &berth_api::v1::ContainerConfig,
    image: Option<&oci_spec::image::Config>,
) -> Result<Vec<String>, Error> {
    let user_entrypoint = config.entrypoint_set || !config.entrypoint.is_empty();
    let entrypoint: Vec<String> = if user_entrypoint {
        config.entrypoint.clone()
    } else {
        image
            .and_then(|c| c.entrypoint().clone())
            .unwrap_or_default()
    };
    let cmd: Vec<String> = if !config.cmd.is_empty() {
        config.cmd.clone()
    } else if user_entrypoint {
        Vec::new()
    } else {
        image.and_then(|c| c.cmd().clone()).unwrap_or_default()
    };
    let mut args = entrypoint;
    args.extend(cmd);
    if args.is_empty() || args[0].is_empty() {
        return Err(Error::Config(
            "no command specified: the image has no Entrypoint or Cmd; give a command after the image name"
                .into(),
        ));
    }
    Ok(args)
}

/// Create `dir` (absolute, in the container) inside the rootfs if missing, owned by uid:gid,
/// as Docker does. Symlinks are followed as the container would see them: every component
/// is opened with `O_NOFOLLOW` relative to its parent's fd, a symlink's target is spliced in
/// (absolute targets restart at the rootfs, `..` never climbs above it), so nothing outside
/// the rootfs is ever touched.
fn ensure_workdir(rootfs: &Path, dir: &str, uid: u32, gid: u32) -> Result<(), Error> {
    use std::collections::VecDeque;
    use std::os::fd::OwnedFd;

    use rustix::fs::{FileType, Mode, OFlags};
    use rustix::io::Errno;

    let fail = |what: String, e: Errno| Error::io(what, std::io::Error::from(e));
    let root = rustix::fs::open(
        rootfs,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| fail(format!("open the rootfs {}", rootfs.display()), e))?;
    let mut stack: Vec<(String, OwnedFd)> = Vec::new();
    let mut pending: VecDeque<String> = dir.split('/').map(str::to_owned).collect();
    let mut links = 0;
    let shown = |stack: &[(String, OwnedFd)], c: &str| {
        let mut p: String = stack.iter().map(|(n, _)| format!("/{n}")).collect();
        p.push('/');
        p.push_str(c);
        p
    };
    while let Some(c) = pending.pop_front() {
        if c.is_empty() || c == "." {
            continue;
        }
        if c == ".." {
            stack.pop();
            continue;
        }
        let parent = stack.last().map_or(&root, |(_, fd)| fd);
        match rustix::fs::openat(
            parent,
            c.as_str(),
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                let st = rustix::fs::fstat(&fd)
                    .map_err(|e| fail(format!("stat {} in the rootfs", shown(&stack, &c)), e))?;
                match FileType::from_raw_mode(st.st_mode) {
                    FileType::Directory => stack.push((c, fd)),
                    FileType::Symlink => {
                        links += 1;
                        if links > 40 {
                            return Err(fail(
                                format!("resolve the working directory {dir} in the rootfs"),
                                Errno::LOOP,
                            ));
                        }
                        let target = rustix::fs::readlinkat(parent, c.as_str(), Vec::new())
                            .map_err(|e| {
                                fail(
                                    format!("read the symlink {} in the rootfs", shown(&stack, &c)),
                                    e,
                                )
                            })?;
                        let target = target.to_string_lossy().into_owned();
                        if target.starts_with('/') {
                            stack.clear();
                        }
                        for part in target.split('/').rev() {
                            pending.push_front(part.to_owned());
                        }
                    }
                    _ => {
                        return Err(Error::Config(format!(
                            "the working directory {dir} cannot be created: {} is not a directory in the image",
                            shown(&stack, &c)
                        )));
                    }
                }
            }
            Err(Errno::NOENT) => {
                let path = shown(&stack, &c);
                match rustix::fs::mkdirat(parent, c.as_str(), Mode::from_raw_mode(0o755)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => {
                        return Err(fail(
                            format!("create the working directory {path} in the rootfs"),
                            e,
                        ));
                    }
                }
                let fd = rustix::fs::openat(
                    parent,
                    c.as_str(),
                    OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
                    Mode::empty(),
                )
                .map_err(|e| {
                    fail(
                        format!("open the new working directory {path} in the rootfs"),
                        e,
                    )
                })?;
                rustix::fs::fchown(
                    &fd,
                    Some(rustix::fs::Uid::from_raw(uid)),
                    Some(rustix::fs::Gid::from_raw(gid)),
                )
                .map_err(|e| {
                    fail(
                        format!("chown the new working directory {path} to {uid}:{gid}"),
                        e,
                    )
                })?;
                stack.push((c, fd));
            }
            Err(e) => return Err(fail(format!("open {} in the rootfs", shown(&stack, &c)), e)),
        }
    }
    Ok(())
}

/// Every character and block device under the host's /dev (for `--privileged`), as Docker
/// lists them: symlinks and the pts/shm/mqueue/fd trees are skipped.
fn host_devices(dir: &Path, out: &mut Vec<LinuxDevice>) {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(md) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let ft = md.file_type();
        if ft.is_dir() {
            let name = e.file_name();
            if !matches!(
                name.to_str(),
                Some("pts" | "shm" | "fd" | "mqueue" | ".lxc" | ".lxd-mounts" | ".udev")
            ) {
                host_devices(&path, out);
            }
            continue;
        }
        let typ = if ft.is_char_device() {
            LinuxDeviceType::C
        } else if ft.is_block_device() {
            LinuxDeviceType::B
        } else {
            continue;
        };
        if path == Path::new("/dev/console") {
            continue;
        }
        let rdev = md.rdev();
        let mut d = LinuxDevice::default();
        d.set_path(path);
        d.set_typ(typ);
        d.set_major(i64::from(rustix::fs::major(rdev)));
        d.set_minor(i64::from(rustix::fs::minor(rdev)));
        d.set_file_mode(Some(md.mode() & 0o7777));
        d.set_uid(Some(md.uid()));
        d.set_gid(Some(md.gid()));
        out.push(d);
    }
}

fn device_rule(allow: bool) -> LinuxDeviceCgroup {
    let mut r = LinuxDeviceCgroup::default();
    r.set_allow(allow);
    r.set_typ(Some(LinuxDeviceType::A));
    r.set_access(Some("rwm".into()));
    r
}

fn online_cpus() -> usize {
    rustix::thread::sched_getaffinity(None)
        .map(|s| s.count() as usize)
        .unwrap_or(1)
        .max(1)
}

/// Build the OCI spec for a container with Docker's defaults.
pub fn build(input: &Input) -> Result<Built, Error> {
    let config = input.config;
    let image = input.image.config().as_ref();
    let mut warnings = Vec::new();

    // Security options.
    let mut no_new_privileges = false;
    let mut seccomp_profile: Option<PathBuf> = None;
    let mut seccomp_unconfined = false;
    for o in &config.security_opt {
        match parse::security_opt_kind(o)? {
            parse::SecurityOpt::NoNewPrivileges(v) => no_new_privileges = v,
            parse::SecurityOpt::SeccompUnconfined => seccomp_unconfined = true,
            parse::SecurityOpt::SeccompProfile(p) => seccomp_profile = Some(p),
            parse::SecurityOpt::Ignored(s) => {
                warnings.push(format!(
                    "--security-opt {s} is ignored: Berth has no AppArmor or SELinux support"
                ));
            }
        }
    }

    // Capabilities.
    let cap_names = caps::resolve(
        &config.cap_add,
        &config.cap_drop,
        config.privileged,
        caps::host_bounding_set(),
    )?;
    let cap_set = caps::to_oci(&cap_names)?;
    let capabilities = oci(
        "capabilities",
        LinuxCapabilitiesBuilder::default()
            .bounding(cap_set.clone())
            .effective(cap_set.clone())
            .permitted(cap_set)
            .inheritable(oci_spec::runtime::Capabilities::new())
            .ambient(oci_spec::runtime::Capabilities::new())
            .build(),
    )?;

    // User.
    let user_spec = if config.user.is_empty() {
        image.and_then(|c| c.user().clone()).unwrap_or_default()
    } else {
        config.user.clone()
    };
    let exec_user = user::resolve(input.rootfs, &user_spec)?;
    let mut user_b = UserBuilder::default().uid(exec_user.uid).gid(exec_user.gid);
    if !exec_user.additional_gids.is_empty() {
        user_b = user_b.additional_gids(exec_user.additional_gids.clone());
    }
    let user = oci("user", user_b.build())?;

    // Hostname and environment.
    let hostname = container_hostname(input.id, config);
    let mut env = vec![
        format!("PATH={DEFAULT_PATH}"),
        format!("HOSTNAME={hostname}"),
    ];
    if config.tty {
        env.push("TERM=xterm".into());
    }
    merge_env(
        &mut env,
        image.and_then(|c| c.env().as_deref()).unwrap_or_default(),
    );
    merge_env(&mut env, &config.env);
    if !env_has(&env, "HOME") {
        env.push(format!("HOME={}", exec_user.home));
    }

    // Command and working directory.
    let mut args = args(config, image)?;
    let cwd = if !config.working_dir.is_empty() {
        config.working_dir.clone()
    } else {
        image
            .and_then(|c| c.working_dir().clone())
            .filter(|w| !w.is_empty())
            .unwrap_or_else(|| "/".into())
    };
    if !cwd.starts_with('/') {
        return Err(Error::invalid(
            "--workdir",
            &cwd,
            format!("the working directory '{cwd}' is invalid, it needs to be an absolute path"),
        ));
    }
    ensure_workdir(input.rootfs, &cwd, exec_user.uid, exec_user.gid)?;

    // Stop signal.
    let stop_signal = if !config.stop_signal.is_empty() {
        parse::signal(&config.stop_signal).map_err(|e| e.for_flag("--stop-signal"))?
    } else if let Some(s) = image
        .and_then(|c| c.stop_signal().clone())
        .filter(|s| !s.is_empty())
    {
        parse::signal(&s)
            .map_err(|_| Error::Config(format!("the image's StopSignal {s:?} is not a signal")))?
    } else {
        libc::SIGTERM
    };

    // rlimits.
    let mut rlimits = Vec::new();
    for u in &config.ulimits {
        let typ = parse::ULIMITS
            .iter()
            .find(|(n, _)| *n == u.name)
            .map(|(_, t)| *t)
            .ok_or_else(|| {
                Error::invalid(
                    "--ulimit",
                    &u.name,
                    format!("invalid ulimit type: {}", u.name),
                )
            })?;
        let v = |x: i64| if x < 0 { u64::MAX } else { x.unsigned_abs() };
        let r = oci(
            "rlimits",
            PosixRlimitBuilder::default()
                .typ(typ)
                .soft(v(u.soft))
                .hard(v(u.hard))
                .build(),
        )?;
        if let Some(existing) = rlimits
            .iter_mut()
            .find(|x: &&mut PosixRlimit| x.typ() == typ)
        {
            *existing = r;
        } else {
            rlimits.push(r);
        }
    }

    // --init.
    let mut extra_mounts = Vec::new();
    if config.init {
        let bin = input.init_binary.ok_or_else(|| {
            Error::Config("--init needs the berth-shim binary (the init process), which was not found next to berthd".into())
        })?;
        extra_mounts.push(mounts::init(bin));
        let mut a = vec![
            mounts::INIT_PATH.to_owned(),
            "init".to_owned(),
            "--".to_owned(),
        ];
        a.append(&mut args);
        args = a;
    }

    let process = oci(
        "process",
        ProcessBuilder::default()
            .terminal(config.tty)
            .user(user)
            .args(args)
            .env(env)
            .cwd(PathBuf::from(&cwd))
            .capabilities(capabilities)
            .rlimits(rlimits)
            .no_new_privileges(no_new_privileges)
            .build(),
    )?;

    // Mounts: defaults, managed /etc files, then the user's (parents first). A user mount on
    // the destination of a default replaces it.
    let mut user_mounts = Vec::new();
    for m in &config.mounts {
        user_mounts.push(mounts::user(m)?);
    }
    for t in &config.tmpfs {
        user_mounts.push(mounts::user(&parse::tmpfs(t)?)?);
    }
    user_mounts.extend(extra_mounts);
    let mut seen = std::collections::HashSet::new();
    for m in &user_mounts {
        if !seen.insert(mounts::norm(m.destination())) {
            return Err(Error::Config(format!(
                "Duplicate mount point: {}",
                m.destination().display()
            )));
        }
    }
    user_mounts.sort_by_key(|m| mounts::depth(m.destination()));
    let mut all_mounts: Vec<_> = mounts::defaults(config.privileged);
    all_mounts.retain(|d| !seen.contains(&mounts::norm(d.destination())));
    all_mounts.extend(user_mounts);
    // The managed /etc files after the user's mounts, as Docker orders them: a volume or bind
    // on /etc must not hide them.
    let mut etc_mounts = mounts::etc(input.etc, config.read_only);
    etc_mounts.retain(|d| !seen.contains(&mounts::norm(d.destination())));
    all_mounts.extend(etc_mounts);

    // Namespaces.
    let mut namespaces = Vec::new();
    let mut ns_types = vec![
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Mount,
    ];
    // Every mode but `host` has a network namespace of its own; the engine names its path
    // (created and configured with CNI at start, or another container's with `container:`).
    if config.network_mode != "host" {
        ns_types.push(LinuxNamespaceType::Network);
    }
    ns_types.push(LinuxNamespaceType::Cgroup);
    for t in ns_types {
        let mut ns = LinuxNamespace::default();
        ns.set_typ(t);
        namespaces.push(ns);
    }

    // Resources.
    let mut resources = LinuxResourcesBuilder::default();
    if config.memory < 0 {
        return Err(Error::invalid(
            "--memory",
            &config.memory.to_string(),
            "memory must not be negative",
        ));
    }
    if config.memory > 0 || config.memory_swap != 0 {
        if config.memory > 0 && config.memory < 6 * 1024 * 1024 {
            return Err(Error::invalid(
                "--memory",
                &config.memory.to_string(),
                "Minimum memory limit allowed is 6MB",
            ));
        }
        if config.memory == 0 {
            return Err(Error::Config(
                "You should always set the Memory limit when using Memoryswap limit, see usage"
                    .into(),
            ));
        }
        let swap = match config.memory_swap {
            0 => config.memory.saturating_mul(2),
            -1 => -1,
            s if s < config.memory => {
                return Err(Error::Config(
                    "Minimum memoryswap limit should be larger than memory limit, see usage".into(),
                ));
            }
            s => s,
        };
        resources = resources.memory(oci(
            "memory",
            LinuxMemoryBuilder::default()
                .limit(config.memory)
                .swap(swap)
                .build(),
        )?);
    }
    if config.nano_cpus != 0 {
        let ncpu = online_cpus();
        let max = i64::try_from(ncpu)
            .unwrap_or(i64::MAX)
            .saturating_mul(1_000_000_000);
        if config.nano_cpus < 10_000_000 || config.nano_cpus > max {
            return Err(Error::invalid(
                "--cpus",
                &format!("{}", config.nano_cpus as f64 / 1e9),
                format!(
                    "Range of CPUs is from 0.01 to {ncpu}.00, as there are only {ncpu} CPUs available"
                ),
            ));
        }
        let period: u64 = 100_000;
        let quota = config.nano_cpus * 100_000 / 1_000_000_000;
        resources = resources.cpu(oci(
            "cpu",
            LinuxCpuBuilder::default()
                .quota(quota)
                .period(period)
                .build(),
        )?);
    }
    if config.pids_limit != 0 {
        let limit = if config.pids_limit < 0 {
            -1
        } else {
            config.pids_limit
        };
        resources = resources.pids(oci(
            "pids",
            LinuxPidsBuilder::default().limit(limit).build(),
        )?);
    }
    resources = resources.devices(vec![device_rule(config.privileged)]);
    let resources = oci("resources", resources.build())?;

    // Seccomp.
    let seccomp = if seccomp_unconfined || config.privileged {
        None
    } else if let Some(path) = &seccomp_profile {
        let profile = seccomp::Profile::load(path)?;
        Some(
            profile
                .resolve(&cap_names, &seccomp::Host::current())
                .map_err(|reason| Error::SeccompProfile {
                    path: path.clone(),
                    reason,
                })?,
        )
    } else {
        Some(seccomp::default_for(&cap_names))
    };

    let mut linux = LinuxBuilder::default()
        .namespaces(namespaces)
        .resources(resources)
        .cgroups_path(PathBuf::from(&input.cgroups_path));
    if config.privileged {
        let mut devices = Vec::new();
        host_devices(Path::new("/dev"), &mut devices);
        devices.sort_by(|a, b| a.path().cmp(b.path()));
        linux = linux
            .devices(devices)
            .masked_paths(Vec::<String>::new())
            .readonly_paths(Vec::<String>::new());
    } else {
        linux = linux
            .masked_paths(
                MASKED_PATHS
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect::<Vec<_>>(),
            )
            .readonly_paths(
                READONLY_PATHS
                    .iter()
                    .map(|p| (*p).to_owned())
                    .collect::<Vec<_>>(),
            );
    }
    if let Some(s) = seccomp {
        linux = linux.seccomp(s);
    }
    let linux = oci("linux", linux.build())?;

    let root = oci(
        "root",
        RootBuilder::default()
            .path(input.rootfs.to_path_buf())
            .readonly(config.read_only)
            .build(),
    )?;
    let mut annotations = HashMap::new();
    annotations.insert("org.berth.container.id".to_owned(), input.id.to_owned());
    let spec = oci(
        "spec",
        SpecBuilder::default()
            .version("1.2.0")
            .root(root)
            .hostname(hostname)
            .process(process)
            .mounts(all_mounts)
            .linux(linux)
            .annotations(annotations)
            .build(),
    )?;
    Ok(Built {
        spec,
        stop_signal,
        warnings,
    })
}

#[cfg(test)]
mod tests;
