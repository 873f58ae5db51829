//! An 802.1Q VLAN path without the 8021q module (this kernel has none, nor
//! act_vlan nor bridge VLAN filtering): two tiny tc programs, attached with tcx.
//!
//! - `push(ifindex)`: tags the frame with VLAN 100 and redirects it to the
//!   egress of `ifindex`;
//! - `pop(ifindex)`: frames tagged 100 lose the tag and are redirected to the
//!   egress of `ifindex`; everything else passes untouched.
//!
//! On each side a veth pair (`vlan100` with the addresses ↔ `vlan100p`) stands for
//! the VLAN sub-interface: `vlan100p` ingress pushes and redirects to the
//! trunk veth, the trunk's tc ingress pops and redirects back to `vlan100p`. With
//! tx-vlan offload off on the trunk, the tag is written into the frame, so the
//! host's XDP program (which runs before tc ingress) sees tagged frames.
//!
//! The programs are a dozen raw instructions loaded with bpf(2); an attachment
//! lives as long as its device (they all go with their namespace).
use std::ffi::CString;

use anyhow::{bail, Result};

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_SCHED_CLS: u32 = 3;
/// `enum bpf_attach_type` (Linux ≥ 6.6).
pub const BPF_TCX_INGRESS: u32 = 46;
const HELPER_SKB_VLAN_PUSH: i32 = 18;
const HELPER_SKB_VLAN_POP: i32 = 19;
const HELPER_REDIRECT: i32 = 23;
/// `struct __sk_buff` offsets.
const SKB_VLAN_PRESENT: i16 = 20;
const SKB_VLAN_TCI: i16 = 24;

#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Insn {
    code: u8,
    regs: u8,
    off: i16,
    imm: i32,
}

const fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        regs: (src << 4) | dst,
        off,
        imm,
    }
}
pub(crate) const fn mov_imm(dst: u8, imm: i32) -> Insn {
    insn(0xb7, dst, 0, 0, imm)
}
const fn mov_reg(dst: u8, src: u8) -> Insn {
    insn(0xbf, dst, src, 0, 0)
}
const fn call(helper: i32) -> Insn {
    insn(0x85, 0, 0, 0, helper)
}
pub(crate) const fn exit() -> Insn {
    insn(0x95, 0, 0, 0, 0)
}
const fn ldx_w(dst: u8, src: u8, off: i16) -> Insn {
    insn(0x61, dst, src, off, 0)
}

fn push_prog(vid: u16, ifindex: u32) -> Vec<Insn> {
    vec![
        // r1 = skb (already)
        mov_imm(2, 0x0081), // htons(ETH_P_8021Q) as a little-endian register
        mov_imm(3, i32::from(vid)),
        call(HELPER_SKB_VLAN_PUSH),
        mov_imm(1, ifindex as i32),
        mov_imm(2, 0),
        call(HELPER_REDIRECT), // r0 = TC_ACT_REDIRECT
        exit(),
    ]
}

fn pop_prog(vid: u16, ifindex: u32) -> Vec<Insn> {
    vec![
        mov_reg(6, 1),
        ldx_w(0, 6, SKB_VLAN_PRESENT),
        insn(0x15, 0, 0, 9, 0), // if r0 == 0 goto pass
        ldx_w(0, 6, SKB_VLAN_TCI),
        insn(0x57, 0, 0, 0, 0xfff),          // r0 &= VLAN_VID_MASK
        insn(0x55, 0, 0, 6, i32::from(vid)), // if r0 != vid goto pass
        mov_reg(1, 6),
        call(HELPER_SKB_VLAN_POP),
        mov_imm(1, ifindex as i32),
        mov_imm(2, 0),
        call(HELPER_REDIRECT),
        exit(),
        // pass:
        mov_imm(0, 0), // TC_ACT_OK
        exit(),
    ]
}

#[repr(C)]
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
struct ProgAttachAttr {
    target_ifindex: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
    relative_fd: u32,
    expected_revision: u64,
}

fn load(name: &str, insns: &[Insn]) -> Result<libc::c_int> {
    load_prog(BPF_PROG_TYPE_SCHED_CLS, 0, name, insns)
}

/// Loads `insns` as a program of `prog_type` (expecting `attach_type`);
/// returns its fd.
pub(crate) fn load_prog(
    prog_type: u32,
    attach_type: u32,
    name: &str,
    insns: &[Insn],
) -> Result<libc::c_int> {
    let license = CString::new("GPL").expect("no NUL");
    let mut log = vec![0u8; 64 * 1024];
    let mut prog_name = [0u8; 16];
    prog_name[..name.len().min(15)].copy_from_slice(&name.as_bytes()[..name.len().min(15)]);
    let attr = ProgLoadAttr {
        prog_type,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: log.len() as u32,
        log_buf: log.as_mut_ptr() as u64,
        kern_version: 0,
        prog_flags: 0,
        prog_name,
        prog_ifindex: 0,
        expected_attach_type: attach_type,
    };
    // SAFETY: attr and everything it points to outlive the call.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &attr as *const ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
        bail!(
            "loading program {name}: {err}; verifier: {}",
            String::from_utf8_lossy(&log[..end]).trim()
        );
    }
    Ok(fd as libc::c_int)
}

pub(crate) fn ifindex(dev: &str) -> Result<u32> {
    let c = CString::new(dev)?;
    // SAFETY: valid C string.
    let i = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if i == 0 {
        bail!("no interface {dev}: {}", std::io::Error::last_os_error());
    }
    Ok(i)
}

fn attach(prog_fd: libc::c_int, dev: &str) -> Result<()> {
    let attr = ProgAttachAttr {
        target_ifindex: ifindex(dev)?,
        attach_bpf_fd: prog_fd as u32,
        attach_type: BPF_TCX_INGRESS,
        attach_flags: 0,
        replace_bpf_fd: 0,
        relative_fd: 0,
        expected_revision: 0,
    };
    // SAFETY: attr outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attr as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    let err = std::io::Error::last_os_error();
    // SAFETY: our own fd; the attachment holds its own reference.
    unsafe { libc::close(prog_fd) };
    if rc != 0 {
        bail!("attaching a tcx ingress program to {dev}: {err}");
    }
    Ok(())
}

/// In the calling thread's namespace: frames entering `access` are tagged
/// `vid` and sent out of `trunk`; frames tagged `vid` entering `trunk` are
/// untagged and sent out of `access`.
pub fn bridge_vlan(access: &str, trunk: &str, vid: u16) -> Result<()> {
    let (a, t) = (ifindex(access)?, ifindex(trunk)?);
    attach(load("pc_vlan_push", &push_prog(vid, t))?, access)?;
    attach(load("pc_vlan_pop", &pop_prog(vid, a))?, trunk)?;
    Ok(())
}
