//! Classic BPF as seccomp uses it: instruction packing, a structural check, and the `-ENOSYS`
//! stub prepended to libseccomp's program.

use crate::arch::{ArchInfo, X32_SYSCALL_BIT};

/// `BPF_MAXINSNS`: the longest program one `seccomp(2)` call accepts.
pub const MAX_INSTRUCTIONS: usize = 4096;

// Opcode pieces from linux/filter.h (classic BPF).
const BPF_LD: u16 = 0x00;
const BPF_JMP: u16 = 0x05;
const BPF_RET: u16 = 0x06;
const BPF_W: u16 = 0x00;
const BPF_ABS: u16 = 0x20;
const BPF_JA: u16 = 0x00;
const BPF_JEQ: u16 = 0x10;
const BPF_JGT: u16 = 0x20;
const BPF_JSET: u16 = 0x40;
const BPF_K: u16 = 0x00;

/// Offsets in `struct seccomp_data`.
const DATA_NR: u32 = 0;
const DATA_ARCH: u32 = 4;

/// `SECCOMP_RET_ERRNO | ENOSYS`.
const RET_ENOSYS: u32 = 0x0005_0000 | 38;

/// One `struct sock_filter`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Insn {
    pub code: u16,
    pub jt: u8,
    pub jf: u8,
    pub k: u32,
}

impl Insn {
    /// Pack as `code | jt << 16 | jf << 24 | k << 32` (the [`Program`](crate::Program) format).
    pub fn pack(self) -> u64 {
        u64::from(self.code)
            | (u64::from(self.jt) << 16)
            | (u64::from(self.jf) << 24)
            | (u64::from(self.k) << 32)
    }

    /// Inverse of [`Insn::pack`].
    pub fn unpack(v: u64) -> Self {
        let b = v.to_le_bytes();
        Self {
            code: u16::from_le_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    /// Decode the `struct sock_filter` libseccomp exports in host byte order.
    pub fn from_ne_bytes(b: [u8; 8]) -> Self {
        Self {
            code: u16::from_ne_bytes([b[0], b[1]]),
            jt: b[2],
            jf: b[3],
            k: u32::from_ne_bytes([b[4], b[5], b[6], b[7]]),
        }
    }

    fn stmt(code: u16, k: u32) -> Self {
        Self {
            code,
            jt: 0,
            jf: 0,
            k,
        }
    }

    fn jump(code: u16, k: u32, jt: u8, jf: u8) -> Self {
        Self { code, jt, jf, k }
    }
}

/// Check that `prog` is a program the kernel's checker would accept structurally: non-empty,
/// within `BPF_MAXINSNS`, every jump lands inside the program and the last instruction returns.
/// (The kernel also checks opcodes and memory accesses; this catches corruption and our own
/// mistakes early with a readable message.)
pub(crate) fn validate(prog: &[Insn]) -> Result<(), String> {
    if prog.is_empty() {
        return Err("the program is empty".into());
    }
    if prog.len() > MAX_INSTRUCTIONS {
        return Err(format!(
            "the program has {} instructions, more than the kernel's limit of {MAX_INSTRUCTIONS}",
            prog.len()
        ));
    }
    for (pc, insn) in prog.iter().enumerate() {
        if insn.code & 0x07 != BPF_JMP {
            continue;
        }
        let next = pc + 1;
        let targets: [usize; 2] = if insn.code & 0xf0 == BPF_JA {
            let k =
                usize::try_from(insn.k).map_err(|_| format!("instruction {pc}: jump too far"))?;
            [next.saturating_add(k), next]
        } else {
            [next + usize::from(insn.jt), next + usize::from(insn.jf)]
        };
        if let Some(bad) = targets.iter().find(|&&t| t >= prog.len()) {
            return Err(format!(
                "instruction {pc} jumps to {bad}, past the end of the {}-instruction program",
                prog.len()
            ));
        }
    }
    let last = prog[prog.len() - 1];
    if last.code & 0x07 != BPF_RET {
        return Err("the program does not end with a return instruction".into());
    }
    Ok(())
}

/// The largest syscall number a profile references on one architecture.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LastSyscall {
    pub arch: &'static ArchInfo,
    /// The number as the kernel sees it (x32 numbers include bit 30).
    pub nr: u32,
}

/// A program under construction whose forward `ja` jumps name labels.
#[derive(Default)]
struct Asm {
    items: Vec<Item>,
    labels: Vec<Option<usize>>,
}

enum Item {
    Insn(Insn),
    /// `ja` to a label.
    JumpTo(usize),
}

impl Asm {
    fn label(&mut self) -> usize {
        self.labels.push(None);
        self.labels.len() - 1
    }

    fn bind(&mut self, label: usize) {
        self.labels[label] = Some(self.items.len());
    }

    fn push(&mut self, insn: Insn) {
        self.items.push(Item::Insn(insn));
    }

    fn jump_to(&mut self, label: usize) {
        self.items.push(Item::JumpTo(label));
    }

    fn finish(self) -> Result<Vec<Insn>, String> {
        let mut out = Vec::with_capacity(self.items.len());
        for (pc, item) in self.items.iter().enumerate() {
            out.push(match *item {
                Item::Insn(insn) => insn,
                Item::JumpTo(label) => {
                    let target = self.labels[label].ok_or("unbound label in the -ENOSYS stub")?;
                    let offset = target
                        .checked_sub(pc + 1)
                        .and_then(|o| u32::try_from(o).ok())
                        .ok_or("backward jump in the -ENOSYS stub")?;
                    Insn::stmt(BPF_JMP | BPF_JA, offset)
                }
            });
        }
        Ok(out)
    }
}

/// Emit "if the syscall number (in A) is above `max`, return `-ENOSYS`, else run the filter".
fn enosys_above(asm: &mut Asm, max: u32, filter: usize) {
    // jgt max: fall through to `ret ENOSYS`; otherwise skip it.
    asm.push(Insn::jump(BPF_JMP | BPF_JGT | BPF_K, max, 0, 1));
    asm.push(Insn::stmt(BPF_RET | BPF_K, RET_ENOSYS));
    asm.jump_to(filter);
}

/// Build the stub that makes syscalls newer than anything the profile mentions fail with
/// `ENOSYS` instead of the default action, so that libcs fall back to older syscalls (glibc
/// tries `clone3` and falls back to `clone` only on `ENOSYS`). It is placed in front of the
/// program libseccomp generated and ends by jumping to that program's first instruction; the
/// generated program reloads everything it needs, so the stub may clobber the accumulator.
///
/// Layout: `ld arch`, then per kernel arch value `jeq arch; ja section`, a `ja filter` for
/// every other arch, then one section per arch value. Jumps that may be long are `ja`
/// (32-bit offsets), so the stub never overflows the 8-bit conditional offsets.
pub(crate) fn enosys_stub(last: &[LastSyscall]) -> Result<Vec<Insn>, String> {
    let mut groups: Vec<(u32, Vec<LastSyscall>)> = Vec::new();
    for entry in last {
        match groups
            .iter_mut()
            .find(|(audit, _)| *audit == entry.arch.audit)
        {
            Some((_, members)) => members.push(*entry),
            None => groups.push((entry.arch.audit, vec![*entry])),
        }
    }
    if groups.is_empty() {
        return Ok(Vec::new());
    }

    let mut asm = Asm::default();
    let filter = asm.label();
    let sections: Vec<usize> = groups.iter().map(|_| asm.label()).collect();

    asm.push(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, DATA_ARCH));
    for ((audit, _), &section) in groups.iter().zip(&sections) {
        asm.push(Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, *audit, 0, 1));
        asm.jump_to(section);
    }
    asm.jump_to(filter);

    for ((_, members), &section) in groups.iter().zip(&sections) {
        asm.bind(section);
        asm.push(Insn::stmt(BPF_LD | BPF_W | BPF_ABS, DATA_NR));
        let x86_64 = members.iter().find(|m| m.arch.name == "SCMP_ARCH_X86_64");
        let x32 = members.iter().find(|m| m.arch.name == "SCMP_ARCH_X32");
        if x86_64.is_some() || x32.is_some() {
            // x86-64 and x32 share AUDIT_ARCH_X86_64; x32 numbers have bit 30 set. The x86-64
            // half is 3 instructions when bounded, 1 (`ja filter`) when not.
            let native_len: u8 = if x86_64.is_some() { 3 } else { 1 };
            asm.push(Insn::jump(
                BPF_JMP | BPF_JSET | BPF_K,
                X32_SYSCALL_BIT,
                native_len,
                0,
            ));
            for half in [x86_64, x32] {
                match half {
                    Some(m) => enosys_above(&mut asm, m.nr, filter),
                    None => asm.jump_to(filter),
                }
            }
            continue;
        }
        let [only] = members.as_slice() else {
            return Err(format!(
                "architectures {} share one kernel architecture value",
                members
                    .iter()
                    .map(|m| m.arch.name)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        };
        if matches!(only.arch.name, "SCMP_ARCH_S390" | "SCMP_ARCH_S390X") {
            // s390 multiplexes large syscall numbers through syscall 0 (the long-gone
            // `setup`), leaving an unknown number as 0: treat 0 as unknown too.
            asm.push(Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 0, 0, 1));
            asm.push(Insn::stmt(BPF_RET | BPF_K, RET_ENOSYS));
        }
        enosys_above(&mut asm, only.nr, filter);
    }
    asm.bind(filter);
    asm.finish()
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::arch::by_name;

    /// A tiny classic-BPF interpreter for the subset seccomp programs use, to check what a
    /// program returns for a given `(arch, nr)` without loading it.
    pub fn run(prog: &[Insn], arch: u32, nr: u32, args: [u64; 6]) -> u32 {
        let mut data = [0u32; 16];
        data[0] = nr;
        data[1] = arch;
        // instruction_pointer (2 words) stays 0; args follow as little-endian halves.
        for (i, a) in args.iter().enumerate() {
            let b = a.to_le_bytes();
            data[4 + 2 * i] = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
            data[5 + 2 * i] = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
        }
        let (mut a, mut x, mut mem) = (0u32, 0u32, [0u32; 16]);
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            let k = i.k;
            match i.code {
                0x20 => a = data[usize::try_from(k / 4).unwrap()],
                0x00 => a = k,
                0x01 => x = k,
                0x60 => a = mem[usize::try_from(k).unwrap()],
                0x61 => x = mem[usize::try_from(k).unwrap()],
                0x02 => mem[usize::try_from(k).unwrap()] = a,
                0x03 => mem[usize::try_from(k).unwrap()] = x,
                0x07 => x = a,
                0x87 => a = x,
                0x54 => a &= k,
                0x5c => a &= x,
                0x05 => pc += usize::try_from(k).unwrap(),
                0x15 | 0x1d | 0x25 | 0x2d | 0x35 | 0x3d | 0x45 | 0x4d => {
                    let v = if i.code & 0x08 != 0 { x } else { k };
                    let cond = match i.code & 0xf0 {
                        0x10 => a == v,
                        0x20 => a > v,
                        0x30 => a >= v,
                        _ => a & v != 0,
                    };
                    pc += usize::from(if cond { i.jt } else { i.jf });
                }
                0x06 => return k,
                0x16 => return a,
                other => panic!("opcode {other:#x} not handled by the test interpreter"),
            }
        }
    }

    #[test]
    fn pack_round_trips() {
        let insn = Insn {
            code: 0x15,
            jt: 3,
            jf: 250,
            k: 0xdead_beef,
        };
        assert_eq!(Insn::unpack(insn.pack()), insn);
        assert_eq!(insn.pack(), 0xdead_beef_fa03_0015);
    }

    #[test]
    fn validate_catches_bad_programs() {
        assert!(validate(&[]).unwrap_err().contains("empty"));
        let ret = Insn::stmt(BPF_RET | BPF_K, 0);
        assert!(validate(&[ret]).is_ok());
        let far = Insn::jump(BPF_JMP | BPF_JEQ | BPF_K, 1, 5, 0);
        assert!(validate(&[far, ret]).unwrap_err().contains("jumps to 6"));
        let ld = Insn::stmt(BPF_LD | BPF_W | BPF_ABS, 0);
        assert!(validate(&[ret, ld]).unwrap_err().contains("return"));
        let ja = Insn::stmt(BPF_JMP | BPF_JA, u32::MAX);
        assert!(validate(&[ja, ret]).is_err());
        assert!(
            validate(&vec![ret; MAX_INSTRUCTIONS + 1])
                .unwrap_err()
                .contains("limit")
        );
    }

    fn stub_then_allow(last: &[LastSyscall]) -> Vec<Insn> {
        let mut prog = enosys_stub(last).unwrap();
        prog.push(Insn::stmt(BPF_RET | BPF_K, 0x7fff_0000));
        validate(&prog).unwrap();
        prog
    }

    #[test]
    fn stub_returns_enosys_above_the_last_syscall() {
        let x86_64 = by_name("SCMP_ARCH_X86_64").unwrap();
        let x86 = by_name("SCMP_ARCH_X86").unwrap();
        let prog = stub_then_allow(&[
            LastSyscall {
                arch: x86_64,
                nr: 300,
            },
            LastSyscall { arch: x86, nr: 400 },
        ]);
        let allow = 0x7fff_0000;
        assert_eq!(run(&prog, x86_64.audit, 300, [0; 6]), allow);
        assert_eq!(run(&prog, x86_64.audit, 301, [0; 6]), RET_ENOSYS);
        assert_eq!(run(&prog, x86.audit, 301, [0; 6]), allow);
        assert_eq!(run(&prog, x86.audit, 401, [0; 6]), RET_ENOSYS);
        // x32 was not listed: its calls go to the filter untouched.
        assert_eq!(
            run(&prog, x86_64.audit, X32_SYSCALL_BIT | 999, [0; 6]),
            allow
        );
        // An architecture the stub does not know goes to the filter.
        assert_eq!(run(&prog, 0xc00000b7, 9999, [0; 6]), allow);
    }

    #[test]
    fn stub_splits_x86_64_and_x32() {
        let x86_64 = by_name("SCMP_ARCH_X86_64").unwrap();
        let x32 = by_name("SCMP_ARCH_X32").unwrap();
        let prog = stub_then_allow(&[
            LastSyscall {
                arch: x32,
                nr: X32_SYSCALL_BIT | 547,
            },
            LastSyscall {
                arch: x86_64,
                nr: 335,
            },
        ]);
        let allow = 0x7fff_0000;
        assert_eq!(run(&prog, x86_64.audit, 335, [0; 6]), allow);
        assert_eq!(run(&prog, x86_64.audit, 435, [0; 6]), RET_ENOSYS);
        assert_eq!(
            run(&prog, x86_64.audit, X32_SYSCALL_BIT | 547, [0; 6]),
            allow
        );
        assert_eq!(
            run(&prog, x86_64.audit, X32_SYSCALL_BIT | 548, [0; 6]),
            RET_ENOSYS
        );

        let only_x32 = stub_then_allow(&[LastSyscall {
            arch: x32,
            nr: X32_SYSCALL_BIT | 10,
        }]);
        assert_eq!(run(&only_x32, x86_64.audit, 435, [0; 6]), allow);
        assert_eq!(
            run(&only_x32, x86_64.audit, X32_SYSCALL_BIT | 11, [0; 6]),
            RET_ENOSYS
        );
    }

    #[test]
    fn stub_treats_s390_syscall_zero_as_unknown() {
        let s390x = by_name("SCMP_ARCH_S390X").unwrap();
        let prog = stub_then_allow(&[LastSyscall {
            arch: s390x,
            nr: 400,
        }]);
        assert_eq!(run(&prog, s390x.audit, 0, [0; 6]), RET_ENOSYS);
        assert_eq!(run(&prog, s390x.audit, 1, [0; 6]), 0x7fff_0000);
        assert_eq!(run(&prog, s390x.audit, 401, [0; 6]), RET_ENOSYS);
    }

    #[test]
    fn stub_with_every_architecture_stays_in_range() {
        let last: Vec<LastSyscall> = crate::arch::ARCHES
            .iter()
            .map(|arch| LastSyscall { arch, nr: 100 })
            .collect();
        let prog = stub_then_allow(&last);
        for arch in crate::arch::ARCHES {
            if arch.name == "SCMP_ARCH_X32" {
                continue;
            }
            assert_eq!(
                run(&prog, arch.audit, 101, [0; 6]),
                RET_ENOSYS,
                "{}",
                arch.name
            );
            assert_eq!(
                run(&prog, arch.audit, 100, [0; 6]),
                0x7fff_0000,
                "{}",
                arch.name
            );
        }
    }

    #[test]
    fn empty_stub_for_no_architectures() {
        assert!(enosys_stub(&[]).unwrap().is_empty());
    }
}
