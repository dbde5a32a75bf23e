//! Attached streams: live output, stdin, terminals.

mod common;

use common::*;

#[test]
fn attach_receives_live_output_and_sends_stdin() {
    let mut fx = Fixture::new(&["cat"]);
    let cfg = fx.config(false, true);
    let c = fx.spawn(&cfg);
    let stream = c.attach(None, true).unwrap();
    // A second, output-only attach sees the same output.
    let watcher = c.attach(None, false).unwrap();
    c.start().unwrap();
    stream.send_stdin(b"hello shim\n").unwrap();
    assert_eq!(read_until(&stream, "hello shim\n"), "hello shim\n");
    assert_eq!(read_until(&watcher, "hello shim\n"), "hello shim\n");
    stream.send_stdin(b"second\n").unwrap();
    stream.close_stdin().unwrap();
    let (out, err, exit) = collect(&stream);
    assert_eq!(out, "second\n");
    assert_eq!(err, "");
    assert_eq!(exit.unwrap().code, 0);
    let (out, _, exit) = collect(&watcher);
    assert_eq!(out, "second\n");
    assert_eq!(exit.unwrap().code, 0);
    assert_eq!(
        fx.log_entries(),
        vec![
            ("stdout".to_string(), "hello shim\n".to_string()),
            ("stdout".to_string(), "second\n".to_string())
        ]
    );
    // Attaching after the exit gives the exit at once.
    let late = fx.client().attach(None, false).unwrap();
    let (out, _, exit) = collect(&late);
    assert_eq!((out.as_str(), exit.unwrap().code), ("", 0));
}

#[test]
fn a_split_stream_reads_in_one_thread_and_writes_in_another() {
    let mut fx = Fixture::new(&[
        "sh",
        "-c",
        "while read l; do echo got-$l; done; echo bye >&2",
    ]);
    let cfg = fx.config(false, true);
    let c = fx.spawn(&cfg);
    let (reader, writer) = c.attach(None, true).unwrap().into_split().unwrap();
    c.start().unwrap();
    let t = std::thread::spawn(move || collect(&reader));
    for i in 0..100 {
        writer.send_stdin(format!("{i}\n").as_bytes()).unwrap();
    }
    writer.close_stdin().unwrap();
    let (out, err, exit) = t.join().unwrap();
    let want: String = (0..100).map(|i| format!("got-{i}\n")).collect();
    assert_eq!(out, want);
    assert_eq!(err, "bye\n");
    assert_eq!(exit.unwrap().code, 0);
}

#[test]
fn a_terminal_is_a_pty_and_resizes() {
    let mut fx = Fixture::new(&[
        "sh",
        "-c",
        "read x; stty size; [ -t 0 ] && echo is-a-tty; exit 4",
    ]);
    fx.bundle
        .edit(|v| v["process"]["terminal"] = serde_json::json!(true));
    let cfg = fx.config(true, true);
    let c = fx.spawn(&cfg);
    let stream = c.attach(None, true).unwrap();
    c.resize(None, 100, 30).unwrap();
    c.start().unwrap();
    stream.send_stdin(b"go\n").unwrap();
    let (out, err, exit) = collect(&stream);
    assert!(out.contains("30 100\r\n"), "{out:?}");
    assert!(out.contains("is-a-tty"), "{out:?}");
    assert_eq!(err, "");
    assert_eq!(exit.unwrap().code, 4);
    let log: String = fx.log_entries().into_iter().map(|(_, l)| l).collect();
    assert!(log.contains("30 100"), "{log:?}");
    // A resize on the stream itself works the same way (checked via exec below in exec.rs).
}
