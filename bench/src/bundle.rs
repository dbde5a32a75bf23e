//! The one bundle every runtime starts: a busybox rootfs and the config `berth-runtime spec`
//! writes, changed only to run `/bin/true` without a terminal.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::Result;

/// A bundle directory, removed when dropped.
#[derive(Debug)]
pub struct Bundle {
    dir: tempfile::TempDir,
}

impl Bundle {
    /// Build the bundle from `busybox` (static) and the config `berth spec` writes.
    pub fn prepare(busybox: &Path, berth: &Path) -> Result<Bundle> {
        let dir = tempfile::Builder::new()
            .prefix("berth-bench-bundle-")
            .tempdir()
            .map_err(|e| format!("create the bundle directory: {e}"))?;
        let b = Bundle { dir };
        b.make_rootfs(busybox)?;
        b.write_config(berth)?;
        Ok(b)
    }

    /// The bundle directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Its root filesystem.
    pub fn rootfs(&self) -> PathBuf {
        self.dir.path().join("rootfs")
    }

    fn make_rootfs(&self, busybox: &Path) -> Result<()> {
        let root = self.rootfs();
        // Mount points exist beforehand, so no runtime pays for creating them.
        for d in ["bin", "dev", "proc", "sys", "tmp", "etc", "root"] {
            let p = root.join(d);
            std::fs::create_dir_all(&p).map_err(|e| format!("create {}: {e}", p.display()))?;
        }
        let bb = root.join("bin/busybox");
        std::fs::copy(busybox, &bb).map_err(|e| {
            format!(
                "copy {} into the rootfs: {e} (install Debian's busybox-static or pass --busybox)",
                busybox.display()
            )
        })?;
        for applet in ["true", "sh"] {
            let link = root.join("bin").join(applet);
            std::os::unix::fs::symlink("busybox", &link)
                .map_err(|e| format!("symlink {}: {e}", link.display()))?;
        }
        Ok(())
    }

    fn write_config(&self, berth: &Path) -> Result<()> {
        let out = Command::new(berth)
            .arg("spec")
            .current_dir(self.path())
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("run {} spec: {e}", berth.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} spec failed ({}): {}",
                berth.display(),
                out.status,
                match String::from_utf8_lossy(&out.stderr).trim() {
                    "" => "(no output on stderr)".to_owned(),
                    t => t.to_owned(),
                },
            ));
        }
        let file = self.path().join("config.json");
        let bytes = std::fs::read(&file).map_err(|e| format!("read {}: {e}", file.display()))?;
        let mut config: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| format!("parse {}: {e}", file.display()))?;
        let process = config
            .get_mut("process")
            .and_then(serde_json::Value::as_object_mut)
            .ok_or_else(|| format!("{} has no process object", file.display()))?;
        process.insert("args".into(), serde_json::json!(["/bin/true"]));
        process.insert("terminal".into(), serde_json::Value::Bool(false));
        // runtime-spec 1.0.2, which every peer here reads (crun 1.8 refuses 1.2.0 as unknown),
        // so a peer that cannot run reports its real reason.
        config["ociVersion"] = serde_json::Value::String("1.0.2".into());
        let text =
            serde_json::to_vec_pretty(&config).map_err(|e| format!("encode config.json: {e}"))?;
        std::fs::write(&file, text).map_err(|e| format!("write {}: {e}", file.display()))
    }
}
