//! Is each attached program still attached? And attaching again one that is not.
//!
//! A program runs only while a link ties it to its hook. The collector holds every link's
//! file descriptor, so the kernel keeps them, but a link can still stop existing
//! outside the loader's control: `BPF_LINK_DETACH` (`bpftool link detach id N`) on link
//! types that support it, or a bug that drops one. On Linux 6.18 the kernel refuses
//! `BPF_LINK_DETACH` for the link types the collector uses (`raw_tracepoint`, which
//! `tp_btf` programs get too, and `perf_event` for classic tracepoints) with
//! `EOPNOTSUPP`, which `tests/tests/kernel_reattach.rs` checks.
//!
//! The check reads the kernel's own list of links, as `bpftool link` does
//! (`BPF_LINK_GET_NEXT_ID`, `BPF_LINK_GET_FD_BY_ID`, `BPF_OBJ_GET_INFO_BY_FD`), and
//! looks for a link to each attached program's id. It cannot see a link that still
//! exists but no longer fires (a detached cgroup link keeps its id, for example); for
//! the link types above no such state exists.

use std::collections::HashSet;

use aya::programs::{
    loaded_links, trace_point::TracePointLinkId, BtfTracePoint, ProgramError, RawTracePoint,
    TracePoint,
};
use aya::{Btf, Ebpf};

use super::catalogue::{Hook, ProgramSpec};

/// The link aya keeps for one attached program, by program type.
pub(crate) enum AttachedLink {
    Btf(aya::programs::tp_btf::BtfTracePointLinkId),
    Tracepoint(TracePointLinkId),
    Raw(aya::programs::raw_trace_point::RawTracePointLinkId),
}

/// What a check of one domain's links found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct LinkCheck {
    /// Programs that had no link in the kernel and were attached again.
    pub reattached: Vec<&'static str>,
    /// Programs that had no link and could not be attached again, with why.
    pub failed: Vec<(&'static str, String)>,
}

impl LinkCheck {
    /// Nothing was found missing.
    pub fn is_clean(&self) -> bool {
        self.reattached.is_empty() && self.failed.is_empty()
    }
}

/// Ids of the programs that have at least one link in the kernel. A link that goes away
/// between listing and opening it is skipped (it is gone either way); failing to list
/// at all is an error, so that a check never reads "no links" as "all detached".
pub(crate) fn linked_program_ids() -> Result<HashSet<u32>, std::io::Error> {
    let mut ids = HashSet::new();
    let mut listed_any = false;
    for info in loaded_links() {
        match info {
            Ok(info) => {
                listed_any = true;
                ids.insert(info.program_id());
            }
            Err(aya::programs::links::LinkError::SyscallError(e))
                if e.io_error.raw_os_error() == Some(libc::ENOENT) =>
            {
                listed_any = true;
            }
            Err(e) => {
                return Err(std::io::Error::other(format!(
                    "listing the kernel's BPF links: {e}"
                )))
            }
        }
    }
    if !listed_any {
        // The caller only asks while it holds links of its own: an empty list means the
        // listing did not work, not that every link vanished.
        return Err(std::io::Error::other(
            "the kernel listed no BPF links at all (listing refused?)",
        ));
    }
    Ok(ids)
}

/// The kernel id of a loaded program of `ebpf`.
pub(crate) fn program_id(ebpf: &Ebpf, name: &str) -> Option<u32> {
    Some(ebpf.program(name)?.info().ok()?.id())
}

/// Attaches `spec`'s program, which is still loaded, to its hook once more.
pub(crate) fn attach_loaded(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
) -> Result<AttachedLink, ProgramError> {
    let program = ebpf.program_mut(spec.name).ok_or(ProgramError::NotLoaded)?;
    Ok(match spec.hook {
        Hook::BtfTracepoint(_) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            AttachedLink::Btf(p.attach()?)
        }
        Hook::Tracepoint(category, name) => {
            let p: &mut TracePoint = program.try_into()?;
            AttachedLink::Tracepoint(p.attach(category, name)?)
        }
        Hook::RawTracepoint(name) => {
            let p: &mut RawTracePoint = program.try_into()?;
            AttachedLink::Raw(p.attach(name)?)
        }
    })
}

/// Loads (when needed) and attaches `spec`'s program: for a program whose link is gone
/// and that is no longer loaded either.
pub(crate) fn load_and_attach(
    ebpf: &mut Ebpf,
    spec: &ProgramSpec,
    btf: &Btf,
) -> Result<AttachedLink, ProgramError> {
    let program = ebpf.program_mut(spec.name).ok_or(ProgramError::NotLoaded)?;
    match spec.hook {
        Hook::BtfTracepoint(function) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.load(function, btf)?;
        }
        Hook::Tracepoint(..) => {
            let p: &mut TracePoint = program.try_into()?;
            p.load()?;
        }
        Hook::RawTracepoint(_) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.load()?;
        }
    }
    attach_loaded(ebpf, spec)
}

/// Closes one link, leaving its program loaded.
pub(crate) fn close(ebpf: &mut Ebpf, name: &str, link: AttachedLink) -> Result<(), ProgramError> {
    let program = ebpf.program_mut(name).ok_or(ProgramError::NotLoaded)?;
    match link {
        AttachedLink::Btf(id) => {
            let p: &mut BtfTracePoint = program.try_into()?;
            p.detach(id)
        }
        AttachedLink::Tracepoint(id) => {
            let p: &mut TracePoint = program.try_into()?;
            p.detach(id)
        }
        AttachedLink::Raw(id) => {
            let p: &mut RawTracePoint = program.try_into()?;
            p.detach(id)
        }
    }
}
