//! `portcullis detach --iface IF`: remove the filter from one interface while
//! the others keep it. Its pinned link goes (the kernel detaches the program
//! once nothing holds the link), and META stops listing it, so `status` and
//! the next daemon agree with the kernel. Maps and the other links stay.
use super::{pins::PinRoot, LoaderError};

/// What [`detach_iface`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IfaceDetached {
    pub detached: String,
    /// Interfaces whose pinned link stays.
    pub remaining: Vec<String>,
    /// The kernel link id that was unpinned (to wait for its release).
    #[serde(skip)]
    pub link_id: Option<u32>,
}

/// Unpins `iface`'s link and drops it from META. An error, changing nothing,
/// if no link is pinned for it.
pub fn detach_iface(root: &PinRoot, iface: &str) -> Result<IfaceDetached, LoaderError> {
    let pinned = root.pinned_links();
    if !pinned.iter().any(|p| p == iface) {
        return Err(LoaderError::Link {
            iface: iface.to_string(),
            detail: format!(
                "no filter is pinned for it under {} (filtered: {})",
                root.path().display(),
                if pinned.is_empty() {
                    "none".to_string()
                } else {
                    pinned.join(", ")
                }
            ),
        });
    }
    let before = root.link_ids();
    root.unpin_link(iface)?;
    let after = root.link_ids();
    let link_id = before.into_iter().find(|id| !after.contains(id));
    // META is written after the unpin: a failure here leaves only a stale
    // row, which the next daemon start rewrites.
    if let Ok(mut state) = root.open() {
        let mut meta = state.meta()?;
        meta.interfaces.retain(|m| m.name != iface);
        state.set_meta(&meta)?;
    }
    Ok(IfaceDetached {
        detached: iface.to_string(),
        remaining: pinned.into_iter().filter(|p| p != iface).collect(),
        link_id,
    })
}
