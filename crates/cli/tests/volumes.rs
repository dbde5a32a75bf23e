//! End to end: volumes through the real `berth`, an auto-started `berthd` per test (own root)
//! and `berth-shim`, on the busybox test image.

mod common;

use std::path::PathBuf;

use common::Berth;
use serde_json::Value;

fn berth() -> Berth {
    let b = Berth::new();
    b.busybox();
    b
}

/// Load `volimg`: busybox plus `/srv` owned by 1000:1000 (`app/` 0750, `app/conf` 0640, a
/// symlink `link -> app/conf`), with `/srv` declared as a volume in the image config.
fn load_volume_image(b: &Berth) {
    let mut t = tar::Builder::new(Vec::new());
    let hdr = |typ: tar::EntryType, mode: u32, size: u64| {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(typ);
        h.set_mode(mode);
        h.set_uid(1000);
        h.set_gid(1000);
        h.set_size(size);
        h.set_mtime(1_700_000_000);
        h
    };
    let mut h = hdr(tar::EntryType::Directory, 0o755, 0);
    t.append_data(&mut h, "srv", std::io::empty()).unwrap();
    let mut h = hdr(tar::EntryType::Directory, 0o750, 0);
    t.append_data(&mut h, "srv/app", std::io::empty()).unwrap();
    let mut h = hdr(tar::EntryType::Regular, 0o640, 6);
    t.append_data(&mut h, "srv/app/conf", &b"image\n"[..])
        .unwrap();
    let mut h = hdr(tar::EntryType::Symlink, 0o777, 0);
    t.append_link(&mut h, "srv/link", "app/conf").unwrap();
    let tar_bytes = t.into_inner().unwrap();
    let diff = common::sha256_hex(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let mut layers = common::busybox_layers();
    layers.push((gz.finish().unwrap(), diff));
    let layout = tempfile::tempdir().unwrap();
    common::write_layout_with(
        layout.path(),
        "volimg:latest",
        &layers,
        ("linux", common::host_arch()),
        serde_json::json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Volumes": {"/srv": {}},
        }),
    );
    let mut a = tar::Builder::new(Vec::new());
    a.append_dir_all(".", layout.path()).unwrap();
    let path = b.dir.path().join("volimg.tar");
    std::fs::write(&path, a.into_inner().unwrap()).unwrap();
    b.ok(&["load", "-q", "-i", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
}

fn lines(s: &str) -> Vec<String> {
    s.lines().map(str::to_owned).collect()
}

fn inspect(b: &Berth, args: &[&str]) -> Value {
    let out = b.ok(args);
    let v: Value = serde_json::from_str(&out).expect("inspect prints JSON");
    v[0].clone()
}

fn mountpoint(b: &Berth, name: &str) -> PathBuf {
    PathBuf::from(
        inspect(b, &["volume", "inspect", name])["Mountpoint"]
            .as_str()
            .unwrap(),
    )
}

/// A bad-input failure: exit 125 and exactly one line on stderr containing `want`.
fn refused(b: &Berth, args: &[&str], want: &str) {
    let (_, err) = b.exits(125, args);
    assert_eq!(err.trim().lines().count(), 1, "one line: {err:?}");
    assert!(err.contains(want), "berth {args:?}: {err:?} lacks {want:?}");
}

#[test]
fn named_volume_keeps_data_across_container_removal() {
    let b = berth();
    assert_eq!(b.ok(&["volume", "create", "data"]).trim(), "data");
    // Creating an existing name is idempotent, as in Docker.
    assert_eq!(b.ok(&["volume", "create", "--name", "data"]).trim(), "data");
    let v = inspect(&b, &["volume", "inspect", "data"]);
    assert_eq!(v["Name"], "data");
    assert_eq!(v["Driver"], "local");
    assert_eq!(v["Scope"], "local");
    assert!(v["CreatedAt"].as_str().unwrap().ends_with('Z'), "{v}");
    let mp = mountpoint(&b, "data");
    assert!(
        mp.starts_with(b.root()) && mp.ends_with("data/_data"),
        "{mp:?}"
    );

    b.ok(&[
        "run",
        "--name",
        "writer",
        "-v",
        "data:/data",
        "busybox",
        "sh",
        "-c",
        "echo hello > /data/f",
    ]);
    assert_eq!(std::fs::read_to_string(mp.join("f")).unwrap(), "hello\n");
    // The container's inspect shows the mount as Docker does.
    let c = inspect(&b, &["inspect", "writer"]);
    let m = &c["Mounts"][0];
    assert_eq!(m["Type"], "volume", "{m}");
    assert_eq!(m["Name"], "data");
    assert_eq!(m["Driver"], "local");
    assert_eq!(m["Destination"], "/data");
    assert_eq!(m["Source"], mp.to_str().unwrap());
    assert_eq!(m["RW"], true);

    // In use (even by a stopped container): refused, naming the container.
    let id = c["Id"].as_str().unwrap().to_owned();
    refused(&b, &["volume", "rm", "data"], "volume is in use");
    let (_, err) = b.exits(125, &["volume", "rm", "data"]);
    assert!(err.contains(&id), "{err}");
    assert!(
        lines(&b.ok(&["volume", "ls", "-q", "-f", "dangling=true"])).is_empty(),
        "a used volume is not dangling"
    );

    b.ok(&["rm", "writer"]);
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "data:/data",
        "busybox",
        "cat",
        "/data/f",
    ]);
    assert_eq!(out, "hello\n");
    assert_eq!(
        lines(&b.ok(&["volume", "ls", "-q", "-f", "dangling=true"])),
        ["data"]
    );
    let table = b.ok(&["volume", "ls"]);
    assert!(table.starts_with("DRIVER"), "{table}");
    assert!(table.contains("local") && table.contains("data"), "{table}");
    assert_eq!(
        b.ok(&["volume", "ls", "--format", "{{.Name}} {{.Driver}}"])
            .trim(),
        "data local"
    );
    assert_eq!(b.ok(&["volume", "rm", "data"]).trim(), "data");
    assert!(!mp.exists());
    refused(&b, &["volume", "inspect", "data"], "no such volume");
}

#[test]
fn copy_up_fills_a_new_volume_and_never_overwrites() {
    let b = berth();
    // /bin of the image: the busybox binary (mode kept) and its applet symlinks.
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "bins:/bin",
        "busybox",
        "/bin/readlink",
        "/bin/ls",
    ]);
    assert_eq!(out.trim(), "busybox");
    let mp = mountpoint(&b, "bins");
    assert_eq!(
        std::fs::read_link(mp.join("ls")).unwrap(),
        PathBuf::from("busybox")
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(mp.join("busybox"))
        .unwrap()
        .permissions()
        .mode();
    assert!(mode & 0o111 != 0, "busybox lost its exec bits: {mode:o}");
    // Owners, modes and symlinks come along, the directory's own attributes too.
    load_volume_image(&b);
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "appdata:/srv",
        "volimg",
        "sh",
        "-c",
        "stat -c '%u:%g %a' /srv /srv/app /srv/app/conf; readlink /srv/link; cat /srv/link",
    ]);
    assert_eq!(
        lines(&out),
        [
            "1000:1000 755",
            "1000:1000 750",
            "1000:1000 640",
            "app/conf",
            "image"
        ]
    );

    // A volume on /etc gets the image's /etc, and the managed files stay visible over it.
    let out = b.ok(&[
        "run",
        "--rm",
        "--hostname",
        "etc-host",
        "-v",
        "etcv:/etc",
        "busybox",
        "sh",
        "-c",
        "cat /etc/hostname; head -1 /etc/passwd",
    ]);
    assert_eq!(lines(&out), ["etc-host", "root:x:0:0:root:/root:/bin/sh"]);

    // An already-populated volume is not overwritten.
    b.ok(&["run", "--rm", "-v", "pop:/x", "busybox", "touch", "/x/mine"]);
    let out = b.ok(&["run", "--rm", "-v", "pop:/home", "busybox", "ls", "/home"]);
    assert_eq!(lines(&out), ["mine"]);
    // Fresh volume: the image's content appears.
    let out = b.ok(&["run", "--rm", "-v", "fresh:/home", "busybox", "ls", "/home"]);
    assert_eq!(lines(&out), ["user"]);
    // nocopy disables it (-v and --mount).
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "nc:/home:nocopy",
        "busybox",
        "ls",
        "/home",
    ]);
    assert!(out.trim().is_empty(), "{out}");
    let out = b.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=volume,src=nc2,dst=/home,volume-nocopy",
        "busybox",
        "ls",
        "/home",
    ]);
    assert!(out.trim().is_empty(), "{out}");
}

#[test]
fn anonymous_volumes_are_removed_with_rm_v_and_pruned() {
    let b = berth();
    b.ok(&[
        "run",
        "--name",
        "ca",
        "-v",
        "/scratch",
        "busybox",
        "touch",
        "/scratch/x",
    ]);
    let c = inspect(&b, &["inspect", "ca"]);
    let m = &c["Mounts"][0];
    assert_eq!(m["Type"], "volume");
    assert_eq!(m["Destination"], "/scratch");
    let anon = m["Name"].as_str().unwrap().to_owned();
    assert_eq!(anon.len(), 64, "{anon}");
    let v = inspect(&b, &["volume", "inspect", &anon]);
    assert!(
        v["Labels"]["com.docker.volume.anonymous"].is_string(),
        "{v}"
    );
    assert!(lines(&b.ok(&["volume", "ls", "-q"])).contains(&anon));
    b.ok(&["rm", "-v", "ca"]);
    assert!(
        !lines(&b.ok(&["volume", "ls", "-q"])).contains(&anon),
        "rm -v removes the anonymous volume"
    );

    // --rm removes them too; a named volume stays.
    b.ok(&[
        "run", "--rm", "-v", "/tmpdata", "-v", "keep:/k", "busybox", "true",
    ]);
    assert_eq!(lines(&b.ok(&["volume", "ls", "-q"])), ["keep"]);

    // rm without -v keeps it; prune (Docker 23+) removes unused anonymous volumes only.
    b.ok(&["run", "--name", "cb", "-v", "/s2", "busybox", "true"]);
    b.ok(&["run", "--name", "user", "-v", "/s3", "busybox", "true"]);
    b.ok(&["rm", "cb"]);
    assert_eq!(b.ok(&["volume", "ls", "-q"]).lines().count(), 3);
    let out = b.ok(&["volume", "prune", "-f"]);
    assert!(out.starts_with("Deleted Volumes:\n"), "{out}");
    assert!(out.contains("Total reclaimed space:"), "{out}");
    let left = lines(&b.ok(&["volume", "ls", "-q"]));
    assert_eq!(
        left.len(),
        2,
        "the one in use and the named one stay: {left:?}"
    );
    assert!(left.contains(&"keep".to_owned()));
    b.ok(&["rm", "user"]);
    b.ok(&["volume", "prune", "-a", "-f"]);
    assert!(b.ok(&["volume", "ls", "-q"]).trim().is_empty());
}

#[test]
fn read_only_mounts_are_read_only() {
    let b = berth();
    let host = b.dir.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    let host_s = host.to_str().unwrap();
    for spec in [
        vec!["-v", "ro1:/data:ro"],
        vec!["--mount", "type=volume,src=ro1,dst=/data,readonly"],
    ] {
        let mut args = vec!["run", "--rm"];
        args.extend(&spec);
        args.extend(["busybox", "touch", "/data/x"]);
        let err = b.fails(&args);
        assert!(err.contains("Read-only file system"), "{spec:?}: {err}");
    }
    let bind = format!("type=bind,src={host_s},dst=/b,readonly");
    let err = b.fails(&["run", "--rm", "--mount", &bind, "busybox", "touch", "/b/x"]);
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(!host.join("x").exists());
    // rw works, and a -v bind source that does not exist is created (as Docker's -v does).
    let made = b.dir.path().join("made/here");
    let v = format!("{}:/m", made.display());
    b.ok(&["run", "--rm", "-v", &v, "busybox", "touch", "/m/x"]);
    assert!(made.join("x").exists());
}

#[test]
fn tmpfs_through_mount() {
    let b = berth();
    let out = b.ok(&[
        "run",
        "--rm",
        "--mount",
        "type=tmpfs,dst=/t,tmpfs-size=1m,tmpfs-mode=1770",
        "busybox",
        "sh",
        "-c",
        "grep ' /t ' /proc/mounts; stat -c %a /t",
    ]);
    assert!(out.contains("tmpfs /t tmpfs"), "{out}");
    assert!(out.contains("size=1024k"), "{out}");
    assert!(out.contains("1770"), "{out}");
    // --tmpfs too.
    let out = b.ok(&[
        "run",
        "--rm",
        "--tmpfs",
        "/u",
        "busybox",
        "grep",
        " /u ",
        "/proc/mounts",
    ]);
    assert!(out.contains("tmpfs /u tmpfs"), "{out}");
    assert!(b.ok(&["volume", "ls", "-q"]).trim().is_empty());
    // As Docker: `--tmpfs` is listed in HostConfig.Tmpfs only, `--mount type=tmpfs` in Mounts.
    let id = b
        .ok(&[
            "create",
            "--tmpfs",
            "/u:size=1m",
            "--mount",
            "type=tmpfs,dst=/t",
            "busybox",
            "true",
        ])
        .trim()
        .to_owned();
    let doc = inspect(&b, &["inspect", &id]);
    assert_eq!(
        doc["HostConfig"]["Tmpfs"],
        serde_json::json!({"/u": "size=1m"})
    );
    let mounts = doc["Mounts"].as_array().unwrap();
    assert_eq!(mounts.len(), 1, "{mounts:?}");
    assert_eq!(mounts[0]["Type"], "tmpfs");
    assert_eq!(mounts[0]["Destination"], "/t");
    // It is still mounted (and a duplicate mount point with it still refused).
    let out = b.ok(&["start", "-a", &id]);
    assert!(out.is_empty(), "{out}");
    let err = b.fails(&["create", "--tmpfs", "/t", "-v", "/t", "busybox"]);
    assert!(err.contains("Duplicate mount point"), "{err}");
    b.ok(&["rm", &id]);
}

#[test]
fn bad_input_is_refused_and_leaves_nothing() {
    let b = berth();
    refused(&b, &["volume", "inspect", "nope"], "no such volume");
    refused(&b, &["volume", "rm", "nope"], "no such volume");
    b.ok(&["volume", "rm", "-f", "nope"]);
    refused(
        &b,
        &["volume", "create", "bad/name"],
        "includes invalid characters for a local volume name",
    );
    refused(&b, &["volume", "create", "x"], "invalid characters");
    refused(
        &b,
        &["volume", "create", "-d", "nfs", "v1"],
        "plugin \"nfs\" not found",
    );
    // The local driver's options: each mistake named in one line, no volume made.
    for (opts, want) in [
        (
            &["-o", "type=tmpfs"][..],
            "missing required option: \"device\"",
        ),
        (
            &["-o", "o=size=1m"][..],
            "missing required option: \"device\"",
        ),
        (
            &["-o", "device=/dev/x"][..],
            "missing required option: \"type\"",
        ),
        (&["-o", "foo=bar"][..], "invalid option: \"foo\""),
        (
            &["-o", "type=none", "-o", "device=/srv"][..],
            "unless o has bind",
        ),
        (
            &["-o", "type=none", "-o", "o=bind", "-o", "device=rel"][..],
            "must be an absolute host path",
        ),
    ] {
        let mut args = vec!["volume", "create"];
        args.extend(opts);
        args.push("v1");
        refused(&b, &args, want);
    }
    refused(
        &b,
        &[
            "run", "--rm", "-v", "d1:/x", "-v", "d2:/x/", "busybox", "true",
        ],
        "Duplicate mount point: /x",
    );
    let missing = b.dir.path().join("not-there");
    let bind = format!("type=bind,src={},dst=/y", missing.display());
    refused(
        &b,
        &[
            "run", "--rm", "-v", "made:/x", "--mount", &bind, "busybox", "true",
        ],
        "bind source path does not exist",
    );
    assert!(!missing.exists(), "--mount never creates a bind source");
    refused(
        &b,
        &[
            "run",
            "--rm",
            "--mount",
            "type=nfs,dst=/x",
            "busybox",
            "true",
        ],
        "invalid mount type",
    );
    refused(
        &b,
        &["run", "--rm", "--mount", "src=v", "busybox", "true"],
        "target is required",
    );
    refused(
        &b,
        &[
            "run",
            "--rm",
            "--mount",
            "type=tmpfs,src=v,dst=/x",
            "busybox",
            "true",
        ],
        "source must not be specified",
    );
    refused(
        &b,
        &["run", "--rm", "-v", "v:relative", "busybox", "true"],
        "must be absolute",
    );
    refused(
        &b,
        &["run", "--rm", "-v", "v:/x:bogus", "busybox", "true"],
        "invalid mode",
    );
    // Nothing was half-created: no volume (not even the implicit "made"), no container.
    assert!(b.ok(&["volume", "ls", "-q"]).trim().is_empty());
    assert!(b.ok(&["ps", "-aq"]).trim().is_empty());
    let vols = b.root().join("volumes/default");
    let left: Vec<_> = std::fs::read_dir(&vols)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn z_options_are_accepted_with_a_warning() {
    let b = berth();
    let out = b.run(&["run", "--rm", "-v", "zv:/z:Z", "busybox", "true"]);
    assert!(out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("'Z' option of /z is ignored"), "{err}");
}

#[test]
fn leftovers_of_a_killed_daemon_are_cleaned_at_boot() {
    let b = berth();
    b.ok(&["volume", "create", "ok1"]);
    b.stop_daemon();
    // What a kill -9 in the middle of a create or a remove leaves.
    let dir = b.root().join("volumes/default");
    std::fs::create_dir_all(dir.join(".tmp-0123456789abcdef/_data")).unwrap();
    std::fs::create_dir_all(dir.join(".rm-0123456789abcdef/_data")).unwrap();
    assert_eq!(lines(&b.ok(&["volume", "ls", "-q"])), ["ok1"]);
    assert!(!dir.join(".tmp-0123456789abcdef").exists());
    assert!(!dir.join(".rm-0123456789abcdef").exists());
    b.ok(&["volume", "create", "ok1"]);
    b.ok(&["volume", "rm", "ok1"]);
}

#[test]
fn image_volumes_become_populated_anonymous_volumes() {
    let b = berth();
    load_volume_image(&b);
    let out = b.ok(&["run", "--name", "iv", "volimg", "cat", "/srv/app/conf"]);
    assert_eq!(out, "image\n");
    let c = inspect(&b, &["inspect", "iv"]);
    let m = &c["Mounts"][0];
    assert_eq!(m["Type"], "volume", "{c}");
    assert_eq!(m["Destination"], "/srv");
    let anon = m["Name"].as_str().unwrap().to_owned();
    assert_eq!(
        lines(&b.ok(&["volume", "ls", "-q"])),
        std::slice::from_ref(&anon)
    );
    // A user mount on the same path replaces the image's volume.
    b.ok(&["run", "--rm", "-v", "named:/srv", "volimg", "true"]);
    assert_eq!(b.ok(&["volume", "ls", "-q"]).lines().count(), 2);
    b.ok(&["rm", "-v", "iv"]);
    assert_eq!(lines(&b.ok(&["volume", "ls", "-q"])), ["named"]);
}

#[test]
fn system_df_and_prune_cover_volumes() {
    let b = berth();
    b.ok(&[
        "run", "--name", "holder", "-v", "held:/h", "busybox", "true",
    ]);
    b.ok(&[
        "run",
        "--rm",
        "-v",
        "big:/d",
        "busybox",
        "dd",
        "if=/dev/zero",
        "of=/d/f",
        "bs=1024",
        "count=1024",
    ]);
    b.ok(&["run", "--name", "anon", "-v", "/a", "busybox", "true"]);
    b.ok(&["rm", "anon"]);
    let df = b.ok(&[
        "system",
        "df",
        "--format",
        "{{.Type}}|{{.TotalCount}}|{{.Active}}|{{.Reclaimable}}",
    ]);
    let row = df
        .lines()
        .find(|l| l.starts_with("Local Volumes|"))
        .unwrap_or_else(|| panic!("no Local Volumes row: {df}"));
    let f: Vec<&str> = row.split('|').collect();
    assert_eq!((f[1], f[2]), ("3", "1"), "{row}");
    assert!(f[3].contains("MB") || f[3].contains("kB"), "{row}");
    // --volumes: only unused anonymous volumes go (Docker 23+).
    let out = b.ok(&["system", "prune", "-f", "--volumes"]);
    assert!(out.contains("Deleted Volumes:"), "{out}");
    let mut left = lines(&b.ok(&["volume", "ls", "-q"]));
    left.sort();
    assert_eq!(left, ["big", "held"]);
}

#[test]
fn volumes_belong_to_their_namespace() {
    let b = Berth::new();
    b.ok(&["volume", "create", "shared-name"]);
    assert!(
        b.ok(&["--namespace", "k8s.io", "volume", "ls", "-q"])
            .trim()
            .is_empty()
    );
    refused(
        &b,
        &["--namespace", "k8s.io", "volume", "inspect", "shared-name"],
        "no such volume",
    );
    b.ok(&["--namespace", "k8s.io", "volume", "create", "shared-name"]);
    let a = mountpoint(&b, "shared-name");
    let other = inspect(
        &b,
        &["--namespace", "k8s.io", "volume", "inspect", "shared-name"],
    );
    assert_ne!(other["Mountpoint"].as_str().unwrap(), a.to_str().unwrap());
    b.ok(&["--namespace", "k8s.io", "volume", "rm", "shared-name"]);
    assert_eq!(lines(&b.ok(&["volume", "ls", "-q"])), ["shared-name"]);
}

#[test]
fn in_use_survives_a_daemon_restart() {
    let b = berth();
    b.ok(&[
        "create", "--name", "later", "-v", "kept:/k", "busybox", "true",
    ]);
    b.stop_daemon();
    // The next berthd knows from the record that "later" uses the volume.
    refused(&b, &["volume", "rm", "kept"], "volume is in use");
    let c = inspect(&b, &["inspect", "later"]);
    assert_eq!(c["Mounts"][0]["Name"], "kept", "{c}");
    b.ok(&["rm", "-v", "later"]);
    // -v never removes a named volume.
    assert_eq!(lines(&b.ok(&["volume", "ls", "-q"])), ["kept"]);
    b.ok(&["volume", "rm", "kept"]);
}

fn is_mounted(p: &std::path::Path) -> bool {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let want = p.to_string_lossy().replace(' ', "\\040");
    info.lines()
        .any(|l| l.split(' ').nth(4) == Some(want.as_str()))
}

/// A loop device on an ext4 image file made by the test; dropping it unmounts whatever still
/// mounts the device and detaches it, even when the test failed.
struct LoopDevice {
    dev: String,
}

impl LoopDevice {
    fn new(dir: &std::path::Path) -> LoopDevice {
        let img = dir.join("disk.img");
        std::fs::File::create(&img)
            .unwrap()
            .set_len(32 << 20)
            .unwrap();
        let mkfs = std::process::Command::new("mkfs.ext4")
            .args(["-q", "-F"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(mkfs.status.success(), "mkfs.ext4: {mkfs:?}");
        let out = std::process::Command::new("losetup")
            .args(["-f", "--show"])
            .arg(&img)
            .output()
            .unwrap();
        assert!(out.status.success(), "losetup: {out:?}");
        LoopDevice {
            dev: String::from_utf8_lossy(&out.stdout).trim().to_owned(),
        }
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        for l in info.lines() {
            // "... - ext4 /dev/loop3 rw": the source is the second field after the separator.
            let Some((head, tail)) = l.split_once(" - ") else {
                continue;
            };
            if tail.split(' ').nth(1) == Some(self.dev.as_str()) {
                if let Some(target) = head.split(' ').nth(4) {
                    let c = std::ffi::CString::new(target.replace("\\040", " ")).unwrap();
                    // SAFETY: umount2 of a mount of this test's own loop device.
                    unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                }
            }
        }
        let _ = std::process::Command::new("losetup")
            .args(["-d", &self.dev])
            .output();
    }
}

#[test]
fn volume_options_mount_tmpfs_bind_and_block_devices_while_used() {
    let b = berth();
    // tmpfs: mounted when the first user starts, shared, unmounted when the last one stops.
    b.ok(&[
        "volume",
        "create",
        "-o",
        "type=tmpfs",
        "-o",
        "device=tmpfs",
        "-o",
        "o=size=100m,uid=1000",
        "tv",
    ]);
    let v = inspect(&b, &["volume", "inspect", "tv"]);
    assert_eq!(
        v["Options"],
        serde_json::json!({"type": "tmpfs", "device": "tmpfs", "o": "size=100m,uid=1000"})
    );
    let mp = mountpoint(&b, "tv");
    assert!(!is_mounted(&mp), "mounted before any use");
    let a = b
        .ok(&["run", "-d", "-v", "tv:/data", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    assert!(is_mounted(&mp));
    let out = b.ok(&[
        "exec",
        &a,
        "sh",
        "-c",
        "grep ' /data ' /proc/mounts; stat -c %u /data; echo hi > /data/f",
    ]);
    assert!(out.contains("tmpfs /data tmpfs"), "{out}");
    assert!(out.contains("size=102400k"), "{out}");
    assert!(out.lines().any(|l| l == "1000"), "{out}");
    let c = b
        .ok(&["run", "-d", "-v", "tv:/data", "busybox", "sleep", "300"])
        .trim()
        .to_owned();
    assert_eq!(b.ok(&["exec", &c, "cat", "/data/f"]), "hi\n");
    b.ok(&["stop", "-t", "0", &a]);
    assert!(is_mounted(&mp), "unmounted while another container uses it");
    b.ok(&["stop", "-t", "0", &c]);
    assert!(
        !is_mounted(&mp),
        "still mounted after its last user stopped"
    );
    // Mounted again at the next start: a new, empty tmpfs.
    let again = b.ok(&["create", "-v", "tv:/d", "busybox", "ls", "/d"]);
    let out = b.ok(&["start", "-a", again.trim()]);
    assert!(out.trim().is_empty(), "{out}");
    b.ok(&["container", "prune", "-f"]);
    b.ok(&["volume", "rm", "tv"]);

    // A bind of a host directory.
    let host = b.dir.path().join("hostdir");
    std::fs::create_dir(&host).unwrap();
    std::fs::write(host.join("file"), "from-host\n").unwrap();
    b.ok(&[
        "volume",
        "create",
        "-o",
        "type=none",
        "-o",
        "o=bind",
        "-o",
        &format!("device={}", host.display()),
        "bv",
    ]);
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "bv:/data",
        "busybox",
        "sh",
        "-c",
        "cat /data/file; echo back > /data/new",
    ]);
    assert_eq!(out, "from-host\n");
    assert_eq!(std::fs::read_to_string(host.join("new")).unwrap(), "back\n");
    assert!(!is_mounted(&mountpoint(&b, "bv")));
    b.ok(&["volume", "rm", "bv"]);
    assert!(
        host.join("file").exists(),
        "volume rm touched the bind's source"
    );

    // A block device (a loop device on an ext4 image).
    let disk = LoopDevice::new(b.dir.path());
    b.ok(&[
        "volume",
        "create",
        "-o",
        "type=ext4",
        "-o",
        &format!("device={}", disk.dev),
        "blk",
    ]);
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "blk:/data",
        "busybox",
        "sh",
        "-c",
        "grep ' /data ' /proc/mounts; echo persisted > /data/p",
    ]);
    assert!(out.contains(&format!("{} /data ext4", disk.dev)), "{out}");
    let mp = mountpoint(&b, "blk");
    assert!(!is_mounted(&mp));
    assert!(
        !mp.join("p").exists(),
        "written beside the device, not on it"
    );
    let out = b.ok(&[
        "run",
        "--rm",
        "-v",
        "blk:/data",
        "busybox",
        "cat",
        "/data/p",
    ]);
    assert_eq!(out, "persisted\n");
    b.ok(&["volume", "rm", "blk"]);

    // A mount that fails fails the start, naming the volume, and leaves nothing mounted.
    b.ok(&[
        "volume",
        "create",
        "-o",
        "type=ext4",
        "-o",
        "device=/dev/berth-no-such-disk",
        "nodisk",
    ]);
    let err = b.fails(&["run", "--rm", "-v", "nodisk:/data", "busybox", "true"]);
    assert!(err.contains("cannot mount volume nodisk"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(!is_mounted(&mountpoint(&b, "nodisk")));
    b.ok(&["container", "prune", "-f"]);
    b.ok(&["volume", "rm", "nodisk"]);
    drop(disk);
    let loops = String::from_utf8_lossy(
        &std::process::Command::new("losetup")
            .arg("-a")
            .output()
            .unwrap()
            .stdout,
    )
    .into_owned();
    assert!(!loops.contains(b.dir.path().to_str().unwrap()), "{loops}");
}

/// An image whose `/big` volume holds many files, so copying it up takes a while.
fn load_big_volume_image(b: &Berth) {
    let mut t = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Directory);
    h.set_mode(0o755);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(0);
    h.set_mtime(1_700_000_000);
    t.append_data(&mut h, "big", std::io::empty()).unwrap();
    for i in 0..20_000 {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_uid(0);
        h.set_gid(0);
        h.set_size(8);
        h.set_mtime(1_700_000_000);
        t.append_data(&mut h, format!("big/f{i:05}"), &b"content\n"[..])
            .unwrap();
    }
    let tar_bytes = t.into_inner().unwrap();
    let diff = common::sha256_hex(&tar_bytes);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar_bytes).unwrap();
    let mut layers = common::busybox_layers();
    layers.push((gz.finish().unwrap(), diff));
    let layout = tempfile::tempdir().unwrap();
    common::write_layout_with(
        layout.path(),
        "bigvol:latest",
        &layers,
        ("linux", common::host_arch()),
        serde_json::json!({
            "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"],
            "Cmd": ["sh"],
            "Volumes": {"/big": {}},
        }),
    );
    let mut a = tar::Builder::new(Vec::new());
    a.append_dir_all(".", layout.path()).unwrap();
    let path = b.dir.path().join("bigvol.tar");
    std::fs::write(&path, a.into_inner().unwrap()).unwrap();
    b.ok(&["load", "-q", "-i", path.to_str().unwrap()]);
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn anonymous_volumes_of_a_create_killed_midway_are_removed_at_boot() {
    let b = berth();
    load_big_volume_image(&b);
    // An anonymous volume left by `rm` without -v is the user's to prune: boot keeps it.
    let kept = b
        .ok(&["create", "-v", "/keep", "busybox"])
        .trim()
        .to_owned();
    let kept_vol = inspect(&b, &["inspect", &kept])["Mounts"][0]["Name"]
        .as_str()
        .unwrap()
        .to_owned();
    b.ok(&["rm", &kept]);
    let vols = b.root().join("volumes/default");
    let mut killed_mid_copy = false;
    for _ in 0..5 {
        let daemon = b.daemon_pid().expect("berthd runs");
        let mut child = b
            .cmd(&["create", "bigvol"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // Kill berthd while the create copies the image's /big into the new volume.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        let mut hit = false;
        while std::time::Instant::now() < deadline && !hit {
            hit = std::fs::read_dir(&vols)
                .into_iter()
                .flatten()
                .flatten()
                .any(|e| e.path().join("copyup-in-progress").exists());
            if !hit && child.try_wait().unwrap().is_some() {
                break;
            }
        }
        if hit {
            // SAFETY: kill(2) of this test's own berthd.
            unsafe { libc::kill(daemon, libc::SIGKILL) };
        }
        let _ = child.wait();
        while b.daemon_pid().is_some() {
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if hit {
            killed_mid_copy = true;
            break;
        }
        // The create won the race: remove what it made and try again.
        b.ok(&["rm", "-v", "-f", b.ok(&["ps", "-aq", "-l"]).trim()]);
    }
    assert!(killed_mid_copy, "the kill never landed during the copy-up");
    // What the kill left: a half-created container record and its anonymous volume.
    let left: Vec<String> = std::fs::read_dir(&vols)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && *n != kept_vol)
        .collect();
    assert_eq!(left.len(), 1, "{left:?}");
    // The next berthd removes both; the volume a finished container left stays.
    assert!(b.ok(&["ps", "-aq"]).trim().is_empty());
    assert_eq!(
        lines(&b.ok(&["volume", "ls", "-q"])),
        std::slice::from_ref(&kept_vol)
    );
    assert!(!vols.join(&left[0]).exists());
    b.ok(&["volume", "prune", "-f"]);
    assert!(b.ok(&["volume", "ls", "-q"]).trim().is_empty());
}
