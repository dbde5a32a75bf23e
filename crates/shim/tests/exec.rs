//! Processes run in a running container.

mod common;

use berth_shim::ExecRequest;
use common::*;

fn process(args: &[&str], tty: bool) -> oci_spec::runtime::Process {
    let mut v = berth_testutil::default_config(args)["process"].clone();
    v["terminal"] = serde_json::json!(tty);
    serde_json::from_value(v).unwrap()
}

fn req(id: &str, args: &[&str], tty: bool, stdin: bool, detach: bool) -> ExecRequest {
    ExecRequest {
        id: id.into(),
        process: process(args, tty),
        stdin,
        detach,
        size: None,
    }
}

#[test]
fn exec_with_pipes_tty_stdin_and_detach() {
    let mut fx = Fixture::new(&["sleep", "1000"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();

    let h = c
        .exec(&req(
            "e1",
            &["sh", "-c", "echo hi; echo oops >&2; exit 5"],
            false,
            false,
            false,
        ))
        .unwrap();
    assert!(h.pid > 0);
    let (out, err, exit) = collect(h.stream.as_ref().unwrap());
    assert_eq!((out.as_str(), err.as_str()), ("hi\n", "oops\n"));
    assert_eq!(exit.unwrap().code, 5);
    assert_eq!(c.wait_exec("e1").unwrap().code, 5);

    let mut r = req(
        "e2",
        &["sh", "-c", "stty size; [ -t 1 ] && echo tty"],
        true,
        false,
        false,
    );
    r.size = Some((90, 20));
    let h = c.exec(&r).unwrap();
    let (out, _, exit) = collect(h.stream.as_ref().unwrap());
    assert!(out.contains("20 90\r\n") && out.contains("tty"), "{out:?}");
    assert_eq!(exit.unwrap().code, 0);

    let h = c.exec(&req("e3", &["cat"], false, true, false)).unwrap();
    let s = h.stream.unwrap();
    s.send_stdin(b"abc").unwrap();
    s.close_stdin().unwrap();
    let (out, _, exit) = collect(&s);
    assert_eq!((out.as_str(), exit.unwrap().code), ("abc", 0));

    let h = c
        .exec(&req(
            "e4",
            &["sh", "-c", "echo detached > /tmp/marker; exit 2"],
            false,
            false,
            true,
        ))
        .unwrap();
    assert!(h.stream.is_none());
    assert_eq!(c.wait_exec("e4").unwrap().code, 2);
    let h = c
        .exec(&req("e5", &["cat", "/tmp/marker"], false, false, false))
        .unwrap();
    let (out, _, _) = collect(h.stream.as_ref().unwrap());
    assert_eq!(out, "detached\n");

    // A terminal exec resized while it runs.
    let h = c
        .exec(&req(
            "e6",
            &["sh", "-c", "read x; stty size"],
            true,
            true,
            false,
        ))
        .unwrap();
    let s = h.stream.unwrap();
    s.resize(77, 11).unwrap();
    c.resize(Some("e6"), 78, 12).unwrap();
    s.send_stdin(b"go\n").unwrap();
    let (out, _, exit) = collect(&s);
    assert!(out.contains("12 78"), "{out:?}");
    assert_eq!(exit.unwrap().code, 0);

    // Exec output is not the container's log.
    assert!(fx.log_entries().is_empty());
}

#[test]
fn exec_failures_carry_the_runtime_message() {
    let mut fx = Fixture::new(&["sleep", "1000"]);
    let cfg = fx.config(false, false);
    let c = fx.spawn(&cfg);
    c.start().unwrap();
    let err = c
        .exec(&req("bad", &["no-such-program"], false, false, false))
        .unwrap_err();
    assert!(matches!(err, berth_shim::Error::Runtime(_)), "{err:?}");
    assert!(
        err.to_string().contains("executable file not found"),
        "{err}"
    );
    assert_eq!(err.exit_code_hint(), Some(127));
    // The id is free again, and duplicates are refused.
    c.exec(&req("bad", &["true"], false, false, true)).unwrap();
    let err = c
        .exec(&req("bad", &["true"], false, false, true))
        .unwrap_err();
    assert!(err.to_string().contains("already exists"), "{err}");
    let err = c.wait_exec("nope").unwrap_err();
    assert!(matches!(err, berth_shim::Error::Refused(_)), "{err:?}");
    assert!(c.attach(Some("nope"), false).is_err());
    // The exec's files do not pile up in the bundle.
    assert_eq!(c.wait_exec("bad").unwrap().code, 0);
    let leftovers: Vec<_> = std::fs::read_dir(fx.bundle.path())
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("exec-") || n.starts_with("console"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
