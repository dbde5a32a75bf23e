//! Docker's CLI flag value syntaxes, shared by the CLI and a later Docker REST API.
//!
//! Every error is [`Error::InvalidArgument`] naming the flag and the value, e.g.
//! `invalid argument "12x" for "--memory": invalid size: '12x'`. [`bytes`] takes the flag to
//! name; [`signal`] and [`human_size`] name their most common one (`--signal`, `--log-opt`) and
//! callers name another with [`Error::for_flag`].

use std::path::{Path, PathBuf};

use berth_api::v1::{Mount, RestartPolicy, Ulimit};

use crate::Error;

/// Mount option put on `-v` bind mounts (never on `--mount type=bind`): [`crate::build`]
/// creates a missing host directory for them, as Docker does, and strips the option.
pub const OPT_CREATE_SOURCE: &str = "x-berth.create-source";

/// A parsed `--security-opt` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecurityOpt {
    /// `no-new-privileges`, `no-new-privileges:true|false`, `no-new-privileges=true|false`.
    NoNewPrivileges(bool),
    /// `seccomp=unconfined` (also `seccomp:unconfined`).
    SeccompUnconfined,
    /// `seccomp=PATH`: a JSON profile (OCI `LinuxSeccomp` or Docker's format).
    SeccompProfile(PathBuf),
    /// `apparmor=...`, `label=...`: accepted for compatibility; Berth has no LSM support, so
    /// [`crate::build`] ignores them with a warning.
    Ignored(String),
}

/// The ulimit names Docker accepts, with their `RLIMIT_*` resource.
pub(crate) const ULIMITS: &[(&str, oci_spec::runtime::PosixRlimitType)] = {
    use oci_spec::runtime::PosixRlimitType as T;
    &[
        ("as", T::RlimitAs),
        ("core", T::RlimitCore),
        ("cpu", T::RlimitCpu),
        ("data", T::RlimitData),
        ("fsize", T::RlimitFsize),
        ("locks", T::RlimitLocks),
        ("memlock", T::RlimitMemlock),
        ("msgqueue", T::RlimitMsgqueue),
        ("nice", T::RlimitNice),
        ("nofile", T::RlimitNofile),
        ("nproc", T::RlimitNproc),
        ("rss", T::RlimitRss),
        ("rtprio", T::RlimitRtprio),
        ("rttime", T::RlimitRttime),
        ("sigpending", T::RlimitSigpending),
        ("stack", T::RlimitStack),
    ]
};

/// Split "12.5 MiB" into (number, unit letter) following Docker's size syntax:
/// `^(\d+(\.\d+)*) ?([kKmMgGtTpP])?[iI]?[bB]?$`.
fn size_parts(s: &str) -> Option<(f64, Option<char>)> {
    let num_end = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, mut rest) = s.split_at(num_end);
    if num.is_empty()
        || !num.starts_with(|c: char| c.is_ascii_digit())
        || num.ends_with('.')
        || num.contains("..")
    {
        return None;
    }
    // "1.2.3" is accepted by Docker's regex but not by its float parser: reject.
    let value: f64 = num.parse().ok()?;
    rest = rest.strip_prefix(' ').unwrap_or(rest);
    let mut chars = rest.chars().peekable();
    let unit = match chars.peek() {
        Some(c) if "kKmMgGtTpP".contains(*c) => {
            let u = c.to_ascii_lowercase();
            chars.next();
            Some(u)
        }
        _ => None,
    };
    if matches!(chars.peek(), Some('i' | 'I')) {
        chars.next();
    }
    if matches!(chars.peek(), Some('b' | 'B')) {
        chars.next();
    }
    if chars.next().is_some() {
        return None;
    }
    Some((value, unit))
}

fn scaled(s: &str, base: f64) -> Option<i64> {
    let (value, unit) = size_parts(s)?;
    let power = match unit {
        None => 0,
        Some('k') => 1,
        Some('m') => 2,
        Some('g') => 3,
        Some('t') => 4,
        Some('p') => 5,
        Some(_) => return None,
    };
    let bytes = value * base.powi(power);
    if !bytes.is_finite() || bytes >= i64::MAX as f64 {
        return None;
    }
    #[allow(clippy::cast_possible_truncation)]
    Some(bytes as i64)
}

/// A size flag (`--memory`, `--shm-size`, tmpfs `size=`, ...): "512m", "1.5g", "1024",
/// "10 MB", "1GiB" -> bytes. Units are binary (k = 1024), as Docker's `RAMInBytes`. `flag`
/// names the flag in the error.
pub fn bytes(flag: &str, s: &str) -> Result<i64, Error> {
    scaled(s, 1024.0).ok_or_else(|| Error::invalid(flag, s, format!("invalid size: '{s}'")))
}

/// `--memory-swap`: like [`bytes`], plus "-1" for unlimited swap.
pub fn memory_swap(s: &str) -> Result<i64, Error> {
    if s == "-1" {
        return Ok(-1);
    }
    bytes("--memory-swap", s)
}

/// A decimal human size ("10m" = 10_000_000, "1k" = 1000), as Docker's json-file `max-size`
/// log option uses (`FromHumanSize`).
pub fn human_size(s: &str) -> Result<i64, Error> {
    scaled(s, 1000.0).ok_or_else(|| Error::invalid("--log-opt", s, format!("invalid size: '{s}'")))
}

/// `--cpus 1.5` -> nano CPUs (1.5e9). At most 9 decimals ("value is too precise").
pub fn cpus(s: &str) -> Result<i64, Error> {
    let bad = |reason: String| Error::invalid("--cpus", s, reason);
    let not_a_number = || bad(format!("failed to parse {s} as a rational number"));
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if (int.is_empty() && frac.is_empty())
        || !int.bytes().all(|b| b.is_ascii_digit())
        || !frac.bytes().all(|b| b.is_ascii_digit())
    {
        if s.starts_with('-') && s[1..].parse::<f64>().is_ok() {
            return Err(bad("cpus must not be negative".into()));
        }
        return Err(not_a_number());
    }
    let frac_trimmed = frac.trim_end_matches('0');
    if frac_trimmed.len() > 9 {
        return Err(bad("value is too precise".into()));
    }
    let whole: i64 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| not_a_number())?
    };
    let mut nanos_str = frac_trimmed.to_owned();
    while nanos_str.len() < 9 {
        nanos_str.push('0');
    }
    let nanos: i64 = nanos_str.parse().map_err(|_| not_a_number())?;
    whole
        .checked_mul(1_000_000_000)
        .and_then(|w| w.checked_add(nanos))
        .ok_or_else(|| bad("value is too large".into()))
}

fn ulimit_value(flag_value: &str, v: &str) -> Result<i64, Error> {
    v.parse::<i64>().map_err(|_| {
        Error::invalid(
            "--ulimit",
            flag_value,
            format!("invalid ulimit value {v:?}: not an integer"),
        )
    })
}

/// `--ulimit nofile=1024:2048` (`name=soft[:hard]`; hard defaults to soft; -1 is unlimited).
pub fn ulimit(s: &str) -> Result<Ulimit, Error> {
    let bad = |reason: String| Error::invalid("--ulimit", s, reason);
    let (name, limits) = s
        .split_once('=')
        .ok_or_else(|| bad(format!("invalid ulimit argument: {s}")))?;
    if !ULIMITS.iter().any(|(n, _)| *n == name) {
        return Err(bad(format!("invalid ulimit type: {name}")));
    }
    let parts: Vec<&str> = limits.split(':').collect();
    let (soft, hard) = match parts.as_slice() {
        [soft] => {
            let v = ulimit_value(s, soft)?;
            (v, v)
        }
        [soft, hard] => (ulimit_value(s, soft)?, ulimit_value(s, hard)?),
        _ => {
            return Err(bad(format!(
                "too many limit value arguments - {limits}, can only have up to two, `soft:hard`"
            )));
        }
    };
    for v in [soft, hard] {
        if v < -1 {
            return Err(bad(format!(
                "invalid ulimit value {v}: must be -1 (unlimited) or >= 0"
            )));
        }
    }
    let as_u = |v: i64| if v == -1 { u64::MAX } else { v.unsigned_abs() };
    if as_u(soft) > as_u(hard) {
        return Err(bad(format!(
            "ulimit soft limit must be less than or equal to hard limit: {soft} > {hard}"
        )));
    }
    Ok(Ulimit {
        name: name.to_owned(),
        soft,
        hard,
    })
}

/// `--restart no|always|unless-stopped|on-failure[:N]`.
pub fn restart(s: &str) -> Result<RestartPolicy, Error> {
    let bad = |reason: String| Error::invalid("--restart", s, reason);
    let (name, count) = match s.split_once(':') {
        Some((n, c)) => (n, Some(c)),
        None => (s, None),
    };
    let count = match count {
        None => None,
        Some(c) => {
            let n: i64 = c.parse().map_err(|_| {
                bad("invalid restart policy format: maximum retry count must be an integer".into())
            })?;
            Some(n)
        }
    };
    match name {
        "" | "no" => {
            if count.is_some() {
                return Err(bad(format!(
                    "maximum retry count cannot be used with restart policy '{}'",
                    if name.is_empty() { "no" } else { name }
                )));
            }
            Ok(RestartPolicy {
                name: "no".into(),
                maximum_retry_count: 0,
            })
        }
        "always" | "unless-stopped" => {
            if count.is_some() {
                return Err(bad(format!(
                    "maximum retry count cannot be used with restart policy '{name}'"
                )));
            }
            Ok(RestartPolicy {
                name: name.into(),
                maximum_retry_count: 0,
            })
        }
        "on-failure" => {
            let n = count.unwrap_or(0);
            if n < 0 {
                return Err(bad("maximum retry count cannot be negative".into()));
            }
            let n = i32::try_from(n).map_err(|_| bad("maximum retry count is too large".into()))?;
            Ok(RestartPolicy {
                name: name.into(),
                maximum_retry_count: n,
            })
        }
        _ => Err(bad(format!(
            "invalid restart policy '{name}': use no, always, unless-stopped or on-failure[:max-retries]"
        ))),
    }
}

const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// A local volume name: `[a-zA-Z0-9][a-zA-Z0-9_.-]+` (Docker's rule).
pub fn valid_volume_name(s: &str) -> bool {
    let mut b = s.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_alphanumeric())
        && s.len() >= 2
        && b.all(|c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'))
}

fn check_target(flag: &str, value: &str, target: &str) -> Result<(), Error> {
    if !target.starts_with('/') {
        return Err(Error::invalid(
            flag,
            value,
            format!("invalid mount path: '{target}' mount path must be absolute"),
        ));
    }
    if Path::new(target)
        .components()
        .all(|c| c == std::path::Component::RootDir)
    {
        return Err(Error::invalid(
            flag,
            value,
            "invalid specification: destination can't be '/'",
        ));
    }
    Ok(())
}

/// `-v src:dst[:opts]`, `-v name:dst[:opts]`, `-v /dst`.
///
/// An absolute (or `.`-relative, made absolute against the current directory) source is a
/// bind mount (type "bind", options: the propagation if given, and [`OPT_CREATE_SOURCE`]); a
/// name is a named volume and a lone destination an anonymous volume (type "volume").
/// Options: `ro`, `rw`, `z`, `Z`, `nocopy`, a propagation (`rprivate`, ...) and the
/// ignored consistency modes (`consistent`, `cached`, `delegated`).
pub fn volume(s: &str) -> Result<Mount, Error> {
    let flag = "--volume";
    let invalid = || Error::invalid(flag, s, format!("invalid volume specification: '{s}'"));
    let parts: Vec<&str> = s.split(':').collect();
    let (source, target, mode) = match parts.as_slice() {
        [t] if !t.is_empty() => ("", *t, ""),
        [src, t] if !src.is_empty() && !t.is_empty() => {
            if valid_mode(t) && !t.starts_with('/') {
                return Err(invalid());
            }
            (*src, *t, "")
        }
        [src, t, m] if !src.is_empty() && !t.is_empty() => (*src, *t, *m),
        _ => return Err(invalid()),
    };
    check_target(flag, s, target)?;
    let mut read_only = false;
    let mut options = Vec::new();
    if !mode.is_empty() {
        let mut rw_seen = false;
        for m in mode.split(',') {
            match m {
                "ro" | "rw" => {
                    if rw_seen {
                        return Err(Error::invalid(flag, s, format!("invalid mode: {mode}")));
                    }
                    rw_seen = true;
                    read_only = m == "ro";
                }
                "consistent" | "cached" | "delegated" => {}
                // Kept so the engine can say that the relabel request is ignored.
                "z" | "Z" => options.push(m.to_owned()),
                "nocopy" => options.push("nocopy".to_owned()),
                p if PROPAGATIONS.contains(&p) => {
                    if options.iter().any(|o| PROPAGATIONS.contains(&o.as_str())) {
                        return Err(Error::invalid(flag, s, format!("invalid mode: {mode}")));
                    }
                    options.push(p.to_owned());
                }
                _ => return Err(Error::invalid(flag, s, format!("invalid mode: {mode}"))),
            }
        }
    }
    let (typ, source) = if source.is_empty() {
        ("volume", String::new())
    } else if source.starts_with('/') {
        ("bind", source.to_owned())
    } else if source.starts_with('.') {
        let cwd = std::env::current_dir().map_err(|e| {
            Error::io(
                "resolve the relative volume source against the current directory",
                e,
            )
        })?;
        ("bind", cwd.join(source).to_string_lossy().into_owned())
    } else if valid_volume_name(source) {
        ("volume", source.to_owned())
    } else {
        return Err(Error::invalid(
            flag,
            s,
            format!(
                "\"{source}\" includes invalid characters for a local volume name, only \"[a-zA-Z0-9][a-zA-Z0-9_.-]\" are allowed. If you intended to pass a host directory, use absolute path"
            ),
        ));
    };
    if typ == "bind" {
        if options.iter().any(|o| o == "nocopy") {
            return Err(Error::invalid(
                flag,
                s,
                "nocopy applies to volumes only, not to bind mounts",
            ));
        }
        options.push(OPT_CREATE_SOURCE.to_owned());
    } else if options.iter().any(|o| PROPAGATIONS.contains(&o.as_str())) {
        return Err(Error::invalid(
            flag,
            s,
            "propagation applies to bind mounts only, not to volumes",
        ));
    }
    Ok(Mount {
        r#type: typ.into(),
        source,
        target: target.to_owned(),
        read_only,
        options,
    })
}

fn valid_mode(m: &str) -> bool {
    m.split(',').all(|o| {
        matches!(
            o,
            "ro" | "rw" | "z" | "Z" | "nocopy" | "consistent" | "cached" | "delegated"
        ) || PROPAGATIONS.contains(&o)
    })
}

/// Split a `--mount` value on commas, honouring CSV double quotes (`"src=/a,b"`).
fn csv_fields(s: &str) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            ',' if !quoted => out.push(std::mem::take(&mut cur)),
            _ => cur.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    out.push(cur);
    Ok(out)
}

fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "t" => Some(true),
        "0" | "false" | "f" => Some(false),
        _ => None,
    }
}

/// `--mount type=bind,source=/a,target=/b,readonly` (also `src`, `dst`, `destination`, `ro`,
/// `bind-propagation`, `tmpfs-size`, `tmpfs-mode`, `volume-nocopy`, ...). The type defaults to
/// `volume`, as Docker's. A bind source is never created: [`crate::build`] fails when it is
/// missing.
pub fn mount(s: &str) -> Result<Mount, Error> {
    let flag = "--mount";
    let bad = |reason: String| Error::invalid(flag, s, reason);
    let fields = csv_fields(s).map_err(bad)?;
    let mut typ = "volume".to_owned();
    let mut source = String::new();
    let mut target = String::new();
    let mut read_only = false;
    let mut options: Vec<String> = Vec::new();
    let mut bind_only = Vec::new();
    let mut tmpfs_only = Vec::new();
    let mut volume_only = Vec::new();
    for field in fields {
        let (key, value) = match field.split_once('=') {
            Some((k, v)) => (k.trim().to_ascii_lowercase(), Some(v.to_owned())),
            None => (field.trim().to_ascii_lowercase(), None),
        };
        let need_value = || {
            value
                .clone()
                .ok_or_else(|| bad(format!("invalid field '{field}' must be a key=value pair")))
        };
        let bool_value = || match &value {
            None => Ok(true),
            Some(v) => parse_bool(v).ok_or_else(|| bad(format!("invalid value for {key}: {v}"))),
        };
        match key.as_str() {
            "type" => {
                let v = need_value()?;
                if !matches!(v.as_str(), "bind" | "volume" | "tmpfs") {
                    return Err(bad(format!(
                        "invalid mount type '{v}': use bind, volume or tmpfs"
                    )));
                }
                typ = v;
            }
            "source" | "src" => source = need_value()?,
            "target" | "dst" | "destination" => target = need_value()?,
            "readonly" | "ro" => read_only = bool_value()?,
            "consistency" => {
                need_value()?;
            }
            "bind-propagation" => {
                let v = need_value()?;
                if !PROPAGATIONS.contains(&v.as_str()) {
                    return Err(bad(format!("invalid value for {key}: {v}")));
                }
                bind_only.push(key.clone());
                options.push(v);
            }
            "bind-nonrecursive" => {
                bind_only.push(key.clone());
                if bool_value()? {
                    options.push("bind".into());
                }
            }
            "tmpfs-size" => {
                let v = need_value()?;
                let n =
                    bytes(flag, &v).map_err(|_| bad(format!("invalid value for {key}: {v}")))?;
                tmpfs_only.push(key.clone());
                options.push(format!("size={n}"));
            }
            "tmpfs-mode" => {
                let v = need_value()?;
                let m = u32::from_str_radix(v.trim_start_matches("0o"), 8)
                    .ok()
                    .filter(|m| *m <= 0o7777)
                    .ok_or_else(|| bad(format!("invalid value for {key}: {v}")))?;
                tmpfs_only.push(key.clone());
                options.push(format!("mode={m:o}"));
            }
            "volume-nocopy" => {
                volume_only.push(key.clone());
                if bool_value()? {
                    options.push("nocopy".into());
                }
            }
            "volume-driver" | "volume-label" | "volume-opt" | "volume-subpath" => {
                need_value()?;
                volume_only.push(key.clone());
            }
            _ => return Err(bad(format!("unexpected key '{key}' in '{field}'"))),
        }
    }
    if target.is_empty() {
        return Err(bad("target is required".into()));
    }
    check_target(flag, s, &target)?;
    let wrong = |keys: &[String], only: &str| -> Result<(), Error> {
        match keys.first() {
            Some(k) if typ != only => Err(bad(format!(
                "cannot mix '{k}' option with a mount of type '{typ}'"
            ))),
            _ => Ok(()),
        }
    };
    wrong(&bind_only, "bind")?;
    wrong(&tmpfs_only, "tmpfs")?;
    wrong(&volume_only, "volume")?;
    match typ.as_str() {
        "bind" => {
            if source.is_empty() {
                return Err(bad("source is required when specifying a bind mount".into()));
            }
            if !source.starts_with('/') {
                return Err(bad(format!(
                    "invalid mount source: '{source}' bind source must be an absolute path"
                )));
            }
        }
        "tmpfs" => {
            if !source.is_empty() {
                return Err(bad("source must not be specified for a tmpfs mount".into()));
            }
        }
        _ => {
            if !source.is_empty() && !valid_volume_name(&source) {
                return Err(bad(format!(
                    "\"{source}\" includes invalid characters for a local volume name"
                )));
            }
        }
    }
    Ok(Mount {
        r#type: typ,
        source,
        target,
        read_only,
        options,
    })
}

/// tmpfs options Docker accepts (`--tmpfs /run:OPTS`).
fn valid_tmpfs_option(o: &str) -> bool {
    const FLAGS: &[&str] = &[
        "ro",
        "rw",
        "exec",
        "noexec",
        "suid",
        "nosuid",
        "dev",
        "nodev",
        "sync",
        "async",
        "dirsync",
        "atime",
        "noatime",
        "diratime",
        "nodiratime",
        "relatime",
        "norelatime",
        "strictatime",
        "nostrictatime",
        "mand",
        "nomand",
        "remount",
        "bind",
        "rbind",
        "private",
        "rprivate",
        "shared",
        "rshared",
        "slave",
        "rslave",
        "unbindable",
        "runbindable",
    ];
    if FLAGS.contains(&o) {
        return true;
    }
    match o.split_once('=') {
        Some(("size", v)) => {
            v.ends_with('%') && v[..v.len() - 1].parse::<u32>().is_ok()
                || bytes("--tmpfs", v).is_ok()
        }
        Some(("mode", v)) => u32::from_str_radix(v, 8).is_ok_and(|m| m <= 0o7777),
        Some(("uid" | "gid" | "nr_inodes" | "nr_blocks", v)) => bytes("--tmpfs", v).is_ok(),
        Some(("mpol", _)) => true,
        _ => false,
    }
}

/// `--tmpfs /run[:opts]` -> a tmpfs [`Mount`] (options as given, sizes normalised to bytes).
pub fn tmpfs(s: &str) -> Result<Mount, Error> {
    let flag = "--tmpfs";
    let (target, opts) = s.split_once(':').unwrap_or((s, ""));
    if target.is_empty() {
        return Err(Error::invalid(flag, s, "a destination path is required"));
    }
    check_target(flag, s, target)?;
    let mut options = Vec::new();
    let mut read_only = false;
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        if !valid_tmpfs_option(o) {
            return Err(Error::invalid(
                flag,
                s,
                format!("invalid tmpfs option \"{o}\""),
            ));
        }
        match o {
            "ro" => read_only = true,
            "rw" => read_only = false,
            _ => match o.split_once('=') {
                Some(("size", v)) if !v.ends_with('%') => {
                    options.push(format!("size={}", bytes(flag, v).unwrap_or_default()));
                }
                _ => options.push(o.to_owned()),
            },
        }
    }
    Ok(Mount {
        r#type: "tmpfs".into(),
        source: String::new(),
        target: target.to_owned(),
        read_only,
        options,
    })
}

/// `--env-file FILE` -> `KEY=VALUE` lines. Blank lines and lines starting with `#` are
/// skipped; a bare `KEY` takes the value from this process's environment (and is dropped if
/// unset), as Docker's CLI does. Keys may not contain whitespace.
pub fn env_file(path: &Path) -> Result<Vec<String>, Error> {
    let flag = "--env-file";
    let shown = path.display().to_string();
    let data = std::fs::read(path)
        .map_err(|e| Error::invalid(flag, &shown, format!("cannot read the env file: {e}")))?;
    let text = String::from_utf8(data)
        .map_err(|_| Error::invalid(flag, &shown, "the env file is not valid UTF-8"))?;
    let mut out = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        let line = line.strip_prefix('\u{feff}').unwrap_or(line);
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, value) = match line.split_once('=') {
            Some((k, v)) => (k, Some(v)),
            None => (line.trim_end(), None),
        };
        if key.is_empty() {
            return Err(Error::invalid(
                flag,
                &shown,
                format!("line {}: no variable name in {raw:?}", n + 1),
            ));
        }
        if key.contains(char::is_whitespace) {
            return Err(Error::invalid(
                flag,
                &shown,
                format!("line {}: variable '{key}' contains whitespaces", n + 1),
            ));
        }
        match value {
            Some(v) => out.push(format!("{key}={v}")),
            None => {
                if let Some(v) = std::env::var_os(key) {
                    out.push(format!("{key}={}", v.to_string_lossy()));
                }
            }
        }
    }
    Ok(out)
}

/// Linux signal names (without `SIG`) and numbers.
const SIGNALS: &[(&str, i32)] = &[
    ("HUP", libc::SIGHUP),
    ("INT", libc::SIGINT),
    ("QUIT", libc::SIGQUIT),
    ("ILL", libc::SIGILL),
    ("TRAP", libc::SIGTRAP),
    ("ABRT", libc::SIGABRT),
    ("IOT", libc::SIGIOT),
    ("BUS", libc::SIGBUS),
    ("FPE", libc::SIGFPE),
    ("KILL", libc::SIGKILL),
    ("USR1", libc::SIGUSR1),
    ("SEGV", libc::SIGSEGV),
    ("USR2", libc::SIGUSR2),
    ("PIPE", libc::SIGPIPE),
    ("ALRM", libc::SIGALRM),
    ("TERM", libc::SIGTERM),
    ("STKFLT", libc::SIGSTKFLT),
    ("CHLD", libc::SIGCHLD),
    ("CLD", libc::SIGCHLD),
    ("CONT", libc::SIGCONT),
    ("STOP", libc::SIGSTOP),
    ("TSTP", libc::SIGTSTP),
    ("TTIN", libc::SIGTTIN),
    ("TTOU", libc::SIGTTOU),
    ("URG", libc::SIGURG),
    ("XCPU", libc::SIGXCPU),
    ("XFSZ", libc::SIGXFSZ),
    ("VTALRM", libc::SIGVTALRM),
    ("PROF", libc::SIGPROF),
    ("WINCH", libc::SIGWINCH),
    ("IO", libc::SIGIO),
    ("POLL", libc::SIGPOLL),
    ("PWR", libc::SIGPWR),
    ("SYS", libc::SIGSYS),
];

/// The kernel's real-time signal range as the C library sees it is 34..=64; Docker (Go)
/// numbers `RTMIN` as 34.
const SIGRTMIN: i32 = 34;
const SIGRTMAX: i32 = 64;

/// `--stop-signal` / `kill -s`: "TERM", "SIGTERM", "sigterm", "15", "RTMIN+3", "SIGRTMAX-1".
pub fn signal(s: &str) -> Result<i32, Error> {
    let bad = || Error::invalid("--signal", s, format!("invalid signal: {s}"));
    if let Ok(n) = s.parse::<i32>() {
        return if (1..=SIGRTMAX).contains(&n) {
            Ok(n)
        } else {
            Err(bad())
        };
    }
    let up = s.to_ascii_uppercase();
    let name = up.strip_prefix("SIG").unwrap_or(&up);
    if let Some(&(_, n)) = SIGNALS.iter().find(|(sig, _)| *sig == name) {
        return Ok(n);
    }
    let rt = |base: i32, rest: &str| -> Option<i32> {
        let n = if rest.is_empty() {
            base
        } else if let Some(off) = rest.strip_prefix('+') {
            base.checked_add(off.parse::<i32>().ok()?)?
        } else if let Some(off) = rest.strip_prefix('-') {
            base.checked_sub(off.parse::<i32>().ok()?)?
        } else {
            return None;
        };
        (SIGRTMIN..=SIGRTMAX).contains(&n).then_some(n)
    };
    if let Some(rest) = name.strip_prefix("RTMIN") {
        return rt(SIGRTMIN, rest).ok_or_else(bad);
    }
    if let Some(rest) = name.strip_prefix("RTMAX") {
        return rt(SIGRTMAX, rest).ok_or_else(bad);
    }
    Err(bad())
}

/// `--log-opt KEY=VALUE` for the json-file driver: `max-size` (decimal size, or -1),
/// `max-file` (>= 1), `compress` (bool), `labels`, `labels-regex`, `env`, `env-regex`, `tag`.
pub fn log_opt(s: &str) -> Result<(String, String), Error> {
    let flag = "--log-opt";
    let bad = |reason: String| Error::invalid(flag, s, reason);
    let (key, value) = s
        .split_once('=')
        .ok_or_else(|| bad(format!("invalid log opt '{s}': use key=value")))?;
    match key {
        "max-size" => {
            if value != "-1" {
                let n = human_size(value).map_err(|e| e.for_flag(flag))?;
                if n <= 0 {
                    return Err(bad("max-size must be a positive size or -1".into()));
                }
            }
        }
        "max-file" => {
            let n: i64 = value
                .parse()
                .map_err(|_| bad(format!("invalid max-file: {value}")))?;
            if n < 1 {
                return Err(bad("max-file cannot be less than 1".into()));
            }
        }
        "compress" => {
            parse_bool(value).ok_or_else(|| bad(format!("invalid compress value: {value}")))?;
        }
        "labels" | "labels-regex" | "env" | "env-regex" | "tag" | "mode" | "max-buffer-size" => {}
        _ => {
            return Err(bad(format!(
                "unknown log opt '{key}' for json-file log driver"
            )));
        }
    }
    Ok((key.to_owned(), value.to_owned()))
}

/// `--security-opt`: validates the value and returns it as given, for
/// `ContainerConfig.security_opt`. See [`security_opt_kind`] for the syntax.
pub fn security_opt(s: &str) -> Result<String, Error> {
    security_opt_kind(s).map(|_| s.to_owned())
}

/// `--security-opt` parsed: `no-new-privileges[:|=true|false]`, `seccomp=unconfined|PATH`
/// (also with `:`), and the ignored `apparmor=...`, `label=...`.
pub fn security_opt_kind(s: &str) -> Result<SecurityOpt, Error> {
    let flag = "--security-opt";
    let bad = || Error::invalid(flag, s, format!("Invalid --security-opt: {s:?}"));
    if s == "no-new-privileges" {
        return Ok(SecurityOpt::NoNewPrivileges(true));
    }
    let (key, value) = s.split_once(['=', ':']).ok_or_else(bad)?;
    match key {
        "no-new-privileges" => parse_bool(value)
            .map(SecurityOpt::NoNewPrivileges)
            .ok_or_else(|| {
                Error::invalid(
                    flag,
                    s,
                    format!("invalid no-new-privileges value {value:?}: use true or false"),
                )
            }),
        "seccomp" if value == "unconfined" => Ok(SecurityOpt::SeccompUnconfined),
        "seccomp" if !value.is_empty() => Ok(SecurityOpt::SeccompProfile(PathBuf::from(value))),
        "apparmor" | "label" if !value.is_empty() => Ok(SecurityOpt::Ignored(s.to_owned())),
        _ => Err(bad()),
    }
}

/// `--label k=v` (or `k`: empty value).
pub fn label(s: &str) -> Result<(String, String), Error> {
    let (k, v) = s.split_once('=').unwrap_or((s, ""));
    if k.trim().is_empty() {
        return Err(Error::invalid(
            "--label",
            s,
            format!("invalid label '{s}': empty name"),
        ));
    }
    Ok((k.to_owned(), v.to_owned()))
}

#[cfg(test)]
mod tests;
