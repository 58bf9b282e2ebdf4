//! The embedded kernel object and loading it: BTF fixups, the globals (BTF offsets and
//! settings) and map sizes the programs are built against, then the kernel's verifier.

use aya::{Ebpf, EbpfLoader};
use collector_common::abi;

use super::config::KernelConfig;
use super::error::{hint_for, LoadError};
use super::offsets::KernelOffsets;
use super::self_tgid::OwnPidNamespace;

/// The kernel object built by `cargo xtask build-ebpf` (empty when it was not built).
static KERNEL_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/collector-ebpf.o"));

/// Drops the embedded kernel object's pages from the resident set once the programs are
/// loaded (about 8 MB, most of it debug info). They are file-backed and read-only, so a
/// later load simply reads them from the binary again.
pub fn release_object_pages() {
    // SAFETY: sysconf has no preconditions.
    let page = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
        n if n > 0 => n as usize,
        _ => return,
    };
    let start = KERNEL_OBJECT.as_ptr() as usize;
    // Whole pages inside the object only: the pages at its ends hold other data too.
    let first = start.div_ceil(page) * page;
    let end = (start + KERNEL_OBJECT.len()) / page * page;
    if end > first {
        // SAFETY: the range lies inside a read-only file mapping of this binary; with
        // MADV_DONTNEED its pages are re-read from the file on the next access.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_DONTNEED);
        }
    }
}

/// A copy of the kernel object in 8-byte aligned memory.
struct AlignedObject {
    words: Vec<u64>,
    len: usize,
}

impl AlignedObject {
    fn copy_of(bytes: &[u8]) -> Self {
        let mut words = vec![0u64; bytes.len().div_ceil(8)];
        let len = bytes.len();
        // SAFETY: `words` holds at least `len` initialized bytes; u8 has no alignment.
        unsafe { std::slice::from_raw_parts_mut(words.as_mut_ptr().cast::<u8>(), len) }
            .copy_from_slice(bytes);
        Self { words, len }
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: as in `copy_of`; the borrow of `words` bounds the slice's life.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        // SAFETY: as in `copy_of`.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), self.len) }
    }
}

/// Whether this binary was built with the kernel object.
pub(super) fn is_embedded() -> bool {
    !KERNEL_OBJECT.is_empty()
}

/// A random SipHash key for connection ids (from the kernel's CSPRNG), so an id
/// reveals nothing about the kernel address it was derived from.
fn random_key() -> Result<[u64; 2], LoadError> {
    use std::io::Read;
    let mut bytes = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .map_err(LoadError::Random)?;
    let (a, b) = bytes.split_at(8);
    Ok([
        u64::from_ne_bytes(a.try_into().expect("8 bytes")),
        u64::from_ne_bytes(b.try_into().expect("8 bytes")),
    ])
}

pub(super) fn bump_memlock_rlimit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones ignore it.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid struct.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) } != 0 {
        tracing::debug!("could not raise RLIMIT_MEMLOCK (fine on Linux >= 5.11)");
    }
}

/// Loads the embedded object with the globals and map sizes `config` and `offsets` ask
/// for (maps created, programs not yet loaded).
pub(super) fn load_object(
    config: &KernelConfig,
    offsets: &KernelOffsets,
    own_ns: &OwnPidNamespace,
) -> Result<Ebpf, LoadError> {
    let group_dead = u32::from(offsets.exit_has_group_dead && !config.exit_by_signal_live);
    let proc_has_audit = u32::from(offsets.proc_has_audit);
    let typed_cgroup = u32::from(offsets.typed_cgroup);
    let proc_has_compat = u32::from(offsets.proc_has_compat);
    let proc_has_bprm_executable = u32::from(offsets.proc_has_bprm_executable);
    let include_only = u32::from(config.include_only);
    // 0: none, 1: some (fixed), 2: ask EXCLUSION_GATES (live; see `exclusions`).
    let gate = |some: bool| {
        if config.live_exclusions {
            2
        } else {
            u32::from(some)
        }
    };
    let has_excluded_pids = gate(!config.excluded_pids.is_empty());
    let has_excluded_comms = gate(!config.excluded_comms.is_empty());
    let has_excluded_paths = gate(!config.excluded_path_prefixes.is_empty());
    let has_compat_syscalls = u32::from(offsets.compat_syscalls);
    let file_has_io_uring = u32::from(offsets.file_has_io_uring);
    let file_has_io_uring_ftruncate = u32::from(offsets.file_has_io_uring_ftruncate);
    let file_has_io_uring_xattr = u32::from(offsets.file_has_io_uring_xattr);
    let conn_id_key = random_key()?;
    let udp_report_interval_ns =
        u64::try_from(config.udp_report_interval.as_nanos()).unwrap_or(u64::MAX);

    // Own copy: its BTF is sanitized in place first (see `btf_fixup`), in an
    // 8-aligned buffer as the ELF parser wants.
    let mut object = AlignedObject::copy_of(KERNEL_OBJECT);
    let renamed = super::btf_fixup::sanitize_object(object.bytes_mut())?;
    if renamed > 0 {
        tracing::debug!(renamed, "sanitized BTF type names in the kernel object");
    }

    let exec_scratch_slots = aya::util::nr_cpus()
        .map_err(|(path, source)| LoadError::PossibleCpus { path, source })?
        as u32;
    let mut loader = EbpfLoader::new();
    for (name, value) in &offsets.values {
        loader.override_global(name, value, true);
    }
    loader
        .override_global(abi::globals::EXIT_HAS_GROUP_DEAD, &group_dead, true)
        .override_global(abi::globals::PROC_HAS_AUDIT, &proc_has_audit, true)
        .override_global(abi::globals::HAS_TYPED_CGROUP, &typed_cgroup, true)
        .override_global(abi::globals::PROC_HAS_COMPAT, &proc_has_compat, true)
        .override_global(
            abi::globals::PROC_HAS_BPRM_EXECUTABLE,
            &proc_has_bprm_executable,
            true,
        )
        .override_global(abi::globals::SELF_NS_DEV, &own_ns.dev, true)
        .override_global(abi::globals::SELF_NS_INO, &own_ns.ino, true)
        .override_global(abi::globals::SELF_NS_TGID, &own_ns.tgid, true)
        .override_global(abi::globals::INCLUDE_ONLY, &include_only, true)
        .override_global(abi::globals::HAS_EXCLUDED_PIDS, &has_excluded_pids, true)
        .override_global(abi::globals::HAS_EXCLUDED_COMMS, &has_excluded_comms, true)
        .override_global(abi::globals::HAS_EXCLUDED_PATHS, &has_excluded_paths, true)
        .override_global(
            abi::globals::PROCESS_WAKEUP_BYTES,
            &config.process_wakeup_bytes,
            true,
        )
        .override_global(
            abi::globals::NET_WAKEUP_BYTES,
            &config.network_wakeup_bytes,
            true,
        )
        .override_global(
            abi::globals::FILE_WAKEUP_BYTES,
            &config.file_wakeup_bytes,
            true,
        )
        .override_global(
            abi::globals::HAS_COMPAT_SYSCALLS,
            &has_compat_syscalls,
            true,
        )
        .override_global(abi::globals::FILE_HAS_IO_URING, &file_has_io_uring, true)
        .override_global(
            abi::globals::FILE_HAS_IO_URING_FTRUNCATE,
            &file_has_io_uring_ftruncate,
            true,
        )
        .override_global(
            abi::globals::FILE_HAS_IO_URING_XATTR,
            &file_has_io_uring_xattr,
            true,
        )
        .override_global(abi::globals::CONN_ID_KEY, &conn_id_key, true)
        .override_global(
            abi::globals::UDP_REPORT_INTERVAL_NS,
            &udp_report_interval_ns,
            true,
        )
        .map_max_entries(abi::maps::PROCESS_EVENTS, config.process_ring_bytes)
        // One exec-assembly slot per possible CPU (indexed by the CPU id).
        .map_max_entries(abi::maps::EXEC_SCRATCH, exec_scratch_slots)
        .map_max_entries(abi::maps::NET_EVENTS, config.network_ring_bytes)
        .map_max_entries(abi::maps::FILE_EVENTS, config.file_ring_bytes);
    loader
        .load(object.bytes())
        .map_err(|source| LoadError::Load {
            hint: hint_for(&source),
            source: Box::new(source),
        })
}
