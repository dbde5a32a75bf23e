//! Architectures: the OCI names, libseccomp's tokens and the kernel's `AUDIT_ARCH_*` values.

use libseccomp::ScmpArch;
use oci_spec::runtime::Arch as OciArch;

/// One architecture a filter can cover.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ArchInfo {
    /// The OCI / libseccomp name, `SCMP_ARCH_*`.
    pub name: &'static str,
    /// libseccomp's token.
    pub scmp: ScmpArch,
    /// The value the kernel puts in `seccomp_data.arch` for this ABI (`AUDIT_ARCH_*`). x32 shares
    /// x86-64's value; its syscall numbers carry bit 30 instead.
    pub audit: u32,
}

// `AUDIT_ARCH_*` = ELF machine | 64-bit flag | little-endian flag (linux/audit.h).
const AUDIT_64: u32 = 0x8000_0000;
const AUDIT_LE: u32 = 0x4000_0000;
const AUDIT_MIPS64N32: u32 = 0x2000_0000;

/// Every architecture this crate knows, in the order `features()` lists them.
pub(crate) const ARCHES: &[ArchInfo] = &[
    ArchInfo {
        name: "SCMP_ARCH_X86",
        scmp: ScmpArch::X86,
        audit: 3 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_X86_64",
        scmp: ScmpArch::X8664,
        audit: 62 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_X32",
        scmp: ScmpArch::X32,
        audit: 62 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_ARM",
        scmp: ScmpArch::Arm,
        audit: 40 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_AARCH64",
        scmp: ScmpArch::Aarch64,
        audit: 183 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPS",
        scmp: ScmpArch::Mips,
        audit: 8,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPS64",
        scmp: ScmpArch::Mips64,
        audit: 8 | AUDIT_64,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPS64N32",
        scmp: ScmpArch::Mips64N32,
        audit: 8 | AUDIT_64 | AUDIT_MIPS64N32,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPSEL",
        scmp: ScmpArch::Mipsel,
        audit: 8 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPSEL64",
        scmp: ScmpArch::Mipsel64,
        audit: 8 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_MIPSEL64N32",
        scmp: ScmpArch::Mipsel64N32,
        audit: 8 | AUDIT_64 | AUDIT_LE | AUDIT_MIPS64N32,
    },
    ArchInfo {
        name: "SCMP_ARCH_PPC",
        scmp: ScmpArch::Ppc,
        audit: 20,
    },
    ArchInfo {
        name: "SCMP_ARCH_PPC64",
        scmp: ScmpArch::Ppc64,
        audit: 21 | AUDIT_64,
    },
    ArchInfo {
        name: "SCMP_ARCH_PPC64LE",
        scmp: ScmpArch::Ppc64Le,
        audit: 21 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_S390",
        scmp: ScmpArch::S390,
        audit: 22,
    },
    ArchInfo {
        name: "SCMP_ARCH_S390X",
        scmp: ScmpArch::S390X,
        audit: 22 | AUDIT_64,
    },
    ArchInfo {
        name: "SCMP_ARCH_PARISC",
        scmp: ScmpArch::Parisc,
        audit: 15,
    },
    ArchInfo {
        name: "SCMP_ARCH_PARISC64",
        scmp: ScmpArch::Parisc64,
        audit: 15 | AUDIT_64,
    },
    ArchInfo {
        name: "SCMP_ARCH_RISCV64",
        scmp: ScmpArch::Riscv64,
        audit: 243 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_LOONGARCH64",
        scmp: ScmpArch::Loongarch64,
        audit: 258 | AUDIT_64 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_M68K",
        scmp: ScmpArch::M68k,
        audit: 4,
    },
    ArchInfo {
        name: "SCMP_ARCH_SH",
        scmp: ScmpArch::Sh,
        audit: 42 | AUDIT_LE,
    },
    ArchInfo {
        name: "SCMP_ARCH_SHEB",
        scmp: ScmpArch::Sheb,
        audit: 42,
    },
];

/// Bit 30 of the syscall number marks an x32 call on x86-64 (`__X32_SYSCALL_BIT`).
pub(crate) const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Look an architecture up by its `SCMP_ARCH_*` name.
pub(crate) fn by_name(name: &str) -> Option<&'static ArchInfo> {
    ARCHES.iter().find(|a| a.name == name)
}

/// The architecture this binary runs as, or `None` on a target libseccomp does not support.
pub(crate) fn native() -> Option<&'static ArchInfo> {
    let name = if cfg!(all(target_arch = "x86_64", target_pointer_width = "64")) {
        "SCMP_ARCH_X86_64"
    } else if cfg!(all(target_arch = "x86_64", target_pointer_width = "32")) {
        "SCMP_ARCH_X32"
    } else if cfg!(target_arch = "x86") {
        "SCMP_ARCH_X86"
    } else if cfg!(target_arch = "aarch64") {
        "SCMP_ARCH_AARCH64"
    } else if cfg!(target_arch = "arm") {
        "SCMP_ARCH_ARM"
    } else if cfg!(target_arch = "riscv64") {
        "SCMP_ARCH_RISCV64"
    } else if cfg!(target_arch = "s390x") {
        "SCMP_ARCH_S390X"
    } else if cfg!(target_arch = "loongarch64") {
        "SCMP_ARCH_LOONGARCH64"
    } else if cfg!(all(target_arch = "powerpc64", target_endian = "little")) {
        "SCMP_ARCH_PPC64LE"
    } else if cfg!(target_arch = "powerpc64") {
        "SCMP_ARCH_PPC64"
    } else if cfg!(target_arch = "powerpc") {
        "SCMP_ARCH_PPC"
    } else if cfg!(all(target_arch = "mips", target_endian = "little")) {
        "SCMP_ARCH_MIPSEL"
    } else if cfg!(target_arch = "mips") {
        "SCMP_ARCH_MIPS"
    } else if cfg!(all(target_arch = "mips64", target_endian = "little")) {
        "SCMP_ARCH_MIPSEL64"
    } else if cfg!(target_arch = "mips64") {
        "SCMP_ARCH_MIPS64"
    } else {
        return None;
    };
    by_name(name)
}

/// The `SCMP_ARCH_*` name of an OCI architecture; `None` for `SCMP_ARCH_NATIVE`.
pub(crate) fn oci_name(arch: OciArch) -> Option<&'static str> {
    Some(match arch {
        OciArch::ScmpArchNative => return None,
        OciArch::ScmpArchX86 => "SCMP_ARCH_X86",
        OciArch::ScmpArchX86_64 => "SCMP_ARCH_X86_64",
        OciArch::ScmpArchX32 => "SCMP_ARCH_X32",
        OciArch::ScmpArchArm => "SCMP_ARCH_ARM",
        OciArch::ScmpArchAarch64 => "SCMP_ARCH_AARCH64",
        OciArch::ScmpArchMips => "SCMP_ARCH_MIPS",
        OciArch::ScmpArchMips64 => "SCMP_ARCH_MIPS64",
        OciArch::ScmpArchMips64n32 => "SCMP_ARCH_MIPS64N32",
        OciArch::ScmpArchMipsel => "SCMP_ARCH_MIPSEL",
        OciArch::ScmpArchMipsel64 => "SCMP_ARCH_MIPSEL64",
        OciArch::ScmpArchMipsel64n32 => "SCMP_ARCH_MIPSEL64N32",
        OciArch::ScmpArchPpc => "SCMP_ARCH_PPC",
        OciArch::ScmpArchPpc64 => "SCMP_ARCH_PPC64",
        OciArch::ScmpArchPpc64le => "SCMP_ARCH_PPC64LE",
        OciArch::ScmpArchS390 => "SCMP_ARCH_S390",
        OciArch::ScmpArchS390x => "SCMP_ARCH_S390X",
        OciArch::ScmpArchParisc => "SCMP_ARCH_PARISC",
        OciArch::ScmpArchParisc64 => "SCMP_ARCH_PARISC64",
        OciArch::ScmpArchRiscv64 => "SCMP_ARCH_RISCV64",
        OciArch::ScmpArchLoongarch64 => "SCMP_ARCH_LOONGARCH64",
        OciArch::ScmpArchM68k => "SCMP_ARCH_M68K",
        OciArch::ScmpArchSh => "SCMP_ARCH_SH",
        OciArch::ScmpArchSheb => "SCMP_ARCH_SHEB",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_oci_arch_has_an_entry() {
        let all = [
            OciArch::ScmpArchX86,
            OciArch::ScmpArchX86_64,
            OciArch::ScmpArchX32,
            OciArch::ScmpArchArm,
            OciArch::ScmpArchAarch64,
            OciArch::ScmpArchMips,
            OciArch::ScmpArchMips64,
            OciArch::ScmpArchMips64n32,
            OciArch::ScmpArchMipsel,
            OciArch::ScmpArchMipsel64,
            OciArch::ScmpArchMipsel64n32,
            OciArch::ScmpArchPpc,
            OciArch::ScmpArchPpc64,
            OciArch::ScmpArchPpc64le,
            OciArch::ScmpArchS390,
            OciArch::ScmpArchS390x,
            OciArch::ScmpArchParisc,
            OciArch::ScmpArchParisc64,
            OciArch::ScmpArchRiscv64,
            OciArch::ScmpArchLoongarch64,
            OciArch::ScmpArchM68k,
            OciArch::ScmpArchSh,
            OciArch::ScmpArchSheb,
        ];
        for arch in all {
            let name = oci_name(arch).expect("named");
            let info = by_name(name).unwrap_or_else(|| panic!("{name} missing from ARCHES"));
            // The OCI enum carries libseccomp's token; it equals the audit value except for x32,
            // whose token is x86-64's with the 64-bit flag cleared.
            let token = arch as u32;
            if name == "SCMP_ARCH_X32" {
                assert_eq!(info.audit, token | AUDIT_64, "{name}");
            } else {
                assert_eq!(info.audit, token, "{name}");
            }
        }
        assert_eq!(oci_name(OciArch::ScmpArchNative), None);
        assert_eq!(ARCHES.len(), all.len());
    }

    #[test]
    fn native_is_known() {
        let native = native().expect("this host's architecture is in the table");
        assert_eq!(native.scmp, ScmpArch::native());
    }
}
