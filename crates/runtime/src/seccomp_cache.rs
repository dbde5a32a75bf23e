//! A cache of compiled seccomp programs in the state root.
//!
//! Compiling Docker's default profile with libseccomp takes about 17 ms here, three times
//! everything else `create` does. An engine starts many containers with the same profile, so
//! the compiled [`Program`] is kept in `ROOT/seccomp:cache/` (`:` cannot appear in a container
//! id, so the directory never collides with one) and reused when the key matches exactly.
//!
//! The key is everything the output depends on: the profile itself (its JSON), the executable
//! that compiles it (device, inode, size and mtime of `/proc/self/exe`: the linked libseccomp
//! and our compiler version) and the boot (`boot_id`: compiling checks which actions and flags
//! the running kernel offers). A file holds the key and the program; it is used only if its key
//! is byte-for-byte the one wanted, and [`Program::prepare`] re-checks the instructions before
//! any load. An unreadable, torn or stale file is simply compiled over: the cache can make a
//! create faster, never make it fail.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};

use berth_seccomp::Program;
use oci_spec::runtime::LinuxSeccomp;
use serde::{Deserialize, Serialize};

/// The cache directory's name under the state root.
const DIR: &str = "seccomp:cache";

/// More entries than this and the directory is emptied before the next one is written:
/// distinct profiles are few (they vary with capabilities), so this only bounds misuse.
const MAX_ENTRIES: usize = 64;

#[derive(Serialize, Deserialize)]
struct Entry {
    key: String,
    program: Program,
}

/// Compile `profile`, or return the program a previous create compiled from the same key.
pub fn compile(root: &Path, profile: &LinuxSeccomp) -> Result<Program, berth_seccomp::Error> {
    let Some(key) = key(profile) else {
        return berth_seccomp::compile(profile);
    };
    let file = root.join(DIR).join(file_name(&key));
    if let Some(p) = lookup(&file, &key) {
        return Ok(p);
    }
    let program = berth_seccomp::compile(profile)?;
    store(root, &file, key, &program);
    Ok(program)
}

fn key(profile: &LinuxSeccomp) -> Option<String> {
    let exe = rustix::fs::stat("/proc/self/exe").ok()?;
    let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let json = serde_json::to_string(profile).ok()?;
    Some(format!(
        "v1 exe={}:{}:{}:{}.{} boot={}\n{json}",
        exe.st_dev,
        exe.st_ino,
        exe.st_size,
        exe.st_mtime,
        exe.st_mtime_nsec,
        boot.trim()
    ))
}

fn file_name(key: &str) -> PathBuf {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    PathBuf::from(format!("{:016x}.json", h.finish()))
}

fn lookup(file: &Path, key: &str) -> Option<Program> {
    let bytes = std::fs::read(file).ok()?;
    let e: Entry = serde_json::from_slice(&bytes).ok()?;
    if e.key != key {
        return None;
    }
    // A program that does not pass the structural checks is compiled again.
    e.program.prepare().ok()?;
    Some(e.program)
}

/// Write the entry atomically (temporary file, then rename). Failures are ignored: the next
/// create compiles again. No fsync: after a crash a torn file fails [`lookup`] and is replaced.
fn store(root: &Path, file: &Path, key: String, program: &Program) {
    let dir = root.join(DIR);
    if !root.is_dir() {
        return;
    }
    match std::fs::create_dir(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let count = std::fs::read_dir(&dir).map_or(0, Iterator::count);
            if count >= MAX_ENTRIES {
                let _ = std::fs::remove_dir_all(&dir);
                if std::fs::create_dir(&dir).is_err() {
                    return;
                }
            }
        }
        Err(_) => return,
    }
    let entry = Entry {
        key,
        program: program.clone(),
    };
    let Ok(bytes) = serde_json::to_vec(&entry) else {
        return;
    };
    let tmp = dir.join(format!(".tmp.{}", std::process::id()));
    if std::fs::write(&tmp, bytes).is_ok() && std::fs::rename(&tmp, file).is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn profile(extra: &str) -> LinuxSeccomp {
        serde_json::from_str(&format!(
            r#"{{"defaultAction":"SCMP_ACT_ERRNO","syscalls":[{{"names":["read","write"{extra}],"action":"SCMP_ACT_ALLOW"}}]}}"#
        ))
        .unwrap()
    }

    #[test]
    fn a_cached_program_equals_a_fresh_compile_and_is_reused() {
        let root = tempfile::tempdir().unwrap();
        let p = profile("");
        let first = compile(root.path(), &p).unwrap();
        assert_eq!(first, berth_seccomp::compile(&p).unwrap());
        let files: Vec<_> = std::fs::read_dir(root.path().join(DIR))
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        assert_eq!(files.len(), 1, "one entry per profile: {files:?}");
        // Replace the cached program with a different valid one under the same key: the next
        // compile must return what the cache holds (proving it is read, not recompiled).
        let other = berth_seccomp::compile(&profile(r#","close""#)).unwrap();
        assert_ne!(other, first);
        let mut e: Entry = serde_json::from_slice(&std::fs::read(&files[0]).unwrap()).unwrap();
        e.program = other.clone();
        std::fs::write(&files[0], serde_json::to_vec(&e).unwrap()).unwrap();
        assert_eq!(compile(root.path(), &p).unwrap(), other);
    }

    #[test]
    fn a_different_profile_or_a_torn_file_compiles_again() {
        let root = tempfile::tempdir().unwrap();
        let a = profile("");
        let b = profile(r#","close""#);
        let pa = compile(root.path(), &a).unwrap();
        let pb = compile(root.path(), &b).unwrap();
        assert_ne!(pa, pb);
        assert_eq!(std::fs::read_dir(root.path().join(DIR)).unwrap().count(), 2);
        for e in std::fs::read_dir(root.path().join(DIR)).unwrap() {
            std::fs::write(e.unwrap().path(), b"{\"key\":").unwrap();
        }
        assert_eq!(compile(root.path(), &a).unwrap(), pa);
        assert_eq!(compile(root.path(), &b).unwrap(), pb);
    }

    #[test]
    fn the_directory_is_bounded_and_a_missing_root_is_no_error() {
        let root = tempfile::tempdir().unwrap();
        for i in 0..(MAX_ENTRIES + 3) {
            let extra = format!(r#","close"],"errnoRet":{}"#, i + 1);
            // A distinct, valid profile per i: an ERRNO rule with its own errno.
            let p: LinuxSeccomp = serde_json::from_str(&format!(
                r#"{{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{{"names":["read"{extra},"action":"SCMP_ACT_ERRNO"}}]}}"#
            ))
            .unwrap();
            compile(root.path(), &p).unwrap();
        }
        let n = std::fs::read_dir(root.path().join(DIR)).unwrap().count();
        assert!(n <= MAX_ENTRIES, "{n} entries");
        let gone = root.path().join("missing");
        compile(&gone, &profile("")).unwrap();
        assert!(!gone.exists(), "the cache never creates the state root");
    }
}
