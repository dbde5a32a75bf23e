//! Layer application against real directories (run as root: ownership, devices, trusted.*
//! xattrs). Every archive is built in memory; every test checks that a sentinel directory
//! outside the destination stays empty.

use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use berth_unpack::{Compression, Error, Options, Whiteouts, apply_layer};
use sha2::Digest as _;
use tar::{EntryType, Header};

/// A destination and a sentinel directory beside it, removed on drop.
struct Fixture {
    _tmp: tempfile::TempDir,
    dest: PathBuf,
    outside: PathBuf,
}

impl Fixture {
    fn new() -> Fixture {
        berth_testutil::require_root();
        let tmp = tempfile::tempdir().unwrap();
        let dest = tmp.path().join("dest");
        let outside = tmp.path().join("outside");
        std::fs::create_dir(&dest).unwrap();
        std::fs::create_dir(&outside).unwrap();
        Fixture {
            _tmp: tmp,
            dest,
            outside,
        }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.dest.join(rel)
    }

    fn apply(&self, tar: &[u8], whiteouts: Whiteouts) -> Result<berth_unpack::Stats, Error> {
        let opts = Options {
            whiteouts,
            ..Options::default()
        };
        self.apply_opts(tar, &opts)
    }

    fn apply_opts(&self, tar: &[u8], opts: &Options) -> Result<berth_unpack::Stats, Error> {
        let r = apply_layer(tar, Compression::None, &self.dest, opts);
        self.assert_outside_untouched();
        r
    }

    fn assert_outside_untouched(&self) {
        let n = std::fs::read_dir(&self.outside).unwrap().count();
        assert_eq!(n, 0, "something was written outside the destination");
    }
}

/// An archive under construction, with raw control over names.
struct Tar(tar::Builder<Vec<u8>>);

impl Tar {
    fn new() -> Tar {
        Tar(tar::Builder::new(Vec::new()))
    }

    fn header(kind: EntryType, mode: u32, owner: (u64, u64), mtime: u64) -> Header {
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        h.set_mtime(mtime);
        h.set_size(0);
        h
    }

    /// Append with a raw name (no checks: `..` and absolute names allowed).
    fn raw(&mut self, mut h: Header, name: &[u8], link: &[u8], data: &[u8]) -> &mut Tar {
        {
            let gnu = h.as_gnu_mut().unwrap();
            assert!(name.len() < 100 && link.len() < 100);
            gnu.name = [0; 100];
            gnu.name[..name.len()].copy_from_slice(name);
            gnu.linkname = [0; 100];
            gnu.linkname[..link.len()].copy_from_slice(link);
        }
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.0.append(&h, data).unwrap();
        self
    }

    fn file(&mut self, name: &str, data: &[u8]) -> &mut Tar {
        self.raw(
            Tar::header(EntryType::Regular, 0o644, (0, 0), 1_000_000),
            name.as_bytes(),
            b"",
            data,
        )
    }

    fn dir(&mut self, name: &str) -> &mut Tar {
        self.raw(
            Tar::header(EntryType::Directory, 0o755, (0, 0), 1_000_000),
            name.as_bytes(),
            b"",
            b"",
        )
    }

    fn symlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(
            Tar::header(EntryType::Symlink, 0o777, (0, 0), 1_000_000),
            name.as_bytes(),
            target.as_bytes(),
            b"",
        )
    }

    fn hardlink(&mut self, name: &str, target: &str) -> &mut Tar {
        self.raw(
            Tar::header(EntryType::Link, 0o644, (0, 0), 1_000_000),
            name.as_bytes(),
            target.as_bytes(),
            b"",
        )
    }

    /// A PAX extended header for the next entry.
    fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Tar {
        let mut data = Vec::new();
        for (k, v) in records {
            // "<len> <key>=<value>\n", where <len> counts itself.
            let rest = 1 + k.len() + 1 + v.len() + 1;
            let mut len = rest + 1;
            while len.to_string().len() + rest != len {
                len = len.to_string().len() + rest;
            }
            data.extend_from_slice(format!("{len} {k}=").as_bytes());
            data.extend_from_slice(v);
            data.push(b'\n');
        }
        let h = Tar::header(EntryType::XHeader, 0o644, (0, 0), 0);
        self.raw(h, b"PaxHeaders/x", b"", &data)
    }

    fn finish(&mut self) -> Vec<u8> {
        let b = std::mem::replace(&mut self.0, tar::Builder::new(Vec::new()));
        b.into_inner().unwrap()
    }
}

fn meta(p: &Path) -> std::fs::Metadata {
    std::fs::symlink_metadata(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn getxattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    match rustix::fs::lgetxattr(p, name, &mut buf) {
        Ok(n) => Some(buf[..n].to_vec()),
        Err(_) => None,
    }
}

#[test]
fn every_entry_type_with_its_metadata() {
    let f = Fixture::new();
    let mut t = Tar::new();
    t.raw(
        Tar::header(EntryType::Directory, 0o2750, (1000, 1001), 1_111_111),
        b"d/",
        b"",
        b"",
    );
    t.raw(
        Tar::header(EntryType::Regular, 0o640, (1002, 1003), 1_222_222),
        b"d/file",
        b"",
        b"hello",
    );
    t.raw(
        Tar::header(EntryType::Regular, 0o4755, (0, 0), 1_333_333),
        b"d/suid",
        b"",
        b"#!/bin/sh\n",
    );
    t.raw(
        Tar::header(EntryType::Regular, 0o6711, (1004, 1005), 1_333_333),
        b"d/suid-owned",
        b"",
        b"x",
    );
    t.raw(
        Tar::header(EntryType::Directory, 0o1777, (0, 0), 1_444_444),
        b"tmp/",
        b"",
        b"",
    );
    t.raw(
        Tar::header(EntryType::Symlink, 0o777, (1006, 1007), 1_555_555),
        b"d/link",
        b"file",
        b"",
    );
    t.raw(
        Tar::header(EntryType::Link, 0o640, (0, 0), 1_000),
        b"d/hard",
        b"d/file",
        b"",
    );
    let mut h = Tar::header(EntryType::Char, 0o666, (0, 5), 1_666_666);
    h.set_device_major(1).unwrap();
    h.set_device_minor(3).unwrap();
    t.raw(h, b"dev/null", b"", b"");
    let mut h = Tar::header(EntryType::Block, 0o660, (0, 6), 1_666_666);
    h.set_device_major(7).unwrap();
    h.set_device_minor(0).unwrap();
    t.raw(h, b"dev/loop0", b"", b"");
    t.raw(
        Tar::header(EntryType::Fifo, 0o620, (1008, 1009), 1_777_777),
        b"fifo",
        b"",
        b"",
    );
    // A file larger than one write buffer, with varied content.
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 % 251) as u8).collect();
    t.file("big", &big);
    let tar = t.finish();
    let stats = f.apply(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(stats.entries, 11);
    assert_eq!(stats.tar_bytes, tar.len() as u64);
    assert_eq!(
        stats.diff_id.to_string(),
        format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar)))
    );

    let m = meta(&f.p("d"));
    assert!(m.is_dir());
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o2750, 1000, 1001, 1_111_111)
    );
    let m = meta(&f.p("d/file"));
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime(), m.nlink()),
        (0o640, 1002, 1003, 1_222_222, 2)
    );
    assert_eq!(std::fs::read(f.p("d/file")).unwrap(), b"hello");
    assert_eq!(meta(&f.p("d/hard")).ino(), m.ino());
    let m = meta(&f.p("d/suid"));
    assert_eq!((m.mode() & 0o7777, m.uid(), m.gid()), (0o4755, 0, 0));
    let m = meta(&f.p("d/suid-owned"));
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid()),
        (0o6711, 1004, 1005),
        "set-id bits survive the chown"
    );
    let m = meta(&f.p("tmp"));
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o1777, 1_444_444));
    let m = meta(&f.p("d/link"));
    assert!(m.file_type().is_symlink());
    assert_eq!((m.uid(), m.gid(), m.mtime()), (1006, 1007, 1_555_555));
    assert_eq!(
        std::fs::read_link(f.p("d/link")).unwrap(),
        Path::new("file")
    );
    let m = meta(&f.p("dev/null"));
    assert!(m.file_type().is_char_device());
    assert_eq!(
        (m.rdev(), m.mode() & 0o7777, m.gid(), m.mtime()),
        (rustix::fs::makedev(1, 3), 0o666, 5, 1_666_666)
    );
    let m = meta(&f.p("dev/loop0"));
    assert!(m.file_type().is_block_device());
    assert_eq!(
        (m.rdev(), m.mode() & 0o7777),
        (rustix::fs::makedev(7, 0), 0o660)
    );
    let m = meta(&f.p("fifo"));
    assert!(m.file_type().is_fifo());
    assert_eq!(
        (m.mode() & 0o7777, m.uid(), m.gid(), m.mtime()),
        (0o620, 1008, 1009, 1_777_777)
    );
    assert_eq!(std::fs::read(f.p("big")).unwrap(), big);
    // Implicit parents exist.
    assert!(meta(&f.p("dev")).is_dir());
}

#[test]
fn long_names_pax_times_and_xattrs() {
    let f = Fixture::new();
    let long = format!("{}/{}", "a".repeat(120), "b".repeat(150));
    let mut b = tar::Builder::new(Vec::new());
    let mut h = Header::new_gnu();
    h.set_entry_type(EntryType::Regular);
    h.set_mode(0o644);
    h.set_mtime(5);
    h.set_uid(0);
    h.set_gid(0);
    h.set_size(3);
    b.append_data(&mut h, &long, &b"abc"[..]).unwrap();
    let mut t = Tar(b);
    t.pax(&[
        ("mtime", b"1700000000.123456789"),
        ("SCHILY.xattr.user.color", b"blue"),
        ("SCHILY.xattr.trusted.secret", b"\x00\x01bin"),
        ("SCHILY.xattr.trusted.overlay.redirect", b"/etc"),
        ("path", b"pax/named-by-pax"),
    ]);
    t.file("ignored-name", b"pax");
    t.pax(&[("SCHILY.xattr.user.d", b"dir")]);
    t.dir("xdir/");
    let tar = t.finish();
    f.apply(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(std::fs::read(f.p(&long)).unwrap(), b"abc");
    let p = f.p("pax/named-by-pax");
    assert_eq!(std::fs::read(&p).unwrap(), b"pax");
    assert!(!f.p("ignored-name").exists());
    let m = meta(&p);
    assert_eq!((m.mtime(), m.mtime_nsec()), (1_700_000_000, 123_456_789));
    assert_eq!(getxattr(&p, "user.color").as_deref(), Some(&b"blue"[..]));
    assert_eq!(
        getxattr(&p, "trusted.secret").as_deref(),
        Some(&b"\x00\x01bin"[..])
    );
    assert_eq!(
        getxattr(&p, "trusted.overlay.redirect"),
        None,
        "a layer must not forge overlayfs metadata"
    );
    assert_eq!(
        getxattr(&f.p("xdir"), "user.d").as_deref(),
        Some(&b"dir"[..])
    );
}

#[test]
fn directory_times_are_set_after_their_children() {
    let f = Fixture::new();
    let mut t = Tar::new();
    t.raw(
        Tar::header(EntryType::Directory, 0o755, (0, 0), 42),
        b"a/",
        b"",
        b"",
    );
    t.raw(
        Tar::header(EntryType::Directory, 0o555, (0, 0), 43),
        b"a/b/",
        b"",
        b"",
    );
    t.file("a/b/c", b"1").file("a/d", b"2").symlink("a/e", "c");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    assert_eq!(meta(&f.p("a")).mtime(), 42);
    let m = meta(&f.p("a/b"));
    assert_eq!((m.mtime(), m.mode() & 0o7777), (43, 0o555));
}

#[test]
fn overlay_whiteouts_and_opaque_directories() {
    let f = Fixture::new();
    let mut t = Tar::new();
    t.file(".wh.gone", b"")
        .dir("sub/")
        .file("sub/.wh.gone2", b"")
        .dir("opq/")
        .file("opq/early", b"e")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/late", b"l")
        // Hidden and recreated in the same layer: the entry wins over its whiteout.
        .file("same", b"s")
        .file(".wh.same", b"")
        // Whiteout in a directory the layer never lists.
        .file("implicit/deep/.wh.x", b"")
        // An opaque marker before its directory's entry.
        .file("opq2/.wh..wh..opq", b"")
        .dir("opq2/")
        .file("opq2/child", b"c")
        .file(".wh..wh.plnk", b"");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    for wh in ["gone", "sub/gone2", "implicit/deep/x"] {
        let m = meta(&f.p(wh));
        assert!(m.file_type().is_char_device(), "{wh}");
        assert_eq!((m.rdev(), m.uid(), m.gid()), (0, 0, 0), "{wh}");
    }
    for d in ["opq", "opq2"] {
        assert_eq!(
            getxattr(&f.p(d), "trusted.overlay.opaque").as_deref(),
            Some(&b"y"[..]),
            "{d}"
        );
    }
    assert_eq!(std::fs::read(f.p("opq/early")).unwrap(), b"e");
    assert_eq!(std::fs::read(f.p("opq/late")).unwrap(), b"l");
    assert_eq!(std::fs::read(f.p("opq2/child")).unwrap(), b"c");
    assert_eq!(std::fs::read(f.p("same")).unwrap(), b"s");
    assert!(getxattr(&f.p("sub"), "trusted.overlay.opaque").is_none());
    assert!(!f.p(".wh..wh.plnk").exists());
    assert!(!f.p("..wh.plnk").exists());
}

#[test]
fn apply_mode_whiteouts_delete_lower_content_only() {
    let f = Fixture::new();
    // The "lower layers".
    let mut t = Tar::new();
    t.file("old", b"o")
        .file("dir/a", b"a")
        .file("dir/sub/b", b"b")
        .symlink("dir/link", "/etc")
        .file("opq/lowerfile", b"x")
        .file("opq/keptdir/lower2", b"x")
        .file("opq/lowerdir/x", b"x")
        .file("replaced/inner", b"x");
    f.apply(&t.finish(), Whiteouts::Apply).unwrap();
    // The layer.
    let mut t = Tar::new();
    t.file(".wh.old", b"")
        .file("dir/.wh.sub", b"")
        .file("dir/.wh.link", b"")
        .file("dir/.wh.missing", b"")
        .file("nodir/.wh.x", b"")
        .dir("opq/")
        .file("opq/early", b"e")
        .dir("opq/keptdir/")
        .file("opq/keptdir/mine", b"m")
        .file("opq/.wh..wh..opq", b"")
        .file("opq/late", b"l")
        // Same-layer entries are not hidden by their own whiteouts.
        .file("new", b"n")
        .file(".wh.new", b"")
        // A file over a lower directory replaces it.
        .file("replaced", b"file now");
    f.apply(&t.finish(), Whiteouts::Apply).unwrap();
    assert!(!f.p("old").exists());
    assert!(!f.p("dir/sub").exists());
    assert!(std::fs::symlink_metadata(f.p("dir/link")).is_err());
    assert_eq!(std::fs::read(f.p("dir/a")).unwrap(), b"a");
    assert!(!f.p("nodir").exists(), "whiteouts create no directories");
    assert!(!f.p("opq/lowerfile").exists());
    assert!(!f.p("opq/lowerdir").exists());
    assert!(!f.p("opq/keptdir/lower2").exists());
    assert_eq!(std::fs::read(f.p("opq/keptdir/mine")).unwrap(), b"m");
    assert_eq!(std::fs::read(f.p("opq/early")).unwrap(), b"e");
    assert_eq!(std::fs::read(f.p("opq/late")).unwrap(), b"l");
    assert_eq!(std::fs::read(f.p("new")).unwrap(), b"n");
    assert_eq!(std::fs::read(f.p("replaced")).unwrap(), b"file now");
    assert!(std::fs::metadata("/etc/passwd").is_ok());
}

#[test]
fn existing_entries_are_replaced_never_followed() {
    let f = Fixture::new();
    let victim = f.outside.join("victim");
    let mut t = Tar::new();
    t.symlink("f", victim.to_str().unwrap())
        .file("f", b"inside")
        .symlink("d", f.outside.to_str().unwrap())
        .dir("d/")
        .file("d/x", b"in d")
        .file("x", b"1")
        .file("x", b"2")
        .dir("keep/")
        .file("keep/a", b"a")
        .dir("keep/")
        .file("gone/a", b"a")
        .symlink("gone", "keep")
        .file("dev", b"")
        .dir("dev/");
    f.apply(&t.finish(), Whiteouts::Apply).unwrap();
    assert!(meta(&f.p("f")).is_file());
    assert_eq!(std::fs::read(f.p("f")).unwrap(), b"inside");
    assert!(meta(&f.p("d")).is_dir());
    assert_eq!(std::fs::read(f.p("d/x")).unwrap(), b"in d");
    assert_eq!(std::fs::read(f.p("x")).unwrap(), b"2");
    assert_eq!(std::fs::read(f.p("keep/a")).unwrap(), b"a");
    assert!(meta(&f.p("gone")).file_type().is_symlink());
    assert!(meta(&f.p("dev")).is_dir());
}

#[test]
fn compression_none_gzip_zstd_give_one_diff_id() {
    let mut t = Tar::new();
    t.file("a", &b"some content ".repeat(10_000)).dir("b/");
    let tar = t.finish();
    let expected = format!("sha256:{}", hex::encode(sha2::Sha256::digest(&tar)));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    let zst = zstd::encode_all(&tar[..], 3).unwrap();
    for (blob, c) in [
        (&tar, Compression::None),
        (&gz, Compression::Gzip),
        (&zst, Compression::Zstd),
    ] {
        assert_eq!(Compression::sniff(blob), c);
        let f = Fixture::new();
        let stats = apply_layer(&blob[..], c, &f.dest, &Options::default()).unwrap();
        assert_eq!(stats.diff_id.to_string(), expected, "{c:?}");
        assert_eq!(stats.tar_bytes, tar.len() as u64);
        assert_eq!(stats.entries, 2);
        assert_eq!(
            std::fs::read(f.p("a")).unwrap(),
            b"some content ".repeat(10_000)
        );
        let (d, n) = berth_unpack::diff_id(&blob[..], c).unwrap();
        assert_eq!((d.to_string(), n), (expected.clone(), tar.len() as u64));
    }
    // A corrupt or truncated stream is an error.
    let f = Fixture::new();
    let e = apply_layer(
        &gz[..gz.len() / 2],
        Compression::Gzip,
        &f.dest,
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
    let e = apply_layer(&tar[..], Compression::Zstd, &f.dest, &Options::default()).unwrap_err();
    assert!(matches!(e, Error::Read { .. }), "{e}");
}

#[test]
fn a_tar_cut_inside_an_entry_is_an_error() {
    let mut t = Tar::new();
    t.file("a", &[7u8; 1000]).file("b", b"more");
    let tar = t.finish();
    // a's header is 512 bytes, its data 1000, padded to 1024. Cut inside the data, inside
    // the padding (which the parser skips rather than reads), and inside b's header.
    for cut in [512 + 500, 512 + 1000 + 10, 1536 + 100] {
        let f = Fixture::new();
        let e = f.apply(&tar[..cut], Whiteouts::Overlay).unwrap_err();
        assert!(matches!(e, Error::Read { .. }), "cut at {cut}: {e}");
    }
    // Whole entries and no end-of-archive blocks: what is there is applied.
    let f = Fixture::new();
    let stats = f.apply(&tar[..1536], Whiteouts::Overlay).unwrap();
    assert_eq!(stats.entries, 1);
    assert_eq!(std::fs::read(f.p("a")).unwrap(), vec![7u8; 1000]);
}

#[test]
fn dotdot_escape_is_refused() {
    for name in ["../escape", "a/../../escape", "./../outside/escape"] {
        let f = Fixture::new();
        let mut t = Tar::new();
        t.file(name, b"x");
        let e = f.apply(&t.finish(), Whiteouts::Overlay).unwrap_err();
        assert!(matches!(e, Error::UnsafePath { .. }), "{name}: {e}");
        assert!(e.to_string().contains(".."), "{e}");
    }
    // A `..` that stays inside is fine.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.file("a/../b", b"x");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    assert!(f.p("b").is_file());
}

#[test]
fn absolute_names_stay_inside() {
    let f = Fixture::new();
    let target = f.outside.join("abs");
    let mut t = Tar::new();
    t.file(target.to_str().unwrap(), b"x");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    let inside = f.dest.join(target.strip_prefix("/").unwrap());
    assert_eq!(std::fs::read(inside).unwrap(), b"x");
}

#[test]
fn symlinked_parents_cannot_lead_outside() {
    // An absolute symlink to a directory outside, then a file through it.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.symlink("evil", f.outside.to_str().unwrap())
        .file("evil/pwned", b"x");
    // Either refused or written inside the layer; never outside.
    let _ = f.apply(&t.finish(), Whiteouts::Apply);

    // A relative symlink climbing out, then a directory and a file through it.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.symlink("up", "../../../../../../../..")
        .file("up/pwned", b"x")
        .symlink("tmpx", "/tmp/x")
        .file("tmpx/pwned", b"x");
    let r = f.apply(&t.finish(), Whiteouts::Apply);
    if r.is_ok() {
        // `up` resolves to the layer root itself.
        assert!(f.p("pwned").is_file());
    }
    assert!(!Path::new("/pwned").exists());
    assert!(!Path::new("/tmp/x/pwned").exists());

    // The link target exists inside the layer: followed, clamped to the root.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.dir("real/")
        .symlink("lnk", "/real")
        .file("lnk/file", b"via link");
    f.apply(&t.finish(), Whiteouts::Apply).unwrap();
    assert_eq!(std::fs::read(f.p("real/file")).unwrap(), b"via link");
    assert!(meta(&f.p("lnk")).file_type().is_symlink());
}

#[test]
fn final_symlink_is_replaced_not_written_through() {
    let f = Fixture::new();
    let victim = f.outside.join("victim");
    let mut t = Tar::new();
    t.symlink("link", victim.to_str().unwrap())
        .file("link", b"x")
        .symlink("link2", "../outside/victim2")
        .hardlink("link2", "link");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    assert!(!victim.exists());
    assert!(meta(&f.p("link")).is_file());
    assert_eq!(meta(&f.p("link2")).ino(), meta(&f.p("link")).ino());
}

#[test]
fn hard_links_cannot_reach_outside() {
    let before = meta(Path::new("/etc/passwd")).nlink();
    for (setup, link) in [
        (None, "/etc/passwd"),
        (None, "../../../../etc/passwd"),
        (Some(("s", "/etc")), "s/passwd"),
        (Some(("s", "../../../../../etc")), "s/passwd"),
    ] {
        let f = Fixture::new();
        let mut t = Tar::new();
        if let Some((name, target)) = setup {
            t.symlink(name, target);
        }
        t.hardlink("h", link);
        let r = f.apply(&t.finish(), Whiteouts::Apply);
        assert!(r.is_err(), "hard link to {link} was accepted");
        if let Ok(m) = std::fs::symlink_metadata(f.p("h")) {
            assert_ne!(m.ino(), meta(Path::new("/etc/passwd")).ino());
        }
    }
    assert_eq!(meta(Path::new("/etc/passwd")).nlink(), before);

    // A hard link to a symlink links the symlink itself, not what it points to.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.symlink("s", "/etc/passwd").hardlink("h", "s");
    f.apply(&t.finish(), Whiteouts::Apply).unwrap();
    assert!(meta(&f.p("h")).file_type().is_symlink());
    assert_eq!(meta(Path::new("/etc/passwd")).nlink(), before);
}

#[test]
fn decompression_bomb_is_bounded() {
    // 64 MiB of zeros gzips to about 64 KiB.
    let mut t = Tar::new();
    t.file("zeros", &vec![0u8; 64 << 20]);
    let tar = t.finish();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&tar).unwrap();
    let gz = gz.finish().unwrap();
    assert!(gz.len() < 1 << 20);
    let f = Fixture::new();
    let opts = Options {
        max_bytes: 8 << 20,
        ..Options::default()
    };
    let e = apply_layer(&gz[..], Compression::Gzip, &f.dest, &opts).unwrap_err();
    assert!(matches!(e, Error::TooLarge { limit: 8388608 }), "{e}");
    assert!(e.to_string().contains("8388608"), "{e}");

    // Within the limit, the zeros become a hole.
    let f = Fixture::new();
    apply_layer(&gz[..], Compression::Gzip, &f.dest, &Options::default()).unwrap();
    let m = meta(&f.p("zeros"));
    assert_eq!(m.len(), 64 << 20);
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());

    // Too many entries.
    let mut t = Tar::new();
    for i in 0..10 {
        t.file(&format!("f{i}"), b"");
    }
    let f = Fixture::new();
    let opts = Options {
        max_entries: 5,
        ..Options::default()
    };
    let e = f.apply_opts(&t.finish(), &opts).unwrap_err();
    assert!(matches!(e, Error::TooManyEntries { limit: 5 }), "{e}");
}

/// A GNU sparse member of apparent size `real` holding `data` at its very end.
fn sparse_tar(name: &str, real: u64, data: &[u8]) -> Vec<u8> {
    fn num(field: &mut [u8; 12], v: u64) {
        // Base-256: the high bit of the first byte set, then the value big-endian.
        *field = [0; 12];
        field[0] = 0x80;
        field[4..].copy_from_slice(&v.to_be_bytes());
    }
    let mut h = Tar::header(EntryType::GNUSparse, 0o644, (0, 0), 1_000_000);
    {
        let gnu = h.as_gnu_mut().unwrap();
        num(&mut gnu.sparse[0].offset, real - data.len() as u64);
        num(&mut gnu.sparse[0].numbytes, data.len() as u64);
        num(&mut gnu.realsize, real);
    }
    let mut t = Tar::new();
    t.raw(h, name.as_bytes(), b"", data).dir("after/");
    t.finish()
}

#[test]
fn huge_sparse_file_is_refused_or_kept_sparse() {
    // 1 TiB apparent size in a tiny stream: over the default limit.
    let f = Fixture::new();
    let tar = sparse_tar("huge", 1 << 40, &[7u8; 512]);
    assert!(tar.len() < 10_000);
    let e = f.apply(&tar, Whiteouts::Overlay).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");

    // 256 MiB apparent size: written with holes, not 256 MiB of disk.
    let f = Fixture::new();
    let real = 256u64 << 20;
    let tar = sparse_tar("sparse", real, &[7u8; 512]);
    let stats = f.apply(&tar, Whiteouts::Overlay).unwrap();
    assert_eq!(stats.entries, 2);
    let m = meta(&f.p("sparse"));
    assert_eq!(m.len(), real);
    assert!(m.blocks() * 512 < 1 << 20, "{} blocks", m.blocks());
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(f.p("sparse")).unwrap();
    file.seek(SeekFrom::Start(real - 512)).unwrap();
    let mut tail = Vec::new();
    file.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, vec![7u8; 512]);
    assert!(f.p("after").is_dir());
}

#[test]
fn whiteout_names_are_checked() {
    for name in [".wh..", "a/.wh.", "../.wh.x"] {
        let f = Fixture::new();
        let mut t = Tar::new();
        t.file(name, b"");
        assert!(
            f.apply(&t.finish(), Whiteouts::Apply).is_err(),
            "{name} was accepted"
        );
    }
    // Deleting the parent with a whiteout is impossible: `.wh...` names `..`.
    let f = Fixture::new();
    let mut t = Tar::new();
    t.file("a/x", b"").file("a/.wh...", b"");
    assert!(f.apply(&t.finish(), Whiteouts::Apply).is_err());
    assert!(f.p("a/x").exists());
}

#[test]
fn root_entry_and_unknown_destination() {
    let f = Fixture::new();
    let mut t = Tar::new();
    t.raw(
        Tar::header(EntryType::Directory, 0o750, (0, 0), 77),
        b"./",
        b"",
        b"",
    )
    .file("a", b"");
    f.apply(&t.finish(), Whiteouts::Overlay).unwrap();
    let m = meta(&f.dest);
    assert_eq!((m.mode() & 0o7777, m.mtime()), (0o750, 77));
    // A root entry that is not a directory.
    let mut t = Tar::new();
    t.file("/", b"x");
    assert!(matches!(
        f.apply(&t.finish(), Whiteouts::Overlay),
        Err(Error::UnsafePath { .. })
    ));
    let e = apply_layer(
        &b""[..],
        Compression::None,
        &f.dest.join("missing"),
        &Options::default(),
    )
    .unwrap_err();
    assert!(matches!(e, Error::Dest { .. }), "{e}");
}
