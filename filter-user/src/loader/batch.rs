//! BPF_MAP_UPDATE_BATCH / BPF_MAP_DELETE_BATCH through the raw `bpf(2)`
//! syscall (aya 0.14 has no batch API): one syscall writes thousands of
//! entries instead of one. Map types or kernels without batch support (e.g.
//! kernels before 5.6) answer EINVAL/ENOTSUPP, and the caller falls back to
//! one syscall per entry from where the batch stopped.
use std::{
    io,
    os::fd::{AsFd, AsRawFd},
};

use aya::{maps::MapData, sys::SyscallError, Pod};
use nix::libc;

const BPF_MAP_UPDATE_ELEM: libc::c_long = 2;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
const BPF_MAP_DELETE_BATCH: libc::c_long = 27;
/// The kernel's internal "not supported" (not in libc).
const ENOTSUPP: i32 = 524;

/// `union bpf_attr`, the `batch` member (include/uapi/linux/bpf.h).
#[repr(C)]
#[derive(Default)]
struct BatchAttr {
    in_batch: u64,
    out_batch: u64,
    keys: u64,
    values: u64,
    count: u32,
    map_fd: u32,
    elem_flags: u64,
    flags: u64,
}

/// `union bpf_attr`, the member of BPF_MAP_*_ELEM.
#[repr(C)]
#[derive(Default)]
struct ElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

fn elem(cmd: libc::c_long, map: &MapData, key: *const u8, value: *const u8) -> io::Result<()> {
    let mut attr = ElemAttr {
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        key: key as u64,
        value: value as u64,
        ..ElemAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` elem member of the size passed;
    // `key` (and `value`, when not null) point to one Pod entry of the map's
    // key/value size that outlives the call.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut ElemAttr,
            std::mem::size_of::<ElemAttr>() as u32,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// One BPF_MAP_UPDATE_ELEM (BPF_ANY): the fallback for maps without batches.
pub(super) fn update_one<K: Pod, V: Pod>(map: &MapData, key: &K, value: &V) -> io::Result<()> {
    elem(
        BPF_MAP_UPDATE_ELEM,
        map,
        (key as *const K).cast(),
        (value as *const V).cast(),
    )
}

/// One BPF_MAP_DELETE_ELEM.
pub(super) fn delete_one<K: Pod>(map: &MapData, key: &K) -> io::Result<()> {
    elem(
        BPF_MAP_DELETE_ELEM,
        map,
        (key as *const K).cast(),
        std::ptr::null(),
    )
}

/// Entries per syscall: bounds the kernel's time under one call.
pub(super) const BATCH: usize = 4096;

/// The outcome of one batch call: how many entries the kernel processed, and
/// the error that stopped it (if any).
pub(super) struct Done {
    pub processed: usize,
    pub error: Option<io::Error>,
}

impl Done {
    /// True when the map (or kernel) has no batch support: fall back to
    /// per-entry calls for the rest.
    pub fn unsupported(&self) -> bool {
        self.error.as_ref().is_some_and(|e| {
            matches!(
                e.raw_os_error(),
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP)
            )
        })
    }

    pub fn into_error(self, call: &'static str) -> SyscallError {
        SyscallError {
            call,
            io_error: self
                .error
                .unwrap_or_else(|| io::Error::other("batch stopped early")),
        }
    }
}

fn batch(cmd: libc::c_long, map: &MapData, keys: *const u8, values: *const u8, n: usize) -> Done {
    let mut attr = BatchAttr {
        keys: keys as u64,
        values: values as u64,
        count: n as u32,
        map_fd: map.fd().as_fd().as_raw_fd() as u32,
        ..BatchAttr::default()
    };
    // SAFETY: `attr` is a valid `bpf_attr` batch member of the size passed;
    // `keys` (and `values`, when not null) point to `n` Pod entries of the
    // map's key/value sizes that outlive the call; the kernel writes back only
    // `attr.count`.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as u32,
        )
    };
    if rc == 0 {
        Done {
            processed: n,
            error: None,
        }
    } else {
        let error = io::Error::last_os_error();
        Done {
            processed: (attr.count as usize).min(n),
            error: Some(error),
        }
    }
}

/// Writes `keys[i] → values[i]` (BPF_ANY). `keys.len() == values.len()`.
pub(super) fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> Done {
    assert_eq!(keys.len(), values.len());
    if keys.is_empty() {
        return Done {
            processed: 0,
            error: None,
        };
    }
    batch(
        BPF_MAP_UPDATE_BATCH,
        map,
        keys.as_ptr().cast(),
        values.as_ptr().cast(),
        keys.len(),
    )
}

/// Deletes `keys`.
pub(super) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> Done {
    if keys.is_empty() {
        return Done {
            processed: 0,
            error: None,
        };
    }
    batch(
        BPF_MAP_DELETE_BATCH,
        map,
        keys.as_ptr().cast(),
        std::ptr::null(),
        keys.len(),
    )
}

const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;

/// Reads `n` consecutive entries of an array map from index `start`
/// (BPF_MAP_LOOKUP_BATCH, `BATCH` per syscall). `None` when the kernel has no
/// batch lookup for the map: the caller reads entry by entry.
pub(super) fn lookup_array<V: Pod + Default>(
    map: &MapData,
    start: u32,
    n: usize,
) -> Option<io::Result<Vec<V>>> {
    let mut out: Vec<V> = Vec::with_capacity(n);
    let mut keys = vec![0u32; BATCH];
    let mut values: Vec<V> = (0..BATCH).map(|_| V::default()).collect();
    while out.len() < n {
        let want = (n - out.len()).min(BATCH);
        // The kernel continues after the key in `in_batch`.
        let prev = start + out.len() as u32;
        let prev = prev.wrapping_sub(1);
        let mut next = 0u32;
        let mut attr = BatchAttr {
            in_batch: if prev == u32::MAX {
                0
            } else {
                &prev as *const u32 as u64
            },
            out_batch: &mut next as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: want as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` batch member; `keys` and
        // `values` hold `want` <= BATCH entries of the map's u32 key and `V`
        // value (Pod, the map's value size); `in_batch`/`out_batch` point to
        // u32 keys that outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let got = (attr.count as usize).min(want);
        if rc != 0 {
            let e = io::Error::last_os_error();
            let unsupported = Done {
                processed: 0,
                error: Some(io::Error::from_raw_os_error(e.raw_os_error().unwrap_or(0))),
            }
            .unsupported();
            if unsupported && out.is_empty() {
                return None;
            }
            // ENOENT: the end of the map, after `got` entries.
            if e.raw_os_error() != Some(libc::ENOENT) || got == 0 {
                return Some(Err(e));
            }
        }
        if got == 0 {
            return Some(Err(io::Error::other("batch lookup returned no entries")));
        }
        out.extend(values.drain(..got));
        values.extend((0..got).map(|_| V::default()));
    }
    Some(Ok(out))
}
