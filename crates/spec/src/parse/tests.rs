use super::*;

fn err(r: Result<impl std::fmt::Debug, Error>) -> String {
    r.expect_err("expected an error").to_string()
}

#[test]
fn bytes_accepts_docker_sizes() {
    assert_eq!(bytes("--memory", "1024").unwrap(), 1024);
    assert_eq!(bytes("--memory", "512m").unwrap(), 512 * 1024 * 1024);
    assert_eq!(bytes("--memory", "512M").unwrap(), 512 * 1024 * 1024);
    assert_eq!(bytes("--memory", "1.5g").unwrap(), 1536 * 1024 * 1024);
    assert_eq!(bytes("--memory", "10 MB").unwrap(), 10 * 1024 * 1024);
    assert_eq!(bytes("--memory", "1GiB").unwrap(), 1024 * 1024 * 1024);
    assert_eq!(bytes("--memory", "4k").unwrap(), 4096);
    assert_eq!(bytes("--memory", "1t").unwrap(), 1 << 40);
    assert_eq!(bytes("--memory", "2b").unwrap(), 2);
}

#[test]
fn bytes_rejects_garbage_naming_flag_and_value() {
    assert_eq!(
        err(bytes("--memory", "12x")),
        r#"invalid argument "12x" for "--memory": invalid size: '12x'"#
    );
    for bad in [
        "",
        "m",
        "-1",
        "1..2m",
        "1.",
        ".5m",
        "1mm",
        "1  ",
        "1e3",
        "99999999999999999999p",
    ] {
        assert!(
            bytes("--memory", bad).is_err(),
            "{bad:?} should be rejected"
        );
    }
    assert_eq!(
        err(bytes("--shm-size", "x")),
        r#"invalid argument "x" for "--shm-size": invalid size: 'x'"#
    );
    assert_eq!(
        bytes("--memory", "x").unwrap_err().reason(),
        "invalid size: 'x'"
    );
}

#[test]
fn memory_swap_allows_minus_one() {
    assert_eq!(memory_swap("-1").unwrap(), -1);
    assert_eq!(memory_swap("1g").unwrap(), 1 << 30);
    assert_eq!(
        err(memory_swap("-2")),
        r#"invalid argument "-2" for "--memory-swap": invalid size: '-2'"#
    );
}

#[test]
fn human_size_is_decimal() {
    assert_eq!(human_size("10m").unwrap(), 10_000_000);
    assert_eq!(human_size("1k").unwrap(), 1000);
    assert_eq!(human_size("3").unwrap(), 3);
    assert!(human_size("ten").is_err());
}

#[test]
fn cpus_to_nanos() {
    assert_eq!(cpus("1").unwrap(), 1_000_000_000);
    assert_eq!(cpus("1.5").unwrap(), 1_500_000_000);
    assert_eq!(cpus("0.01").unwrap(), 10_000_000);
    assert_eq!(cpus(".5").unwrap(), 500_000_000);
    assert_eq!(cpus("2.000000000000").unwrap(), 2_000_000_000);
    assert_eq!(cpus("0.000000001").unwrap(), 1);
    assert_eq!(
        err(cpus("0.0000000001")),
        r#"invalid argument "0.0000000001" for "--cpus": value is too precise"#
    );
    assert_eq!(
        err(cpus("abc")),
        r#"invalid argument "abc" for "--cpus": failed to parse abc as a rational number"#
    );
    assert!(err(cpus("-1")).contains("must not be negative"));
    assert!(cpus("").is_err());
    assert!(cpus(".").is_err());
    assert!(cpus("1.2.3").is_err());
}

#[test]
fn ulimit_forms() {
    let u = ulimit("nofile=1024:2048").unwrap();
    assert_eq!((u.name.as_str(), u.soft, u.hard), ("nofile", 1024, 2048));
    let u = ulimit("nproc=100").unwrap();
    assert_eq!((u.soft, u.hard), (100, 100));
    let u = ulimit("core=-1").unwrap();
    assert_eq!((u.soft, u.hard), (-1, -1));
    let u = ulimit("memlock=1:-1").unwrap();
    assert_eq!((u.soft, u.hard), (1, -1));
}

#[test]
fn ulimit_errors() {
    assert_eq!(
        err(ulimit("nofile")),
        r#"invalid argument "nofile" for "--ulimit": invalid ulimit argument: nofile"#
    );
    assert_eq!(
        err(ulimit("bogus=1")),
        r#"invalid argument "bogus=1" for "--ulimit": invalid ulimit type: bogus"#
    );
    assert!(
        err(ulimit("nofile=2048:1024"))
            .contains("soft limit must be less than or equal to hard limit: 2048 > 1024")
    );
    assert!(err(ulimit("nofile=1:2:3")).contains("too many limit value arguments"));
    assert!(err(ulimit("nofile=abc")).contains("not an integer"));
    assert!(err(ulimit("nofile=-5")).contains("must be -1"));
    assert!(err(ulimit("nofile=-1:10")).contains("soft limit"));
}

#[test]
fn restart_policies() {
    let r = restart("no").unwrap();
    assert_eq!((r.name.as_str(), r.maximum_retry_count), ("no", 0));
    assert_eq!(restart("").unwrap().name, "no");
    assert_eq!(restart("always").unwrap().name, "always");
    assert_eq!(restart("unless-stopped").unwrap().name, "unless-stopped");
    let r = restart("on-failure").unwrap();
    assert_eq!((r.name.as_str(), r.maximum_retry_count), ("on-failure", 0));
    let r = restart("on-failure:3").unwrap();
    assert_eq!((r.name.as_str(), r.maximum_retry_count), ("on-failure", 3));
    assert_eq!(restart("on-failure:0").unwrap().maximum_retry_count, 0);
}

#[test]
fn restart_errors() {
    assert_eq!(
        err(restart("always:3")),
        r#"invalid argument "always:3" for "--restart": maximum retry count cannot be used with restart policy 'always'"#
    );
    assert!(
        err(restart("unless-stopped:1"))
            .contains("cannot be used with restart policy 'unless-stopped'")
    );
    assert!(err(restart("no:1")).contains("cannot be used with restart policy 'no'"));
    assert!(err(restart("on-failure:-1")).contains("maximum retry count cannot be negative"));
    assert!(err(restart("on-failure:x")).contains("must be an integer"));
    assert!(err(restart("sometimes")).contains("invalid restart policy 'sometimes'"));
}

#[test]
fn volume_bind_forms() {
    let m = volume("/src:/dst").unwrap();
    assert_eq!(
        (
            m.r#type.as_str(),
            m.source.as_str(),
            m.target.as_str(),
            m.read_only
        ),
        ("bind", "/src", "/dst", false)
    );
    assert_eq!(m.options, vec![OPT_CREATE_SOURCE.to_owned()]);
    let m = volume("/src:/dst:ro").unwrap();
    assert!(m.read_only);
    let m = volume("/src:/dst:rw,rshared").unwrap();
    assert!(!m.read_only);
    assert_eq!(
        m.options,
        vec!["rshared".to_owned(), OPT_CREATE_SOURCE.to_owned()]
    );
    let m = volume("/src:/dst:ro,Z").unwrap();
    assert!(m.read_only);
    // Kept so the engine can warn that the relabel is ignored.
    assert!(m.options.iter().any(|o| o == "Z"), "{:?}", m.options);
    let m = volume("data:/dst:z").unwrap();
    assert_eq!(m.options, vec!["z".to_owned()]);
    let m = volume("./rel:/dst").unwrap();
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(Path::new(&m.source), cwd.join("./rel"));
    assert_eq!(m.r#type, "bind");
}

#[test]
fn volume_named_and_anonymous() {
    let m = volume("data:/var/lib/data").unwrap();
    assert_eq!((m.r#type.as_str(), m.source.as_str()), ("volume", "data"));
    assert!(!m.options.iter().any(|o| o == OPT_CREATE_SOURCE));
    let m = volume("/anon").unwrap();
    assert_eq!(
        (m.r#type.as_str(), m.source.as_str(), m.target.as_str()),
        ("volume", "", "/anon")
    );
    let m = volume("data:/x:nocopy").unwrap();
    assert_eq!(m.options, vec!["nocopy".to_owned()]);
    let m = volume("data:/x:ro").unwrap();
    assert!(m.read_only);
    assert!(err(volume("data:/x:rshared")).contains("propagation applies to bind mounts only"));
}

#[test]
fn volume_names_follow_dockers_rule() {
    for ok in ["ab", "data", "my-vol_1.2", "0a"] {
        assert!(valid_volume_name(ok), "{ok}");
    }
    for bad in ["", "a", "-ab", ".ab", "_ab", "a/b", "a b", "a:b", "é1"] {
        assert!(!valid_volume_name(bad), "{bad}");
    }
}

#[test]
fn mount_volume_forms() {
    let m = mount("type=volume,src=v1,dst=/d,readonly,volume-nocopy").unwrap();
    assert_eq!(
        (
            m.r#type.as_str(),
            m.source.as_str(),
            m.target.as_str(),
            m.read_only
        ),
        ("volume", "v1", "/d", true)
    );
    assert_eq!(m.options, vec!["nocopy".to_owned()]);
    // Anonymous (no source), and the default type is volume.
    let m = mount("target=/d").unwrap();
    assert_eq!((m.r#type.as_str(), m.source.as_str()), ("volume", ""));
    let m = mount("type=volume,src=v1,dst=/d,volume-nocopy=false,ro=false").unwrap();
    assert!(m.options.is_empty() && !m.read_only);
    assert!(err(mount("type=volume,src=a/b,dst=/d")).contains("invalid characters"));
    assert!(err(mount("type=volume,src=v,dst=/d,tmpfs-size=1m")).contains("cannot mix"));
    assert!(err(mount("type=bind,src=/a,dst=/d,volume-nocopy")).contains("cannot mix"));
    assert!(err(mount("type=volume,src=v,dst=/d,readonly=maybe")).contains("invalid value"));
}

#[test]
fn volume_errors() {
    assert_eq!(
        err(volume("")),
        r#"invalid argument "" for "--volume": invalid volume specification: ''"#
    );
    assert!(err(volume("/a:/b:/c:/d")).contains("invalid volume specification"));
    assert!(err(volume("/dst:ro")).contains("invalid volume specification"));
    assert!(err(volume("/src:rel")).contains("mount path must be absolute"));
    assert!(err(volume("/src:/")).contains("destination can't be '/'"));
    assert!(err(volume("/src:/dst:bogus")).contains("invalid mode: bogus"));
    assert!(err(volume("/src:/dst:ro,rw")).contains("invalid mode"));
    assert!(err(volume("/src:/dst:nocopy")).contains("nocopy applies to volumes only"));
    assert!(err(volume("a b:/dst")).contains("invalid characters for a local volume name"));
    assert!(err(volume(":/dst")).contains("invalid volume specification"));
}

#[test]
fn mount_bind_and_tmpfs() {
    let m = mount("type=bind,source=/a,target=/b,readonly").unwrap();
    assert_eq!(
        (
            m.r#type.as_str(),
            m.source.as_str(),
            m.target.as_str(),
            m.read_only
        ),
        ("bind", "/a", "/b", true)
    );
    assert!(
        m.options.is_empty(),
        "--mount binds must not carry the create marker"
    );
    let m = mount("type=bind,src=/a,dst=/b,ro=false,bind-propagation=rslave").unwrap();
    assert!(!m.read_only);
    assert_eq!(m.options, vec!["rslave".to_owned()]);
    let m = mount("type=bind,src=/a,destination=/b,bind-nonrecursive").unwrap();
    assert_eq!(m.options, vec!["bind".to_owned()]);
    let m = mount("type=tmpfs,dst=/t,tmpfs-size=64m,tmpfs-mode=1770").unwrap();
    assert_eq!(m.r#type, "tmpfs");
    assert_eq!(
        m.options,
        vec![format!("size={}", 64 * 1024 * 1024), "mode=1770".to_owned()]
    );
    let m = mount("\"src=/a,b\",type=bind,target=/c").unwrap();
    assert_eq!(m.source, "/a,b");
    let m = mount("target=/v,source=myvol").unwrap();
    assert_eq!((m.r#type.as_str(), m.source.as_str()), ("volume", "myvol"));
}

#[test]
fn mount_errors() {
    assert_eq!(
        err(mount("type=bind,source=/a")),
        r#"invalid argument "type=bind,source=/a" for "--mount": target is required"#
    );
    assert!(err(mount("type=bind,target=/b")).contains("source is required"));
    assert!(err(mount("type=bind,src=rel,target=/b")).contains("must be an absolute path"));
    assert!(err(mount("type=nfs,target=/b")).contains("invalid mount type 'nfs'"));
    assert!(
        err(mount("type=bind,src=/a,target=/b,foo=bar"))
            .contains("unexpected key 'foo' in 'foo=bar'")
    );
    assert!(
        err(mount("type=bind,src,target=/b"))
            .contains("invalid field 'src' must be a key=value pair")
    );
    assert!(
        err(mount("type=bind,src=/a,target=/b,readonly=maybe"))
            .contains("invalid value for readonly: maybe")
    );
    assert!(
        err(mount("type=bind,src=/a,target=/b,tmpfs-size=1m")).contains("cannot mix 'tmpfs-size'")
    );
    assert!(err(mount("type=tmpfs,src=/a,target=/b")).contains("source must not be specified"));
    assert!(
        err(mount("type=tmpfs,target=/b,tmpfs-mode=999")).contains("invalid value for tmpfs-mode")
    );
    assert!(
        err(mount("type=bind,src=/a,target=/b,bind-propagation=weird"))
            .contains("invalid value for bind-propagation")
    );
    assert!(err(mount("\"src=/a,target=/b")).contains("unterminated quote"));
    assert!(err(mount("type=bind,src=/a,target=relative")).contains("must be absolute"));
}

#[test]
fn tmpfs_forms() {
    let m = tmpfs("/run").unwrap();
    assert_eq!(
        (m.r#type.as_str(), m.target.as_str(), m.read_only),
        ("tmpfs", "/run", false)
    );
    assert!(m.options.is_empty());
    let m = tmpfs("/run:rw,size=64m,mode=1777,noexec").unwrap();
    assert_eq!(
        m.options,
        vec![
            format!("size={}", 64 * 1024 * 1024),
            "mode=1777".into(),
            "noexec".into()
        ]
    );
    let m = tmpfs("/ro:ro").unwrap();
    assert!(m.read_only);
    let m = tmpfs("/p:size=50%").unwrap();
    assert_eq!(m.options, vec!["size=50%".to_owned()]);
}

#[test]
fn tmpfs_errors() {
    assert_eq!(
        err(tmpfs("/run:bogus")),
        r#"invalid argument "/run:bogus" for "--tmpfs": invalid tmpfs option "bogus""#
    );
    assert!(err(tmpfs("run")).contains("must be absolute"));
    assert!(err(tmpfs(":size=1m")).contains("destination path is required"));
    assert!(err(tmpfs("/run:size=lots")).contains("invalid tmpfs option"));
    assert!(err(tmpfs("/run:mode=99")).contains("invalid tmpfs option"));
}

#[test]
fn env_file_lines() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("env");
    // SAFETY-free: set_var is unsafe in edition 2024; use a variable that surely exists.
    let home = std::env::var("PATH").unwrap();
    std::fs::write(
        &p,
        "# comment\n\nA=1\n  B=two words\nC=\nPATH\nBERTH_SPEC_SURELY_UNSET_VAR\nD=x=y\n",
    )
    .unwrap();
    let v = env_file(&p).unwrap();
    assert_eq!(
        v,
        vec![
            "A=1".to_owned(),
            "B=two words".into(),
            "C=".into(),
            format!("PATH={home}"),
            "D=x=y".into()
        ]
    );
}

#[test]
fn env_file_errors() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("env");
    std::fs::write(&p, "GOOD=1\nBAD KEY=1\n").unwrap();
    let e = err(env_file(&p));
    assert!(
        e.contains("line 2: variable 'BAD KEY' contains whitespaces"),
        "{e}"
    );
    assert!(e.contains("--env-file"), "{e}");
    std::fs::write(&p, "=v\n").unwrap();
    assert!(err(env_file(&p)).contains("no variable name"));
    std::fs::write(&p, [b'A', b'=', 0xff, b'\n']).unwrap();
    assert!(err(env_file(&p)).contains("not valid UTF-8"));
    let missing = dir.path().join("missing");
    assert!(err(env_file(&missing)).contains("cannot read the env file"));
}

#[test]
fn signals() {
    assert_eq!(signal("TERM").unwrap(), 15);
    assert_eq!(signal("SIGTERM").unwrap(), 15);
    assert_eq!(signal("sigkill").unwrap(), 9);
    assert_eq!(signal("15").unwrap(), 15);
    assert_eq!(signal("HUP").unwrap(), 1);
    assert_eq!(signal("SIGUSR1").unwrap(), libc::SIGUSR1);
    assert_eq!(signal("WINCH").unwrap(), libc::SIGWINCH);
    assert_eq!(signal("RTMIN").unwrap(), 34);
    assert_eq!(signal("SIGRTMIN+3").unwrap(), 37);
    assert_eq!(signal("RTMAX-1").unwrap(), 63);
    assert_eq!(signal("64").unwrap(), 64);
    assert_eq!(
        err(signal("FOO")),
        r#"invalid argument "FOO" for "--signal": invalid signal: FOO"#
    );
    for bad in ["0", "65", "-1", "", "RTMIN+40", "RTMAX+1", "RTMINx", "SIG"] {
        assert!(signal(bad).is_err(), "{bad:?} should be rejected");
    }
}

#[test]
fn log_opts() {
    assert_eq!(
        log_opt("max-size=10m").unwrap(),
        ("max-size".to_owned(), "10m".to_owned())
    );
    assert_eq!(
        log_opt("max-file=3").unwrap(),
        ("max-file".to_owned(), "3".to_owned())
    );
    assert_eq!(log_opt("max-size=-1").unwrap().1, "-1");
    assert_eq!(log_opt("compress=true").unwrap().1, "true");
    assert_eq!(log_opt("tag=x").unwrap().0, "tag");
    assert_eq!(
        err(log_opt("max-file=0")),
        r#"invalid argument "max-file=0" for "--log-opt": max-file cannot be less than 1"#
    );
    assert!(err(log_opt("max-file=x")).contains("invalid max-file"));
    assert!(err(log_opt("max-size=12x")).contains("invalid size: '12x'"));
    assert!(err(log_opt("max-size=0")).contains("positive"));
    assert!(err(log_opt("nope=1")).contains("unknown log opt 'nope' for json-file log driver"));
    assert!(err(log_opt("max-size")).contains("use key=value"));
    assert!(err(log_opt("compress=perhaps")).contains("invalid compress value"));
}

#[test]
fn security_opts() {
    assert_eq!(
        security_opt("seccomp=unconfined").unwrap(),
        "seccomp=unconfined"
    );
    assert!(security_opt("nope").is_err());
    assert_eq!(
        security_opt_kind("no-new-privileges").unwrap(),
        SecurityOpt::NoNewPrivileges(true)
    );
    assert_eq!(
        security_opt_kind("no-new-privileges:true").unwrap(),
        SecurityOpt::NoNewPrivileges(true)
    );
    assert_eq!(
        security_opt_kind("no-new-privileges=false").unwrap(),
        SecurityOpt::NoNewPrivileges(false)
    );
    assert_eq!(
        security_opt_kind("seccomp=unconfined").unwrap(),
        SecurityOpt::SeccompUnconfined
    );
    assert_eq!(
        security_opt_kind("seccomp:unconfined").unwrap(),
        SecurityOpt::SeccompUnconfined
    );
    assert_eq!(
        security_opt_kind("seccomp=/etc/p.json").unwrap(),
        SecurityOpt::SeccompProfile(PathBuf::from("/etc/p.json"))
    );
    assert_eq!(
        security_opt_kind("apparmor=unconfined").unwrap(),
        SecurityOpt::Ignored("apparmor=unconfined".into())
    );
    assert_eq!(
        err(security_opt_kind("bogus")),
        r#"invalid argument "bogus" for "--security-opt": Invalid --security-opt: "bogus""#
    );
    assert!(err(security_opt_kind("no-new-privileges:maybe")).contains("use true or false"));
    assert!(security_opt_kind("seccomp=").is_err());
    assert!(security_opt_kind("foo=bar").is_err());
}

#[test]
fn labels() {
    assert_eq!(label("a=b").unwrap(), ("a".to_owned(), "b".to_owned()));
    assert_eq!(label("a=b=c").unwrap(), ("a".to_owned(), "b=c".to_owned()));
    assert_eq!(label("flag").unwrap(), ("flag".to_owned(), String::new()));
    assert_eq!(
        err(label("=v")),
        r#"invalid argument "=v" for "--label": invalid label '=v': empty name"#
    );
    assert!(label("").is_err());
}
