//! The TC egress program (`portcullis_egress`, download counting for
//! transfer quotas) beside each interface's XDP link.
//!
//! Linux ≥ 6.6: a tcx link pinned at `<root>/egress/<iface>`, replaced
//! atomically (`bpf_link_update`) by the next load, like the XDP link.
//! Linux 6.1: no tcx; a `clsact` egress filter (netlink) at a fixed priority
//! and handle, which outlives the process that attached it and is replaced
//! in place by the next load (no gap). It is not a bpf_link, so it cannot be
//! pinned: removing the filter removes it by name, on the interfaces with a
//! pinned XDP link.
use std::{fs, io, path::PathBuf};

use aya::{
    programs::{
        links::{FdLink, PinnedLink},
        tc::{self, NlOptions, SchedClassifierLink, TcAttachOptions, TcHandle},
        LinkOrder, SchedClassifier, TcAttachType,
    },
    util::KernelVersion,
};
use filter_common::EGRESS_PROGRAM_NAME;

use super::{pins::PinRoot, LoaderError};

/// The clsact filter's place (6.1): a priority no `tc` default takes (they
/// count down from 49152) and handle 1 at it.
const NL_PRIORITY: u16 = 0x5043;
const NL_HANDLE: TcHandle = TcHandle::new(0, 1);

/// How the egress program is attached on this kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EgressMode {
    Tcx,
    Clsact,
}

impl EgressMode {
    pub fn current() -> EgressMode {
        match KernelVersion::current() {
            Ok(v) if v >= KernelVersion::new(6, 6, 0) => EgressMode::Tcx,
            _ => EgressMode::Clsact,
        }
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            EgressMode::Tcx => "tcx",
            EgressMode::Clsact => "clsact",
        }
    }
}

fn link_err(iface: &str) -> impl FnOnce(String) -> LoaderError + '_ {
    move |detail| LoaderError::Link {
        iface: iface.into(),
        detail: format!("egress (transfer quotas): {detail}"),
    }
}

/// Where the tcx link of `iface` is pinned.
pub fn pin_path(root: &PinRoot, iface: &str) -> PathBuf {
    root.path().join("egress").join(iface)
}

/// Attaches `program` at `iface`'s egress, or replaces the program of the
/// one a previous load attached. Returns true when it was replaced.
pub fn attach(
    program: &mut SchedClassifier,
    root: &PinRoot,
    iface: &str,
) -> Result<bool, LoaderError> {
    match EgressMode::current() {
        EgressMode::Tcx => attach_tcx(program, root, iface),
        EgressMode::Clsact => attach_clsact(program, iface),
    }
}

fn attach_tcx(
    program: &mut SchedClassifier,
    root: &PinRoot,
    iface: &str,
) -> Result<bool, LoaderError> {
    let path = pin_path(root, iface);
    if path.exists() {
        let pinned = PinnedLink::from_pin(&path).map_err(|e| link_err(iface)(e.to_string()))?;
        let link = SchedClassifierLink::try_from(FdLink::from(pinned))
            .map_err(|e| link_err(iface)(format!("{}: {e}", path.display())))?;
        let id = program.attach_to_link(link)?;
        // Let go of the handle without detaching: the pin holds the link.
        drop(FdLink::try_from(program.take_link(id)?));
        return Ok(true);
    }
    let dir = root.path().join("egress");
    fs::create_dir_all(&dir).map_err(|source| LoaderError::Io { path: dir, source })?;
    let id = program.attach_with_options(
        iface,
        TcAttachType::Egress,
        TcAttachOptions::TcxOrder(LinkOrder::default()),
    )?;
    let link = FdLink::try_from(program.take_link(id)?)
        .map_err(|e| link_err(iface)(format!("no bpf_link: {e}")))?;
    link.pin(&path)
        .map_err(|e| link_err(iface)(format!("pinning at {}: {e}", path.display())))?;
    Ok(false)
}

fn attach_clsact(program: &mut SchedClassifier, iface: &str) -> Result<bool, LoaderError> {
    // EEXIST: the qdisc is there already (ours or the operator's).
    if let Err(e) = tc::qdisc_add_clsact(iface) {
        let exists = matches!(&e, tc::TcError::NetlinkError(n) if n.raw_os_error() == Some(nix::libc::EEXIST));
        if !exists {
            return Err(link_err(iface)(format!("adding the clsact qdisc: {e}")));
        }
    }
    // Replace ours in place if it is there (create = false), else create it.
    let ours =
        SchedClassifierLink::attached(iface, TcAttachType::Egress, NL_PRIORITY, NL_HANDLE, None)
            .map_err(|e| link_err(iface)(e.to_string()))?;
    let (id, replaced) = match program.attach_to_link(ours) {
        Ok(id) => (id, true),
        Err(_) => (
            program.attach_with_options(
                iface,
                TcAttachType::Egress,
                TcAttachOptions::Netlink(NlOptions {
                    priority: NL_PRIORITY,
                    handle: NL_HANDLE,
                    classid: None,
                }),
            )?,
            false,
        ),
    };
    // A dropped netlink link detaches its filter: this one must outlive the
    // process, like a pinned link.
    std::mem::forget(program.take_link(id)?);
    Ok(replaced)
}

/// Removes the egress program from `iface` (either kind; absent is fine).
pub fn detach(root: &PinRoot, iface: &str) -> Result<(), LoaderError> {
    let path = pin_path(root, iface);
    match fs::remove_file(&path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(source) => return Err(LoaderError::Io { path, source }),
    }
    if EgressMode::current() == EgressMode::Clsact {
        match tc::qdisc_detach_program(iface, TcAttachType::Egress, EGRESS_PROGRAM_NAME) {
            Ok(()) => {}
            // Not attached, or the interface is gone (and the filter with it).
            Err(tc::TcError::IoError(e)) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) if nix::net::if_::if_nametoindex(iface).is_err() => {
                tracing::debug!("{iface}: gone ({e})");
            }
            Err(e) => return Err(link_err(iface)(format!("removing the clsact filter: {e}"))),
        }
    }
    Ok(())
}
