//! Compile-time tests: no privileges, nothing loaded. Programs are checked by running them in the
//! small BPF interpreter from `bpf::tests` against `(arch, nr, args)` tuples.

use libseccomp::{ScmpArch, ScmpSyscall};
use oci_spec::runtime::LinuxSeccomp;
use serde_json::{Value, json};

use crate::bpf::{Insn, tests::run};
use crate::*;

const ALLOW: u32 = 0x7fff_0000;
const KILL_PROCESS: u32 = 0x8000_0000;
const LOG: u32 = 0x7ffc_0000;
const TRACE: u32 = 0x7ff0_0000;
const NOTIFY: u32 = 0x7fc0_0000;
const fn errno(e: u32) -> u32 {
    0x0005_0000 | e
}
const ENOSYS: u32 = errno(38);

fn profile(v: Value) -> LinuxSeccomp {
    serde_json::from_value(v).expect("test profile parses")
}

fn compile_ok(v: Value) -> Program {
    let p = compile(&profile(v)).expect("profile compiles");
    assert!(!p.instructions.is_empty());
    assert!(p.instructions.len() <= MAX_INSTRUCTIONS);
    p.prepare()
        .expect("compiled program passes the structural check");
    p
}

fn compile_err(v: Value) -> String {
    match compile(&profile(v)) {
        Ok(p) => panic!(
            "expected an error, compiled {} instructions",
            p.instructions.len()
        ),
        Err(e) => e.to_string(),
    }
}

/// What `prog` returns for `name` on `arch` (by libseccomp's numbering) with `args`.
fn verdict(prog: &Program, arch: &str, name: &str, args: [u64; 6]) -> u32 {
    let info = crate::arch::by_name(arch).unwrap();
    let nr = ScmpSyscall::from_name_by_arch(name, info.scmp)
        .unwrap()
        .as_raw_syscall();
    verdict_nr(prog, arch, u32::try_from(nr).unwrap(), args)
}

fn verdict_nr(prog: &Program, arch: &str, nr: u32, args: [u64; 6]) -> u32 {
    let info = crate::arch::by_name(arch).unwrap();
    let insns: Vec<Insn> = prog.instructions.iter().map(|&v| Insn::unpack(v)).collect();
    run(&insns, info.audit, nr, args)
}

fn native() -> &'static str {
    crate::arch::native().unwrap().name
}

fn on(prog: &Program, name: &str) -> u32 {
    verdict(prog, native(), name, [0; 6])
}

fn on_args(prog: &Program, name: &str, args: [u64; 6]) -> u32 {
    verdict(prog, native(), name, args)
}

#[test]
fn default_allow_with_one_errno_rule() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}],
    }));
    assert_eq!(p.flags, 0);
    assert!(p.warnings.is_empty());
    assert!(!p.needs_listener());
    assert_eq!(on(&p, "mkdirat"), errno(42));
    assert_eq!(on(&p, "getpid"), ALLOW);
    // A permissive default gets no ENOSYS treatment.
    assert_eq!(on(&p, "clone3"), ALLOW);
    assert_eq!(verdict_nr(&p, native(), 5000, [0; 6]), ALLOW);
}

#[test]
fn profiles_without_rules_compile() {
    let p = compile_ok(json!({"defaultAction": "SCMP_ACT_ALLOW"}));
    assert_eq!(on(&p, "getpid"), ALLOW);
    let p = compile_ok(json!({"defaultAction": "SCMP_ACT_LOG", "syscalls": []}));
    assert_eq!(on(&p, "getpid"), LOG);
    // Deny everything: no syscall is named, so there is no stub bound, but clone3 still gets
    // ENOSYS.
    let p = compile_ok(json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 5}));
    assert_eq!(on(&p, "getpid"), errno(5));
    assert_eq!(on(&p, "clone3"), ENOSYS);
}

#[test]
fn errno_defaults_to_eperm() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}],
    }));
    assert_eq!(on(&p, "getcwd"), errno(1));
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert_eq!(on(&p, "getpid"), errno(1));
}

#[test]
fn default_errno_with_an_allow_list() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 13,
        "syscalls": [{"names": ["read", "write", "exit_group", "getpid"], "action": "SCMP_ACT_ALLOW"}],
    }));
    for allowed in ["read", "write", "exit_group", "getpid"] {
        assert_eq!(on(&p, allowed), ALLOW, "{allowed}");
    }
    // Below the largest listed syscall: the default errno.
    assert_eq!(on(&p, "getcwd"), errno(13));
    // Above it: ENOSYS from the stub, so libcs fall back.
    assert_eq!(on(&p, "kcmp"), ENOSYS);
    assert_eq!(on(&p, "clone3"), ENOSYS);
    assert_eq!(verdict_nr(&p, native(), 5000, [0; 6]), ENOSYS);
}

#[test]
fn clone3_gets_enosys_below_the_last_syscall_too() {
    // futex_waitv (449 on x86-64) pushes the stub's bound above clone3 (435): the implicit
    // rule alone must answer ENOSYS.
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_KILL_PROCESS",
        "syscalls": [{"names": ["write", "futex_waitv"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert_eq!(on(&p, "clone3"), ENOSYS);
    assert_eq!(on(&p, "getcwd"), KILL_PROCESS);
}

#[test]
fn a_profile_that_mentions_clone3_decides_itself() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["write", "futex_waitv"], "action": "SCMP_ACT_ALLOW"},
            {"names": ["clone3"], "action": "SCMP_ACT_ERRNO"},
        ],
    }));
    assert_eq!(on(&p, "clone3"), errno(1));
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [{"names": ["write", "clone3"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert_eq!(on(&p, "clone3"), ALLOW);
}

#[test]
fn enosys_default_needs_no_stub() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 38,
        "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW"}],
    }));
    let with_stub = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "defaultErrnoRet": 37,
        "syscalls": [{"names": ["write"], "action": "SCMP_ACT_ALLOW"}],
    }));
    assert!(p.instructions.len() < with_stub.instructions.len());
    assert_eq!(on(&p, "clone3"), ENOSYS);
    assert_eq!(on(&p, "getcwd"), ENOSYS);
    // read is numbered below write on every architecture: the default errno, not the stub.
    assert_eq!(on(&with_stub, "read"), errno(37));
    assert_eq!(on(&with_stub, "getcwd"), ENOSYS);
}

#[test]
fn rules_repeating_the_default_are_skipped() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_KILL",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_KILL_THREAD"},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }));
    assert_eq!(on(&p, "getpid"), 0);
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1},
            {"names": ["write"], "action": "SCMP_ACT_ALLOW"},
        ],
    }));
    assert_eq!(on(&p, "getpid"), errno(1));
}

#[test]
fn every_action_compiles() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "syscalls": [
            {"names": ["getpid"], "action": "SCMP_ACT_KILL"},
            {"names": ["getppid"], "action": "SCMP_ACT_KILL_PROCESS"},
            {"names": ["getuid"], "action": "SCMP_ACT_TRAP"},
            {"names": ["getgid"], "action": "SCMP_ACT_TRACE", "errnoRet": 7},
            {"names": ["geteuid"], "action": "SCMP_ACT_LOG"},
            {"names": ["getegid"], "action": "SCMP_ACT_NOTIFY"},
            {"names": ["getcwd"], "action": "SCMP_ACT_ERRNO", "errnoRet": 0},
        ],
    }));
    assert_eq!(on(&p, "getpid"), 0);
    assert_eq!(on(&p, "getppid"), KILL_PROCESS);
    assert_eq!(on(&p, "getuid"), 0x0003_0000);
    assert_eq!(on(&p, "getgid"), TRACE | 7);
    assert_eq!(on(&p, "geteuid"), LOG);
    assert_eq!(on(&p, "getegid"), NOTIFY);
    assert_eq!(on(&p, "getcwd"), errno(0));
    assert!(p.needs_listener());
    assert_eq!(p.flags, FLAG_NEW_LISTENER);
}

#[test]
fn arg_condition_matches_only_its_value() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["personality"], "action": "SCMP_ACT_ERRNO", "errnoRet": 55,
            "args": [{"index": 0, "value": 0xffff_ffff_u64, "op": "SCMP_CMP_EQ"}],
        }],
    }));
    assert_eq!(
        on_args(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        errno(55)
    );
    assert_eq!(on_args(&p, "personality", [0, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        on_args(&p, "personality", [0x1_ffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
}

#[test]
fn conditions_on_one_index_are_ored() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["getpriority"], "action": "SCMP_ACT_ERRNO", "errnoRet": 33,
            "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
            ],
        }],
    }));
    assert_eq!(on_args(&p, "getpriority", [1, 0, 0, 0, 0, 0]), errno(33));
    assert_eq!(on_args(&p, "getpriority", [2, 0, 0, 0, 0, 0]), errno(33));
    assert_eq!(on_args(&p, "getpriority", [0, 0, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn conditions_on_distinct_indexes_are_anded() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["kill"], "action": "SCMP_ACT_ERRNO",
            "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
            ],
        }],
    }));
    assert_eq!(on_args(&p, "kill", [1, 9, 0, 0, 0, 0]), errno(1));
    assert_eq!(on_args(&p, "kill", [1, 15, 0, 0, 0, 0]), ALLOW);
    assert_eq!(on_args(&p, "kill", [2, 9, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn repeated_index_with_another_index_ors_everything_like_runc() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["kill"], "action": "SCMP_ACT_ERRNO",
            "args": [
                {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                {"index": 0, "value": 2, "op": "SCMP_CMP_EQ"},
                {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
            ],
        }],
    }));
    assert_eq!(on_args(&p, "kill", [1, 0, 0, 0, 0, 0]), errno(1));
    assert_eq!(on_args(&p, "kill", [3, 9, 0, 0, 0, 0]), errno(1));
    assert_eq!(on_args(&p, "kill", [3, 0, 0, 0, 0, 0]), ALLOW);
}

#[test]
fn comparison_operators() {
    let rule = |op: &str, value: u64| {
        compile_ok(json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{
                "names": ["getpriority"], "action": "SCMP_ACT_ERRNO",
                "args": [{"index": 1, "value": value, "op": op}],
            }],
        }))
    };
    let denied = |p: &Program, who: u64| on_args(p, "getpriority", [0, who, 0, 0, 0, 0]) != ALLOW;
    let cases: &[(&str, &[(u64, bool)])] = &[
        ("SCMP_CMP_NE", &[(9, false), (8, true), (10, true)]),
        ("SCMP_CMP_LT", &[(8, true), (9, false), (10, false)]),
        ("SCMP_CMP_LE", &[(8, true), (9, true), (10, false)]),
        ("SCMP_CMP_EQ", &[(8, false), (9, true), (10, false)]),
        ("SCMP_CMP_GE", &[(8, false), (9, true), (10, true)]),
        ("SCMP_CMP_GT", &[(8, false), (9, false), (10, true)]),
    ];
    for (op, expect) in cases {
        let p = rule(op, 9);
        for &(who, want) in *expect {
            assert_eq!(denied(&p, who), want, "{op} 9 against {who}");
        }
    }
}

#[test]
fn masked_eq_uses_value_as_mask_and_value_two_as_value() {
    // eventfd2(initval, flags): deny when EFD_NONBLOCK (0o4000) is set.
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["eventfd2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 22,
            "args": [{"index": 1, "value": 0o4000, "valueTwo": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}],
        }],
    }));
    assert_eq!(on_args(&p, "eventfd2", [0, 0o4000, 0, 0, 0, 0]), errno(22));
    assert_eq!(
        on_args(&p, "eventfd2", [0, 0o4000 | 0o2000000, 0, 0, 0, 0]),
        errno(22)
    );
    assert_eq!(on_args(&p, "eventfd2", [0, 0o2000000, 0, 0, 0, 0]), ALLOW);
    // valueTwo defaults to 0: "none of the mask bits set".
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{
            "names": ["eventfd2"], "action": "SCMP_ACT_ERRNO",
            "args": [{"index": 1, "value": 0o4000, "op": "SCMP_CMP_MASKED_EQ"}],
        }],
    }));
    assert_eq!(on_args(&p, "eventfd2", [0, 0o4000, 0, 0, 0, 0]), ALLOW);
    assert_eq!(on_args(&p, "eventfd2", [0, 0, 0, 0, 0, 0]), errno(1));
}

#[test]
#[cfg(target_arch = "x86_64")]
fn multi_arch_filters_each_abi() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32", "SCMP_ARCH_NATIVE"],
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}],
    }));
    for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"] {
        assert_eq!(verdict(&p, arch, "mkdirat", [0; 6]), errno(42), "{arch}");
        assert_eq!(verdict(&p, arch, "getpid", [0; 6]), ALLOW, "{arch}");
    }
    // An ABI not in the filter is killed (libseccomp's bad-arch action).
    assert_eq!(verdict_nr(&p, "SCMP_ARCH_AARCH64", 34, [0; 6]), 0);

    let only_native = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42}],
    }));
    assert_eq!(verdict(&only_native, "SCMP_ARCH_X86", "mkdirat", [0; 6]), 0);
    assert!(only_native.instructions.len() < p.instructions.len());
}

#[test]
#[cfg(target_arch = "x86_64")]
fn foreign_arch_of_the_same_byte_order_compiles() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ERRNO",
        "architectures": ["SCMP_ARCH_AARCH64", "SCMP_ARCH_RISCV64"],
        "syscalls": [{"names": ["write", "mkdirat"], "action": "SCMP_ACT_ALLOW"}],
    }));
    for arch in ["SCMP_ARCH_X86_64", "SCMP_ARCH_AARCH64", "SCMP_ARCH_RISCV64"] {
        assert_eq!(verdict(&p, arch, "mkdirat", [0; 6]), ALLOW, "{arch}");
        assert_eq!(verdict(&p, arch, "getcwd", [0; 6]), errno(1), "{arch}");
        assert_eq!(verdict_nr(&p, arch, 1000, [0; 6]), ENOSYS, "{arch}");
    }
}

#[test]
fn unknown_syscall_names_are_skipped_with_a_warning() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [
            {"names": ["getcwd", "berth_no_such_syscall"], "action": "SCMP_ACT_ERRNO"},
            {"names": ["another_made_up_one"], "action": "SCMP_ACT_KILL"},
        ],
    }));
    assert_eq!(p.warnings.len(), 2, "{:?}", p.warnings);
    assert!(p.warnings[0].starts_with("linux.seccomp.syscalls[0].names[1]: syscall `berth_no_such_syscall` is unknown to libseccomp"), "{}", p.warnings[0]);
    assert!(
        p.warnings[1].contains("syscalls[1].names[0]"),
        "{}",
        p.warnings[1]
    );
    assert_eq!(on(&p, "getcwd"), errno(1));
}

#[test]
fn flags_map_to_kernel_bits() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW", "SECCOMP_FILTER_FLAG_TSYNC"],
        "syscalls": [{"names": ["getcwd"], "action": "SCMP_ACT_ERRNO"}],
    }));
    assert_eq!(p.flags, FLAG_LOG | FLAG_SPEC_ALLOW | FLAG_TSYNC);

    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": "/run/agent.sock",
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
        "syscalls": [{"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}],
    }));
    assert_eq!(
        p.flags,
        FLAG_TSYNC | FLAG_TSYNC_ESRCH | FLAG_NEW_LISTENER | FLAG_WAIT_KILLABLE_RECV
    );
    assert!(p.needs_listener());
}

#[test]
fn unknown_flags_and_actions_fail_when_parsing() {
    // oci-spec's enums reject these names before compile sees them.
    let bad_flag = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "flags": ["SECCOMP_FILTER_FLAG_NOPE"],
    }));
    assert!(bad_flag.is_err());
    let bad_op = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["kill"], "action": "SCMP_ACT_ALLOW",
                      "args": [{"index": 0, "value": 0, "op": "SCMP_CMP_FOO"}]}],
    }));
    assert!(bad_op.unwrap_err().to_string().contains("SCMP_CMP_FOO"));
    let bad_arch = serde_json::from_value::<LinuxSeccomp>(json!({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_VAX"],
    }));
    assert!(bad_arch.is_err());
}

#[test]
fn invalid_profiles_name_the_field() {
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_ERRNO"},
                {"names": [], "action": "SCMP_ACT_ERRNO"}]}),
            "invalid seccomp profile: linux.seccomp.syscalls[1].names: is empty",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid", ""], "action": "SCMP_ACT_ERRNO"}]}),
            "linux.seccomp.syscalls[0].names[1]: is an empty string",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_KILL", "errnoRet": 5}]}),
            "linux.seccomp.syscalls[0].errnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE take an errno",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "defaultErrnoRet": 5}),
            "linux.seccomp.defaultErrnoRet: only SCMP_ACT_ERRNO and SCMP_ACT_TRACE",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 70000}),
            "linux.seccomp.defaultErrnoRet: 70000 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["getpid"], "action": "SCMP_ACT_TRACE", "errnoRet": 65536}]}),
            "linux.seccomp.syscalls[0].errnoRet: 65536 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "args": [
                    {"index": 0, "value": 1, "op": "SCMP_CMP_EQ"},
                    {"index": 6, "value": 1, "op": "SCMP_CMP_EQ"}]}]}),
            "linux.seccomp.syscalls[0].args[1].index: 6 is out of range",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
                {"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath: linux.seccomp.syscalls[0] uses SCMP_ACT_NOTIFY",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "", "syscalls": [
                {"names": ["mkdirat"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.listenerPath:",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/run/a.sock"}),
            "linux.seccomp.defaultAction: SCMP_ACT_NOTIFY cannot be the default action",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": "/run/a.sock", "syscalls": [
                {"names": ["mkdirat", "write"], "action": "SCMP_ACT_NOTIFY"}]}),
            "linux.seccomp.syscalls[0].names[1]: SCMP_ACT_NOTIFY cannot be used for `write`",
        ),
        (
            json!({"defaultAction": "SCMP_ACT_ALLOW",
                   "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]}),
            "linux.seccomp.flags[1]: SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV only applies to SCMP_ACT_NOTIFY",
        ),
    ];
    for (profile, want) in cases {
        let got = compile_err(profile.clone());
        assert!(
            got.contains(want),
            "profile {profile}\n  got:  {got}\n  want: {want}"
        );
    }
}

#[test]
#[cfg(target_endian = "little")]
fn architecture_of_the_other_byte_order_is_unsupported() {
    let got = compile_err(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86", "SCMP_ARCH_S390X"],
    }));
    assert!(
        got.starts_with("unsupported seccomp profile: linux.seccomp.architectures[1]: SCMP_ARCH_S390X cannot share a filter"),
        "{got}"
    );
}

#[test]
fn architectures_newer_than_libseccomp_are_unsupported() {
    let v = libseccomp::ScmpVersion::current().unwrap();
    if (v.major, v.minor) >= (2, 6) {
        return; // libseccomp 2.6 knows LoongArch.
    }
    let got = compile_err(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_LOONGARCH64"],
    }));
    assert!(got.contains("linux.seccomp.architectures[0]: SCMP_ARCH_LOONGARCH64 is not supported by the linked libseccomp"), "{got}");
}

fn docker_like() -> Value {
    serde_json::from_str(include_str!("../tests/fixtures/docker-like.json")).unwrap()
}

#[test]
fn docker_like_profile_compiles() {
    let p = compile_ok(docker_like());
    assert_eq!(p.flags, 0);
    assert!(
        p.instructions.len() > 300,
        "{} instructions",
        p.instructions.len()
    );
    // The fixture lists syscalls newer than libseccomp 2.5 and one that does not exist.
    assert!(
        p.warnings
            .iter()
            .any(|w| w.contains("`berth_test_future_syscall`")),
        "{:?}",
        p.warnings
    );
    assert!(!p.warnings.iter().any(|w| w.contains("`read`")));

    let a = native();
    assert_eq!(on(&p, "read"), ALLOW);
    assert_eq!(on(&p, "kcmp"), errno(1));
    assert_eq!(on(&p, "clone3"), ENOSYS);
    assert_eq!(verdict_nr(&p, a, 100_000, [0; 6]), ENOSYS);
    // clone: threads and forks yes, new namespaces no.
    let clone_thread = 0x0001_0000 | 0x100 | 0x800 | 0x200 | 0x400;
    assert_eq!(on_args(&p, "clone", [clone_thread, 0, 0, 0, 0, 0]), ALLOW);
    assert_eq!(
        on_args(&p, "clone", [17 | 0x2000_0000, 0, 0, 0, 0, 0]),
        errno(1)
    );
    // socket: AF_VSOCK gets its own errno, AF_UNIX is fine.
    assert_eq!(on_args(&p, "socket", [40, 1, 0, 0, 0, 0]), errno(97));
    assert_eq!(on_args(&p, "socket", [1, 1, 0, 0, 0, 0]), ALLOW);
    // personality: the query is allowed, other personas are not.
    assert_eq!(
        on_args(&p, "personality", [0xffff_ffff, 0, 0, 0, 0, 0]),
        ALLOW
    );
    assert_eq!(
        on_args(&p, "personality", [0x0040_0000, 0, 0, 0, 0, 0]),
        errno(1)
    );
}

#[test]
#[cfg(target_arch = "x86_64")]
fn docker_like_profile_covers_the_compat_abis() {
    let p = compile_ok(docker_like());
    assert_eq!(verdict(&p, "SCMP_ARCH_X86", "read", [0; 6]), ALLOW);
    assert_eq!(verdict(&p, "SCMP_ARCH_X86", "_llseek", [0; 6]), ALLOW);
    assert_eq!(verdict(&p, "SCMP_ARCH_X86", "kcmp", [0; 6]), errno(1));
    assert_eq!(verdict(&p, "SCMP_ARCH_X86", "clone3", [0; 6]), ENOSYS);
    assert_eq!(verdict(&p, "SCMP_ARCH_X32", "read", [0; 6]), ALLOW);
    assert_eq!(verdict(&p, "SCMP_ARCH_X32", "kcmp", [0; 6]), errno(1));
    let x32_bit = crate::arch::X32_SYSCALL_BIT;
    assert_eq!(
        verdict_nr(&p, "SCMP_ARCH_X32", x32_bit | 1000, [0; 6]),
        ENOSYS
    );
}

#[test]
fn programs_round_trip_through_serde() {
    let p = compile_ok(json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "syscalls": [{"names": ["getcwd", "nope_nope"], "action": "SCMP_ACT_ERRNO"}],
    }));
    let text = serde_json::to_string(&p).unwrap();
    let back: Program = serde_json::from_str(&text).unwrap();
    assert_eq!(back, p);
    // The instructions are one base64 string of their little-endian bytes.
    let v: Value = serde_json::from_str(&text).unwrap();
    let encoded = v["instructions"].as_str().expect("a string");
    assert_eq!(encoded.len(), (p.instructions.len() * 8).div_ceil(3) * 4);
    let one = Program {
        instructions: vec![0x0000_0001_0002_0006, u64::MAX],
        flags: 0,
        warnings: Vec::new(),
    };
    assert_eq!(
        serde_json::to_value(&one).unwrap()["instructions"],
        json!("BgACAAEAAAD//////////w==")
    );
    // A state file written without warnings, and with the instructions as an array of
    // numbers (before the base64 form), still reads.
    let old: Program = serde_json::from_str(r#"{"instructions":[6],"flags":0}"#).unwrap();
    assert!(old.warnings.is_empty());
    assert_eq!(old.instructions, vec![6]);
    // A damaged string is an error that names the field, not a wrong program.
    for bad in [r#""not base64!""#, r#""BgACAA==""#, "12"] {
        let e = serde_json::from_str::<Program>(&format!(r#"{{"instructions":{bad},"flags":0}}"#))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("seccomp instructions") || e.contains("invalid type"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn prepare_rejects_malformed_programs() {
    let ret_allow = Insn {
        code: 0x06,
        jt: 0,
        jf: 0,
        k: ALLOW,
    }
    .pack();
    let jump_out = Insn {
        code: 0x15,
        jt: 4,
        jf: 0,
        k: 1,
    }
    .pack();
    let cases = [
        (
            Program {
                instructions: vec![],
                flags: 0,
                warnings: vec![],
            },
            "empty",
        ),
        (
            Program {
                instructions: vec![ret_allow],
                flags: 1 << 20,
                warnings: vec![],
            },
            "unknown",
        ),
        (
            Program {
                instructions: vec![jump_out, ret_allow],
                flags: 0,
                warnings: vec![],
            },
            "jumps to 5",
        ),
        (
            Program {
                instructions: vec![ret_allow; MAX_INSTRUCTIONS + 1],
                flags: 0,
                warnings: vec![],
            },
            "limit",
        ),
    ];
    for (p, want) in cases {
        let e = p.prepare().unwrap_err();
        assert!(matches!(e, Error::Malformed(_)), "{e:?}");
        assert!(e.to_string().contains(want), "{e} (want {want})");
        assert!(p.load().is_err());
    }
    let ok = Program {
        instructions: vec![ret_allow],
        flags: FLAG_LOG,
        warnings: vec![],
    };
    let prepared = ok.prepare().unwrap();
    assert_eq!((prepared.len(), prepared.flags()), (1, FLAG_LOG));
}

#[test]
fn load_errors_explain_themselves() {
    let e = Error::Load {
        errno: libc::EACCES,
        flags: 0,
    };
    let text = e.to_string();
    assert!(text.contains("Permission denied"), "{text}");
    assert!(
        text.contains("set process.noNewPrivileges or keep CAP_SYS_ADMIN"),
        "{text}"
    );
    let e = Error::Load {
        errno: libc::EINVAL,
        flags: FLAG_LOG,
    };
    assert!(e.to_string().contains("flags 0x2"), "{e}");
}

#[test]
fn features_report_this_host() {
    let f = features();
    assert_eq!(f.actions.len(), 9);
    assert!(f.actions.contains(&"SCMP_ACT_KILL_PROCESS".to_string()));
    assert_eq!(f.operators.len(), 7);
    assert!(f.operators.contains(&"SCMP_CMP_MASKED_EQ".to_string()));
    assert!(f.archs.contains(&native().to_string()), "{:?}", f.archs);
    assert_eq!(
        f.known_flags,
        [
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"
        ]
    );
    assert!(f.supported_flags.iter().all(|s| f.known_flags.contains(s)));
    // Every kernel that runs containers today has these (3.17, 4.14, 4.17).
    for flag in [
        "SECCOMP_FILTER_FLAG_TSYNC",
        "SECCOMP_FILTER_FLAG_LOG",
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
    ] {
        assert!(
            f.supported_flags.contains(&flag.to_string()),
            "{flag}: {:?}",
            f.supported_flags
        );
    }
    if cfg!(target_arch = "x86_64") {
        assert!(f.archs.contains(&"SCMP_ARCH_X86".to_string()));
        assert!(f.archs.contains(&"SCMP_ARCH_X32".to_string()));
        assert!(!f.archs.contains(&"SCMP_ARCH_S390X".to_string()));
    }
}

#[test]
fn native_arch_matches_libseccomp() {
    assert_eq!(crate::arch::native().unwrap().scmp, ScmpArch::native());
}
