//! The cgroup2 device allow-list: an eBPF `BPF_PROG_TYPE_CGROUP_DEVICE` program built from the
//! OCI rules and attached to the container's cgroup (cgroup2 has no devices controller).
//!
//! The program sees `struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }` in
//! r1, where `access_type` holds the device type in its low 16 bits and the access bits in its
//! high 16. Rules are tested from the last to the first, so a later rule overrides an earlier one
//! as in the v1 controller; a request no rule matches is denied.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};

use crate::{Error, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;

const DEV_BLOCK: i32 = 1;
const DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;

/// One eBPF instruction (`struct bpf_insn`).
#[repr(C)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | (dst & 0x0f),
        off,
        imm,
    }
}

// Opcodes (class | op | source).
const LDX_W: u8 = 0x61; // BPF_LDX | BPF_MEM | BPF_W
const AND32_K: u8 = 0x54; // BPF_ALU | BPF_AND | BPF_K
const RSH32_K: u8 = 0x74; // BPF_ALU | BPF_RSH | BPF_K
const MOV32_K: u8 = 0xb4; // BPF_ALU | BPF_MOV | BPF_K
const MOV32_X: u8 = 0xbc; // BPF_ALU | BPF_MOV | BPF_X
const JNE_K: u8 = 0x55; // BPF_JMP | BPF_JNE | BPF_K
const JNE_X: u8 = 0x5d; // BPF_JMP | BPF_JNE | BPF_X
const EXIT: u8 = 0x95; // BPF_JMP | BPF_EXIT

/// Build the filter program for `rules`.
pub(crate) fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>> {
    // r2 = type, r3 = access, r4 = major, r5 = minor.
    let mut p = vec![
        insn(LDX_W, 2, 1, 0, 0),
        insn(AND32_K, 2, 0, 0, 0xffff),
        insn(LDX_W, 3, 1, 0, 0),
        insn(RSH32_K, 3, 0, 0, 16),
        insn(LDX_W, 4, 1, 4, 0),
        insn(LDX_W, 5, 1, 8, 0),
    ];
    for r in rules.iter().rev() {
        let ty = match r.typ().unwrap_or(LinuxDeviceType::A) {
            LinuxDeviceType::A => None,
            LinuxDeviceType::B => Some(DEV_BLOCK),
            LinuxDeviceType::C | LinuxDeviceType::U => Some(DEV_CHAR),
            LinuxDeviceType::P => continue,
        };
        let mut access = 0;
        for c in r
            .access()
            .as_deref()
            .filter(|a| !a.is_empty())
            .unwrap_or("rwm")
            .chars()
        {
            access |= match c {
                'r' => ACC_READ,
                'w' => ACC_WRITE,
                'm' => ACC_MKNOD,
                other => {
                    return Err(Error::Invalid(format!(
                        "device rule access {other:?} is not one of r, w, m"
                    )));
                }
            };
        }
        let num = |n: Option<i64>| -> Result<Option<i32>> {
            match n {
                None | Some(-1) => Ok(None),
                Some(n) => i32::try_from(n)
                    .map(Some)
                    .map_err(|_| Error::Invalid(format!("device number {n} out of range"))),
            }
        };
        let (major, minor) = (num(r.major())?, num(r.minor())?);
        // Each test jumps past the rest of the block when it fails.
        let mut block: Vec<(u8, u8, u8, i32)> = Vec::new(); // (code, dst, src, imm); jumps patched below
        if let Some(t) = ty {
            block.push((JNE_K, 2, 0, t));
        }
        if access != (ACC_READ | ACC_WRITE | ACC_MKNOD) {
            // Match only when every requested access bit is one the rule names.
            block.push((MOV32_X, 1, 3, 0));
            block.push((AND32_K, 1, 0, access));
            block.push((JNE_X, 1, 3, 0));
        }
        if let Some(m) = major {
            block.push((JNE_K, 4, 0, m));
        }
        if let Some(m) = minor {
            block.push((JNE_K, 5, 0, m));
        }
        if block.is_empty() {
            // This rule matches every request: earlier rules can never be reached, and the
            // verifier refuses unreachable instructions.
            p.push(insn(MOV32_K, 0, 0, 0, i32::from(r.allow())));
            p.push(insn(EXIT, 0, 0, 0, 0));
            return Ok(p);
        }
        let len = block.len() + 2;
        for (i, (code, dst, src, imm)) in block.into_iter().enumerate() {
            let off = if code == JNE_K || code == JNE_X {
                i16::try_from(len - i - 1)
                    .map_err(|_| Error::Invalid("device rule block too long".into()))?
            } else {
                0
            };
            p.push(insn(code, dst, src, off, imm));
        }
        p.push(insn(MOV32_K, 0, 0, 0, i32::from(r.allow())));
        p.push(insn(EXIT, 0, 0, 0, 0));
    }
    p.push(insn(MOV32_K, 0, 0, 0, 0));
    p.push(insn(EXIT, 0, 0, 0, 0));
    Ok(p)
}

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, properly laid out `union bpf_attr` prefix for `cmd`, and the size
    // passed is its exact size; the kernel zero-extends the rest.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Load the filter for `rules` and attach it to the cgroup2 directory `dir`, replacing a filter
/// attached earlier (so `update` can change the allow-list).
pub(crate) fn attach_device_filter(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<()> {
    let prog = program(rules)?;
    let license = c"Apache-2.0";
    let mut log = vec![0u8; 64 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(prog.len())
            .map_err(|_| Error::Invalid("too many device rules".into()))?,
        insns: prog.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(u32::MAX),
        log_buf: log.as_mut_ptr() as u64,
        prog_name: *b"berth_devices\0\0\0",
        ..Default::default()
    };
    let fd = bpf(BPF_PROG_LOAD, &mut attr).map_err(|e| {
        let verifier =
            String::from_utf8_lossy(&log[..log.iter().position(|b| *b == 0).unwrap_or(0)])
                .into_owned();
        Error::Bpf(format!(
            "load the device filter program: {e}{}",
            if verifier.is_empty() {
                String::new()
            } else {
                format!(" ({verifier})")
            }
        ))
    })?;
    let fd = i32::try_from(fd).map_err(|_| Error::Bpf("bpf returned a bad fd".into()))?;
    // SAFETY: BPF_PROG_LOAD returned a new file descriptor that nothing else owns.
    let prog_fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let cgroup = std::fs::File::open(dir).map_err(|e| Error::io("open", dir, e))?;
    let mut attach = ProgAttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or_default(),
        attach_bpf_fd: u32::try_from(prog_fd.as_raw_fd()).unwrap_or_default(),
        attach_type: BPF_CGROUP_DEVICE,
        // No flags: one program per cgroup, and attaching again replaces it.
        attach_flags: 0,
        replace_bpf_fd: 0,
    };
    bpf(BPF_PROG_ATTACH, &mut attach).map_err(|e| {
        Error::Bpf(format!(
            "attach the device filter to {}: {e}",
            dir.display()
        ))
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::LinuxDeviceCgroupBuilder;

    fn rule(
        allow: bool,
        typ: LinuxDeviceType,
        major: i64,
        minor: i64,
        access: &str,
    ) -> LinuxDeviceCgroup {
        LinuxDeviceCgroupBuilder::default()
            .allow(allow)
            .typ(typ)
            .major(major)
            .minor(minor)
            .access(access)
            .build()
            .unwrap()
    }

    /// A tiny interpreter for the instructions `program` emits, to test the logic without a kernel.
    fn run(p: &[Insn], ty: i32, access: i32, major: i32, minor: i32) -> i32 {
        let mut r = [0i64; 11];
        let ctx = [ty | (access << 16), major, minor];
        let mut pc = 0usize;
        loop {
            let i = p[pc];
            let (dst, src) = (usize::from(i.regs & 0x0f), usize::from(i.regs >> 4));
            pc += 1;
            match i.code {
                LDX_W => r[dst] = i64::from(ctx[usize::try_from(i.off / 4).unwrap()]),
                AND32_K => r[dst] &= i64::from(i.imm),
                RSH32_K => r[dst] >>= i.imm,
                MOV32_K => r[dst] = i64::from(i.imm),
                MOV32_X => r[dst] = r[src],
                JNE_K if r[dst] != i64::from(i.imm) => pc += usize::try_from(i.off).unwrap(),
                JNE_X if r[dst] != r[src] => pc += usize::try_from(i.off).unwrap(),
                JNE_K | JNE_X => {}
                EXIT => return i32::try_from(r[0]).unwrap(),
                c => panic!("unexpected opcode {c:#x}"),
            }
        }
    }

    #[test]
    fn later_rules_override_and_unmatched_requests_are_denied() {
        let rules = [
            rule(false, LinuxDeviceType::A, -1, -1, "rwm"),
            rule(true, LinuxDeviceType::C, 1, 3, "rwm"),
            rule(true, LinuxDeviceType::C, 1, 5, "r"),
            rule(true, LinuxDeviceType::B, 8, -1, "rw"),
            rule(false, LinuxDeviceType::B, 8, 1, "w"),
        ];
        let p = program(&rules).unwrap();
        assert_eq!(
            run(&p, DEV_CHAR, ACC_READ | ACC_WRITE, 1, 3),
            1,
            "/dev/null rw"
        );
        assert_eq!(run(&p, DEV_CHAR, ACC_MKNOD, 1, 3), 1, "mknod /dev/null");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 5), 1, "/dev/zero r");
        assert_eq!(run(&p, DEV_CHAR, ACC_WRITE, 1, 5), 0, "/dev/zero w");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 1, 3), 0, "block 1:3");
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 0), 1, "sda r");
        assert_eq!(
            run(&p, DEV_BLOCK, ACC_WRITE, 8, 1),
            0,
            "sda1 w denied by a later rule"
        );
        assert_eq!(run(&p, DEV_BLOCK, ACC_READ, 8, 1), 1, "sda1 r");
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 4, 1), 0, "tty1");
    }

    #[test]
    fn allow_all_and_bad_access() {
        let p = program(&[rule(true, LinuxDeviceType::A, -1, -1, "rwm")]).unwrap();
        assert_eq!(run(&p, DEV_BLOCK, ACC_WRITE, 259, 0), 1);
        assert_eq!(p.len(), 8, "nothing after an unconditional rule: {p:?}");
        let p = program(&[]).unwrap();
        assert_eq!(run(&p, DEV_CHAR, ACC_READ, 1, 3), 0);
        let err = program(&[rule(true, LinuxDeviceType::C, 1, 3, "rx")]).unwrap_err();
        assert!(err.to_string().contains("'x'"), "{err}");
    }
}
