//! OCI hooks: run with the container state on stdin, their own env, and a timeout.

use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_spec::runtime::{Hook, Hooks};

use crate::error::{Error, Result};
use crate::state::OciState;

/// The six hook points.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Deprecated alias run with `createRuntime`.
    Prestart,
    /// After the runtime environment exists, before pivot_root, in the runtime's namespace.
    CreateRuntime,
    /// Same moment, in the container's namespace.
    CreateContainer,
    /// After `start`, in the container, before the user program.
    StartContainer,
    /// After the user program started.
    Poststart,
    /// After the container is deleted.
    Poststop,
}

impl Kind {
    /// The config name.
    pub fn name(self) -> &'static str {
        match self {
            Kind::Prestart => "prestart",
            Kind::CreateRuntime => "createRuntime",
            Kind::CreateContainer => "createContainer",
            Kind::StartContainer => "startContainer",
            Kind::Poststart => "poststart",
            Kind::Poststop => "poststop",
        }
    }

    /// This kind's list in the config.
    pub fn list(self, hooks: Option<&Hooks>) -> &[Hook] {
        let Some(h) = hooks else { return &[] };
        let l = match self {
            #[allow(deprecated)]
            Kind::Prestart => h.prestart(),
            Kind::CreateRuntime => h.create_runtime(),
            Kind::CreateContainer => h.create_container(),
            Kind::StartContainer => h.start_container(),
            Kind::Poststart => h.poststart(),
            Kind::Poststop => h.poststop(),
        };
        l.as_deref().unwrap_or_default()
    }
}

/// Run the hooks of a kind whose failure is logged, not fatal (`poststart`, `poststop`:
/// runtime-spec 1.2).
pub fn run_logged(kind: Kind, hooks: Option<&Hooks>, state: &OciState) {
    if let Err(e) = run(kind, hooks, state) {
        tracing::warn!("{}", crate::error::chain(&e));
    }
}

/// Run every hook of `kind` in order; stop at the first failure.
pub fn run(kind: Kind, hooks: Option<&Hooks>, state: &OciState) -> Result<()> {
    let list = kind.list(hooks);
    if list.is_empty() {
        return Ok(());
    }
    let json = serde_json::to_vec(state)
        .map_err(|e| Error::Unsupported(format!("encode hook state: {e}")))?;
    for (i, h) in list.iter().enumerate() {
        run_one(kind, i, h, &json)?;
    }
    Ok(())
}

fn run_one(kind: Kind, index: usize, hook: &Hook, state: &[u8]) -> Result<()> {
    let fail = |problem: String| Error::Hook {
        kind: kind.name(),
        index,
        path: hook.path().clone(),
        problem,
    };
    let mut cmd = Command::new(hook.path());
    let args = hook.args().as_deref().unwrap_or_default();
    if let Some((argv0, rest)) = args.split_first() {
        cmd.arg0(argv0).args(rest);
    }
    if let Some(env) = hook.env() {
        cmd.env_clear();
        for kv in env {
            if let Some((k, v)) = kv.split_once('=') {
                cmd.env(k, v);
            }
        }
    }
    let capture = output_file().map_err(|e| fail(format!("could not capture its output: {e}")))?;
    let (out, err) = capture
        .try_clone()
        .and_then(|a| Ok((a, capture.try_clone()?)))
        .map_err(|e| fail(format!("could not capture its output: {e}")))?;
    cmd.stdin(Stdio::piped())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err));
    let mut child = cmd
        .spawn()
        .map_err(|e| fail(format!("could not be started: {e}")))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin is fine.
        let _ = stdin.write_all(state);
    }
    let timeout = hook
        .timeout()
        .filter(|t| *t > 0)
        .map(|t| Duration::from_secs(t.unsigned_abs()));
    let started = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) => {}
            Err(e) => return Err(fail(format!("could not be waited for: {e}"))),
        }
        if let Some(t) = timeout {
            if started.elapsed() >= t {
                let _ = child.kill();
                let _ = child.wait();
                return Err(fail(format!(
                    "timed out after {}s and was killed",
                    t.as_secs()
                )));
            }
        }
        // Hooks are short; poll quickly at first, then back off.
        let waited = started.elapsed();
        std::thread::sleep(if waited < Duration::from_millis(20) {
            Duration::from_micros(200)
        } else {
            Duration::from_millis(5)
        });
    };
    if status.success() {
        return Ok(());
    }
    let output = read_output(capture);
    let how = match (status.code(), status.signal()) {
        (Some(c), _) => format!("exited with status {c}"),
        (None, Some(s)) => format!("was killed by signal {s}"),
        _ => "failed".to_string(),
    };
    Err(fail(if output.is_empty() {
        how
    } else {
        format!("{how}: {output}")
    }))
}

fn output_file() -> std::io::Result<std::fs::File> {
    let fd: OwnedFd =
        rustix::fs::memfd_create("berth-hook-output", rustix::fs::MemfdFlags::CLOEXEC)?;
    Ok(std::fs::File::from(fd))
}

/// The hook's output, trimmed to something that fits on an error line.
fn read_output(mut f: std::fs::File) -> String {
    use std::io::{Read, Seek};
    let mut buf = Vec::new();
    if f.seek(std::io::SeekFrom::Start(0)).is_err() || f.take(4096).read_to_end(&mut buf).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&buf).trim().replace('\n', "; ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{HookBuilder, HooksBuilder};
    use std::path::PathBuf;

    fn state() -> OciState {
        OciState {
            oci_version: "1.2.0".into(),
            id: "c1".into(),
            pid: 42,
            status: crate::state::Status::Creating,
            bundle: PathBuf::from("/b"),
            rootfs: PathBuf::from("/b/rootfs"),
            created: "2026-01-01T00:00:00Z".into(),
            annotations: None,
            owner: "root".into(),
        }
    }

    fn sh(script: &str, timeout: Option<i64>) -> Hook {
        let b = HookBuilder::default()
            .path("/bin/sh")
            .args(vec!["sh".to_string(), "-c".to_string(), script.to_string()])
            .env(vec!["HOOKVAR=yes".to_string()]);
        match timeout {
            Some(t) => b.timeout(t).build().unwrap(),
            None => b.build().unwrap(),
        }
    }

    #[test]
    fn hooks_get_state_on_stdin_and_their_env_in_order() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let o = out.display();
        let hooks = HooksBuilder::default()
            .create_runtime(vec![
                sh(
                    &format!("cat > {o}.state; echo $HOOKVAR > {o}.env; echo first >> {o}"),
                    None,
                ),
                sh(&format!("echo second >> {o}"), Some(5)),
            ])
            .build()
            .unwrap();
        run(Kind::CreateRuntime, Some(&hooks), &state()).unwrap();
        assert_eq!(std::fs::read_to_string(&out).unwrap(), "first\nsecond\n");
        let parsed: OciState =
            serde_json::from_slice(&std::fs::read(dir.path().join("out.state")).unwrap()).unwrap();
        assert_eq!(parsed, state());
        assert_eq!(
            std::fs::read_to_string(dir.path().join("out.env")).unwrap(),
            "yes\n"
        );
    }

    #[test]
    fn failing_hook_reports_status_and_output_and_stops_the_list() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("ran");
        let hooks = HooksBuilder::default()
            .poststart(vec![
                sh("echo broken >&2; exit 3", None),
                sh(&format!("touch {}", marker.display()), None),
            ])
            .build()
            .unwrap();
        let err = run(Kind::Poststart, Some(&hooks), &state())
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("poststart hook #0 (/bin/sh) exited with status 3: broken"),
            "{err}"
        );
        assert!(!marker.exists());
    }

    #[test]
    fn hook_timeout_kills() {
        let hooks = HooksBuilder::default()
            .create_runtime(vec![sh("sleep 10", Some(1))])
            .build()
            .unwrap();
        let t = Instant::now();
        let err = run(Kind::CreateRuntime, Some(&hooks), &state())
            .unwrap_err()
            .to_string();
        assert!(err.contains("timed out after 1s"), "{err}");
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}
