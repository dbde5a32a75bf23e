//! What is timed: an OCI runtime with a private state root, or the bare `unshare` floor.
//! An [`Oci`] force-deletes every container it started when dropped, so an error or an
//! interrupted run leaves no process, cgroup or state behind.

use std::fs::File;
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use crate::Result;

/// An OCI runtime binary with its own `--root` in a temporary directory.
#[derive(Debug)]
pub struct Oci {
    /// Short name in the table and the RESULT line.
    pub name: &'static str,
    bin: PathBuf,
    root: tempfile::TempDir,
    /// Every id handed to the runtime, so `Drop` can delete what is left.
    ids: Vec<String>,
    seq: u32,
}

impl Oci {
    pub fn new(name: &'static str, bin: PathBuf) -> Result<Oci> {
        let root = tempfile::Builder::new()
            .prefix(&format!("berth-bench-{name}-root-"))
            .tempdir()
            .map_err(|e| format!("create a state root for {name}: {e}"))?;
        Ok(Oci {
            name,
            bin,
            root,
            ids: Vec::new(),
            seq: 0,
        })
    }

    /// A command with the global `--root` flag.
    fn cmd(&self) -> Command {
        let mut c = Command::new(&self.bin);
        c.arg("--root").arg(self.root.path());
        c
    }

    /// A fresh container id, remembered for cleanup.
    fn next_id(&mut self) -> String {
        self.seq += 1;
        let id = format!("bench-{}-{}-{}", std::process::id(), self.name, self.seq);
        self.ids.push(id.clone());
        id
    }

    /// `run --bundle B ID`: create, start, wait and delete in the foreground.
    pub fn run_cmd(&mut self, bundle: &Path) -> Command {
        let id = self.next_id();
        let mut c = self.cmd();
        c.arg("run").arg("--bundle").arg(bundle).arg(id);
        c
    }

    /// `create --bundle B ID`; returns the id for [`Oci::delete`].
    pub fn create_cmd(&mut self, bundle: &Path) -> (Command, String) {
        let id = self.next_id();
        let mut c = self.cmd();
        c.arg("create").arg("--bundle").arg(bundle).arg(&id);
        (c, id)
    }

    /// `delete -f ID`, checked.
    pub fn delete(&self, id: &str) -> Result<()> {
        let mut c = self.cmd();
        c.arg("delete").arg("-f").arg(id);
        run_checked(&mut c, &format!("{} delete -f {id}", self.name)).map(drop)
    }

    /// The ids whose state directory still exists.
    fn leftovers(&self) -> Vec<&str> {
        self.ids
            .iter()
            .map(String::as_str)
            .filter(|id| self.root.path().join(id).exists())
            .collect()
    }
}

impl Drop for Oci {
    fn drop(&mut self) {
        for id in self.leftovers() {
            let mut c = self.cmd();
            c.arg("delete").arg("-f").arg(id);
            c.stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            match c.status() {
                Ok(s) if s.success() => {}
                Ok(s) => eprintln!("berth-bench: cleanup: {} delete -f {id}: {s}", self.name),
                Err(e) => eprintln!("berth-bench: cleanup: {} delete -f {id}: {e}", self.name),
            }
        }
        // The TempDir field removes the state root after this.
    }
}

/// One row of the timing table.
#[derive(Debug)]
pub enum Subject {
    Oci(Oci),
    /// `unshare --mount --pid --fork --uts --ipc --net chroot ROOTFS /bin/true`.
    Floor {
        rootfs: PathBuf,
    },
}

impl Subject {
    pub fn name(&self) -> &'static str {
        match self {
            Subject::Oci(o) => o.name,
            Subject::Floor { .. } => "floor",
        }
    }

    /// What the table shows in its first column.
    pub fn label(&self) -> String {
        match self {
            Subject::Oci(o) if o.name == "berth" => "berth-runtime".into(),
            Subject::Oci(o) => o.name.into(),
            Subject::Floor { .. } => "floor (unshare+chroot)".into(),
        }
    }

    /// The command that starts `/bin/true` once.
    pub fn command(&mut self, bundle: &Path) -> Command {
        match self {
            Subject::Oci(o) => o.run_cmd(bundle),
            Subject::Floor { rootfs } => {
                let mut c = Command::new("unshare");
                c.args([
                    "--mount", "--pid", "--fork", "--uts", "--ipc", "--net", "chroot",
                ]);
                c.arg(&*rootfs).arg("/bin/true");
                c
            }
        }
    }
}

/// The failure of one child: its status and the first line of its standard error.
#[derive(Debug)]
pub struct Failed {
    pub status: String,
    pub stderr: String,
}

impl Failed {
    /// All of its stderr, trimmed, or a note that there was none.
    pub fn text(&self) -> &str {
        match self.stderr.trim() {
            "" => "(no output on stderr)",
            t => t,
        }
    }

    pub fn first_line(&self) -> &str {
        self.stderr
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty())
            .unwrap_or("(no output on stderr)")
    }
}

/// Spawn and wait with stdin and stdout null and stderr in a file (never a pipe: a created
/// container keeps the runtime's stdio open), timing spawn+wait only.
pub fn timed(cmd: &mut Command) -> Result<std::result::Result<Duration, Failed>> {
    let err = tempfile::tempfile().map_err(|e| format!("create a file for stderr: {e}"))?;
    let err_for_child = err
        .try_clone()
        .map_err(|e| format!("dup the stderr file: {e}"))?;
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(err_for_child));
    let start = Instant::now();
    let status = cmd.status();
    let elapsed = start.elapsed();
    let status = status.map_err(|e| format!("spawn {}: {e}", show(cmd)))?;
    if status.success() {
        Ok(Ok(elapsed))
    } else {
        Ok(Err(Failed {
            status: describe(status),
            stderr: read_all(err),
        }))
    }
}

/// Run to completion; any failure is an error naming the command and its stderr.
pub fn run_checked(cmd: &mut Command, what: &str) -> Result<Duration> {
    match timed(cmd)? {
        Ok(d) => Ok(d),
        Err(f) => Err(format!("{what} failed ({}): {}", f.status, f.text())),
    }
}

pub fn read_all(mut f: File) -> String {
    let mut s = String::new();
    if f.rewind().is_ok() {
        let _ = f.read_to_string(&mut s);
    }
    s
}

pub fn describe(status: ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(c), _) => format!("exit code {c}"),
        (None, Some(s)) => format!("killed by signal {s}"),
        _ => status.to_string(),
    }
}

/// The command line, for error messages.
pub fn show(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}
