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
const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
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
pub(crate) fn update_one<K: Pod, V: Pod>(map: &MapData, key: &K, value: &V) -> io::Result<()> {
    elem(
        BPF_MAP_UPDATE_ELEM,
        map,
        (key as *const K).cast(),
        (value as *const V).cast(),
    )
}

/// One BPF_MAP_DELETE_ELEM.
pub(crate) fn delete_one<K: Pod>(map: &MapData, key: &K) -> io::Result<()> {
    elem(
        BPF_MAP_DELETE_ELEM,
        map,
        (key as *const K).cast(),
        std::ptr::null(),
    )
}

/// Entries per syscall: bounds the kernel's time under one call.
pub(crate) const BATCH: usize = 4096;

/// The outcome of one batch call: how many entries the kernel processed, and
/// the error that stopped it (if any).
pub(crate) struct Done {
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
pub(crate) fn update<K: Pod, V: Pod>(map: &MapData, keys: &[K], values: &[V]) -> Done {
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
pub(crate) fn delete<K: Pod>(map: &MapData, keys: &[K]) -> Done {
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

/// Reads entries `start..start + out.len()` of an array map into `out`,
/// `BATCH` per syscall (BPF_MAP_LOOKUP_BATCH, in_batch = the index before
/// `start`). `Ok(false)`: the map or kernel has no batch lookup (nothing
/// useful in `out`; read entry by entry instead).
pub(crate) fn lookup_array<V: Pod>(map: &MapData, start: u32, out: &mut [V]) -> io::Result<bool> {
    if read_mapped(map, start, out)? {
        return Ok(true);
    }
    let mut keys = vec![0u32; BATCH.min(out.len())];
    let mut done = 0usize;
    while done < out.len() {
        let n = BATCH.min(out.len() - done);
        let first = start + done as u32;
        let prev = first.wrapping_sub(1);
        let mut last = 0u32;
        let mut attr = BatchAttr {
            in_batch: if first == 0 {
                0
            } else {
                &prev as *const u32 as u64
            },
            out_batch: &mut last as *mut u32 as u64,
            keys: keys.as_mut_ptr() as u64,
            values: out[done..].as_mut_ptr() as u64,
            count: n as u32,
            map_fd: map.fd().as_fd().as_raw_fd() as u32,
            ..BatchAttr::default()
        };
        // SAFETY: `attr` is a valid `bpf_attr` batch member; `keys` holds
        // `n` u32 keys and `out[done..]` at least `n` values of the map's
        // value size (arrays: key u32, value `V`); `prev` and `last` are
        // u32 keys; all outlive the call.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &mut attr as *mut BatchAttr,
                std::mem::size_of::<BatchAttr>() as u32,
            )
        };
        let got = (attr.count as usize).min(n);
        if rc != 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // The end of the array: fine if everything asked for came.
                Some(libc::ENOENT) if got == n => {}
                Some(libc::EINVAL) | Some(libc::EOPNOTSUPP) | Some(ENOTSUPP) if done == 0 => {
                    return Ok(false)
                }
                _ => return Err(e),
            }
        }
        if got == 0
            || keys[..got]
                .iter()
                .enumerate()
                .any(|(i, k)| *k != first + i as u32)
        {
            return Err(io::Error::other("batch lookup returned unexpected keys"));
        }
        done += got;
    }
    Ok(true)
}

/// `BPF_F_MMAPABLE` (include/uapi/linux/bpf.h).
const BPF_F_MMAPABLE: u32 = 1 << 10;

/// Reads entries `start..start + out.len()` of a `BPF_F_MMAPABLE` array
/// through a read-only shared mapping: a copy per entry instead of the
/// kernel's per-entry batch loop (the big arrays of a slot are read back
/// whole: ~10× faster). `Ok(false)`: the map is not mmapable.
fn read_mapped<V: Pod>(map: &MapData, start: u32, out: &mut [V]) -> io::Result<bool> {
    let info = map.info().map_err(io::Error::other)?;
    if info.map_flags() & BPF_F_MMAPABLE == 0 || out.is_empty() {
        return Ok(false);
    }
    // Array values sit at a stride of the value size rounded up to 8.
    let size = std::mem::size_of::<V>();
    let stride = size.next_multiple_of(8);
    if info.value_size() as usize != size {
        return Err(io::Error::other(format!(
            "value size {} is not the {size} bytes read",
            info.value_size()
        )));
    }
    let end = start as usize + out.len();
    if end > info.max_entries() as usize {
        return Err(io::Error::from_raw_os_error(libc::ENOENT));
    }
    let len = end * stride;
    // SAFETY: a read-only shared mapping of the map's fd, `len` bytes (≤ the
    // array's size); unmapped below before anything else can use it.
    let base = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            map.fd().as_fd().as_raw_fd(),
            0,
        )
    };
    if base == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    for (i, v) in out.iter_mut().enumerate() {
        let at = (start as usize + i) * stride;
        // SAFETY: `at + size <= len` (i < out.len()); `V` is Pod, so any
        // bytes are a value; the read is unaligned-safe.
        *v = unsafe { std::ptr::read_unaligned(base.cast::<u8>().add(at).cast::<V>()) };
    }
    // SAFETY: `base`/`len` are the mapping made above.
    unsafe { libc::munmap(base, len) };
    Ok(true)
}
