//! The portmap guard removes the nat chains it saw made, and every jump to them, however the
//! jumps are worded. Root: each case runs on a thread of its own in a new network namespace,
//! where iptables starts empty and which goes away with the thread.

use std::process::Command;

use berth_testutil::host::portmap_chains;

const CHAINS: [&str; 3] = [
    "CNI-HOSTPORT-DNAT",
    "CNI-HOSTPORT-MASQ",
    "CNI-HOSTPORT-SETMARK",
];

/// The guard counts its holders per process: one case at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Run `f` on a new thread that is alone in a new network namespace.
fn in_new_netns(f: impl FnOnce() + Send + 'static) {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    std::thread::spawn(move || {
        // SAFETY: only this thread (and the commands it starts) moves to the new namespace; it
        // shares nothing namespace-dependent with the others and ends when `f` returns.
        unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
            .expect("unshare a network namespace (the test must run as root)");
        f();
    })
    .join()
    .expect("the test thread panicked");
}

/// `iptables -w -t nat ...` through a shell (rules carry quoted comments); panics on failure.
fn nat(rule: &str) {
    let st = Command::new("sh")
        .args(["-c", &format!("iptables -w -t nat {rule}")])
        .status()
        .expect("run iptables");
    assert!(st.success(), "iptables -t nat {rule}: {st}");
}

fn nat_rules() -> String {
    let out = Command::new("iptables")
        .args(["-w", "-t", "nat", "-S"])
        .output()
        .expect("run iptables");
    assert!(out.status.success(), "iptables -t nat -S: {}", out.status);
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn assert_chains_stay(left: &str) {
    for c in CHAINS {
        assert!(
            left.contains(&format!("-N {c}")),
            "{c} was removed:\n{left}"
        );
    }
}

fn make_chains_and_jumps() {
    for c in CHAINS {
        nat(&format!("-N {c}"));
    }
    // portmap's own wording, the same jump twice (two first uses at once), and jumps worded
    // as another version of portmap might.
    nat("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT");
    nat("-A PREROUTING -m addrtype --dst-type LOCAL -j CNI-HOSTPORT-DNAT");
    nat(
        "-A OUTPUT -m addrtype --dst-type LOCAL -m comment --comment \"hostport dnat\" -j CNI-HOSTPORT-DNAT",
    );
    nat("-A POSTROUTING -m comment --comment \"CNI portfwd masquerade\" -j CNI-HOSTPORT-MASQ");
    // Not portmap's: stays.
    nat("-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE");
}

#[test]
fn chains_made_under_the_guard_go_with_every_jump_to_them() {
    in_new_netns(|| {
        let guard = portmap_chains();
        make_chains_and_jumps();
        drop(guard);
        let left = nat_rules();
        assert!(!left.contains("CNI-HOSTPORT"), "left behind:\n{left}");
        assert!(
            left.contains("-A POSTROUTING -s 10.99.0.0/16 -j MASQUERADE"),
            "a rule that is not portmap's was removed:\n{left}"
        );
    });
}

#[test]
fn chains_still_holding_a_mapping_stay() {
    in_new_netns(|| {
        let guard = portmap_chains();
        make_chains_and_jumps();
        nat("-A CNI-HOSTPORT-DNAT -p tcp --dport 8080 -j RETURN");
        drop(guard);
        let left = nat_rules();
        assert_chains_stay(&left);
        assert!(
            left.contains("-j CNI-HOSTPORT-MASQ"),
            "a jump was removed:\n{left}"
        );
    });
}

#[test]
fn chains_that_were_there_before_stay() {
    in_new_netns(|| {
        make_chains_and_jumps();
        let guard = portmap_chains();
        drop(guard);
        let left = nat_rules();
        assert_chains_stay(&left);
    });
}
