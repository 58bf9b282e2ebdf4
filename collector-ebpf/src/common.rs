//! Helpers shared by all programs: filtering, record headers, ring buffer submission and
//! loss counters.

use core::ptr::{read_volatile, write_volatile};

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    helpers::{
        bpf_get_current_comm,
        generated::{
            bpf_get_current_cgroup_id, bpf_get_current_task_btf, bpf_ktime_get_boot_ns,
            bpf_probe_read_kernel,
        },
    },
    macros::map,
    maps::{lpm_trie::Key, Array, HashMap, LpmTrie, PerCpuArray, RingBuf},
};
use collector_common::abi::parked;
use collector_common::{
    counter_index, RecordHeader, RecordKind, COMM_LEN, COUNTERS_LEN, COUNTER_EMITTED, COUNTER_LOST,
    PATH_PREFIX_LEN,
};

/// Process ring buffer; the loader resizes it (`process_ring_bytes`).
#[map]
pub static PROCESS_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Network ring buffer; the loader resizes it (`network_ring_bytes`).
#[map]
pub static NET_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Filesystem ring buffer; the loader resizes it (`file_ring_bytes`).
#[map]
pub static FILE_EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Per-CPU counters, indexed by `collector_common::counter_index`.
#[map]
pub static COUNTERS: PerCpuArray<u64> = PerCpuArray::with_max_entries(COUNTERS_LEN, 0);

/// Process ids (tgid) whose events are dropped in the kernel.
#[map]
pub static EXCLUDED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Task names (`comm`, NUL-padded) whose events are dropped in the kernel.
#[map]
pub static EXCLUDED_COMMS: HashMap<[u8; COMM_LEN], u8> = HashMap::with_max_entries(256, 0);

/// When `INCLUDE_ONLY` is set: the only process ids (tgid) whose events are recorded.
#[map]
pub static INCLUDED_PIDS: HashMap<u32, u8> = HashMap::with_max_entries(1024, 0);

/// Set by the loader to watch only the processes in `INCLUDED_PIDS` (targeted
/// monitoring, and exact loss accounting in tests). Zero, the default, is
/// constant-folded away by the verifier, so it costs nothing when off.
#[unsafe(no_mangle)]
static INCLUDE_ONLY: u32 = 0;

/// Path prefixes whose file events are dropped in the kernel (longest-prefix match on
/// the path as the process passed it; value unused).
#[map]
pub static EXCLUDED_PATH_PREFIXES: LpmTrie<[u8; PATH_PREFIX_LEN], u8> =
    LpmTrie::with_max_entries(256, 0);

/// Per-CPU scratch for the LPM lookup key (too big for the 512-byte BPF stack next to
/// everything else a file program holds).
#[map]
static PATH_KEY: PerCpuArray<Key<[u8; PATH_PREFIX_LEN]>> = PerCpuArray::with_max_entries(1, 0);

/// Set by the loader when `EXCLUDED_PATH_PREFIXES` has entries (1), or to
/// `EXCLUSIONS_LIVE` when the exclusions can change while the programs run.
#[unsafe(no_mangle)]
static HAS_EXCLUDED_PATHS: u32 = 0;

/// A `HAS_EXCLUDED_*` value saying: ask `EXCLUSION_GATES`, which userspace updates when
/// it changes the exclusion maps (a configuration reload).
const EXCLUSIONS_LIVE: u32 = 2;
/// Slots of `EXCLUSION_GATES`.
const GATE_PIDS: u32 = 0;
const GATE_COMMS: u32 = 1;
const GATE_PATHS: u32 = 2;

/// Whether each exclusion set has entries, for programs loaded with live exclusions:
/// an array lookup per event, so that an empty set costs no hash or trie lookup.
#[map]
static EXCLUSION_GATES: Array<u32> = Array::with_max_entries(3, 0);

/// Whether the exclusion set behind `constant` (a `HAS_EXCLUDED_*`) has entries.
#[inline(always)]
fn exclusion_gate(constant: u32, slot: u32) -> bool {
    match constant {
        0 => false,
        EXCLUSIONS_LIVE => EXCLUSION_GATES.get(slot).is_some_and(|on| *on != 0),
        _ => true,
    }
}

/// True when the path (`len` bytes at `path`, kernel memory) starts with an excluded
/// prefix.
#[inline(always)]
pub fn path_excluded(path: *const u8, len: u32) -> bool {
    if !exclusion_gate(unsafe { read_volatile(&HAS_EXCLUDED_PATHS) }, GATE_PATHS) {
        return false;
    }
    let Some(key) = PATH_KEY.get_ptr_mut(0) else {
        return false;
    };
    let n = if len as usize > PATH_PREFIX_LEN {
        PATH_PREFIX_LEN as u32
    } else {
        len
    };
    unsafe {
        (*key).prefix_len = n * 8;
        // No zeroing first (a 128-byte byte-wise `memset` subprogram): the read fills
        // all of `data` (zeroes it on failure), and bytes past `n` are outside the
        // prefix the trie compares.
        if bpf_probe_read_kernel(
            (&raw mut (*key).data).cast(),
            PATH_PREFIX_LEN as u32,
            path.cast(),
        ) < 0
        {
            return false;
        }
        EXCLUDED_PATH_PREFIXES.get(&*key).is_some()
    }
}

/// Set by the loader when `EXCLUDED_PIDS` / `EXCLUDED_COMMS` have entries; zero lets
/// the verifier drop those lookups from every program.
#[unsafe(no_mangle)]
static HAS_EXCLUDED_PIDS: u32 = 0;
#[unsafe(no_mangle)]
static HAS_EXCLUDED_COMMS: u32 = 0;

/// The collector's own tgid as the kernel sees it (the initial pid namespace), at
/// index 0: its events would feed back into themselves. Written once at load by
/// `proc_resolve_self`, which can tell the loader's thread from inside any pid
/// namespace; 0 (nothing excluded) until then.
#[map]
pub static SELF_TGID: Array<u32> = Array::with_max_entries(1, 0);

/// The loader's pid namespace (nsfs device and inode of `/proc/self/ns/pid`) and its
/// tgid there (`getpid()`), set at load for `proc_resolve_self`.
#[unsafe(no_mangle)]
static SELF_NS_DEV: u64 = 0;
#[unsafe(no_mangle)]
static SELF_NS_INO: u64 = 0;
#[unsafe(no_mangle)]
static SELF_NS_TGID: u32 = 0;

/// Processes whose image, at their last exec, had an excluded comm (the name the kernel
/// gave it from the executed file), and their fork children. Keyed by tgid; entries end
/// at exec and exit. A later rename (`prctl(PR_SET_NAME)`, `/proc/self/comm`) neither
/// enters nor leaves it.
#[map]
pub static EXCLUDED_COMM_PROCS: HashMap<u32, u8> = HashMap::with_max_entries(16384, 0);

/// One-shot program run at load: writes the host tgid of whichever loader thread makes
/// the next syscall into `SELF_TGID`, then is detached.
#[aya_ebpf::macros::btf_tracepoint(function = "sys_enter")]
pub fn proc_resolve_self(_ctx: aya_ebpf::programs::BtfTracePointContext) -> i32 {
    let mut info = aya_ebpf::bindings::bpf_pidns_info { pid: 0, tgid: 0 };
    let ret = unsafe {
        aya_ebpf::helpers::generated::bpf_get_ns_current_pid_tgid(
            read_volatile(&SELF_NS_DEV),
            read_volatile(&SELF_NS_INO),
            &mut info,
            core::mem::size_of::<aya_ebpf::bindings::bpf_pidns_info>() as u32,
        )
    };
    // Non-zero: the task is not in the loader's pid namespace at all.
    if ret != 0 || info.tgid != unsafe { read_volatile(&SELF_NS_TGID) } {
        return 0;
    }
    if let Some(slot) = SELF_TGID.get_ptr_mut(0) {
        unsafe { *slot = (aya_ebpf::helpers::bpf_get_current_pid_tgid() >> 32) as u32 };
    }
    0
}

/// Bytes pending in a ring buffer at which a submit wakes the reader. 0 keeps the
/// kernel's adaptive wakeup (wake only when the reader has caught up). Above 0 the
/// reader is woken only past the watermark and otherwise drains on its own timer,
/// so a storm does not cost one wakeup per event.
#[unsafe(no_mangle)]
static PROCESS_WAKEUP_BYTES: u64 = 0;
/// Wakeup watermark of the network ring (see `PROCESS_WAKEUP_BYTES`).
#[unsafe(no_mangle)]
static NET_WAKEUP_BYTES: u64 = 0;
/// Wakeup watermark of the filesystem ring (see `PROCESS_WAKEUP_BYTES`).
#[unsafe(no_mangle)]
static FILE_WAKEUP_BYTES: u64 = 0;

/// True when the current task's events must not be recorded.
#[inline(always)]
pub fn excluded(pid_tgid: u64) -> bool {
    if excluded_by_pid(pid_tgid) {
        return true;
    }
    if !has_excluded_comms() {
        return false;
    }
    // Not the current comm: the process can rename itself into (or out of) it.
    unsafe { EXCLUDED_COMM_PROCS.get((pid_tgid >> 32) as u32) }.is_some()
}

/// The exclusions by process id only (the collector itself, `include_pids`,
/// `exclude_pids`), not by comm: for records whose process chose its comm in the very
/// call being recorded (an exec takes its name from the path it was given).
#[inline(always)]
pub fn excluded_by_pid(pid_tgid: u64) -> bool {
    let tgid = (pid_tgid >> 32) as u32;
    if let Some(own) = SELF_TGID.get(0) {
        if *own != 0 && *own == tgid {
            return true;
        }
    }
    if unsafe { read_volatile(&INCLUDE_ONLY) } != 0 && unsafe { INCLUDED_PIDS.get(tgid) }.is_none()
    {
        return true;
    }
    has_excluded_pids() && unsafe { EXCLUDED_PIDS.get(tgid) }.is_some()
}

/// Whether comm exclusions are configured.
#[inline(always)]
pub fn has_excluded_comms() -> bool {
    exclusion_gate(unsafe { read_volatile(&HAS_EXCLUDED_COMMS) }, GATE_COMMS)
}

/// Whether pid exclusions are configured.
#[inline(always)]
pub fn has_excluded_pids() -> bool {
    exclusion_gate(unsafe { read_volatile(&HAS_EXCLUDED_PIDS) }, GATE_PIDS)
}

/// At exec: a pid exclusion ends (the pid now runs another program), and the comm
/// exclusion is decided again from the name the kernel just gave the new image.
#[inline(always)]
pub fn exclusions_at_exec(tgid: u32) {
    if has_excluded_pids() {
        let _ = EXCLUDED_PIDS.remove(tgid);
    }
    if has_excluded_comms() {
        let excluded_image = match bpf_get_current_comm() {
            Ok(comm) => unsafe { EXCLUDED_COMMS.get(comm) }.is_some(),
            Err(_) => false,
        };
        if excluded_image {
            let _ = EXCLUDED_COMM_PROCS.insert(tgid, 1, 0);
        } else {
            let _ = EXCLUDED_COMM_PROCS.remove(tgid);
        }
    }
}

/// At fork: a child of an excluded image runs that image too.
#[inline(always)]
pub fn exclusions_at_fork(parent_tgid: u32, child_tgid: u32) {
    if has_excluded_comms() && unsafe { EXCLUDED_COMM_PROCS.get(parent_tgid) }.is_some() {
        let _ = EXCLUDED_COMM_PROCS.insert(child_tgid, 1, 0);
    }
}

/// At the exit of a process's last thread: its pid may be reused by anyone.
#[inline(always)]
pub fn exclusions_at_exit(tgid: u32) {
    if has_excluded_pids() {
        let _ = EXCLUDED_PIDS.remove(tgid);
    }
    if has_excluded_comms() {
        let _ = EXCLUDED_COMM_PROCS.remove(tgid);
    }
}

/// Fills `h` from the current task.
#[inline(always)]
pub unsafe fn fill_header(h: *mut RecordHeader, kind: RecordKind, pid_tgid: u64) {
    use crate::offsets::get;
    // uid/gid, comm and the leader's start time are typed loads from the task (no
    // helper call each): `task->cred->{uid,gid}` is what `bpf_get_current_uid_gid`
    // reads, and `comm` is kept NUL-padded by the kernel (`__set_task_comm`).
    let task = current_task_btf();
    unsafe {
        let cred: *const u8 = load_btf(task, get::OFF_PROC_TASK_CRED());
        (*h).kind = kind as u32;
        (*h).flags = 0;
        (*h).ktime_ns = bpf_ktime_get_boot_ns();
        (*h).pid = (pid_tgid >> 32) as u32;
        (*h).tid = pid_tgid as u32;
        (*h).uid = load_btf(cred, get::OFF_PROC_CRED_UID());
        (*h).gid = load_btf(cred, get::OFF_PROC_CRED_GID());
        (*h).cgroup_id = if crate::offsets::has_typed_cgroup() {
            // What the helper returns (`cgroup_id(task_dfl_cgroup(current))`), as typed
            // loads: the helper call costs more than the four loads.
            let cset: *const u8 = load_btf(task, get::OFF_TASK_CGROUPS());
            let cgrp: *const u8 = load_btf(cset, get::OFF_CSS_SET_DFL_CGRP());
            let kn: *const u8 = load_btf(cgrp, get::OFF_CGROUP_KN());
            load_btf(kn, get::OFF_KERNFS_NODE_ID())
        } else {
            bpf_get_current_cgroup_id()
        };
        // Two 8-byte loads inside the `char comm[16]` array (BTF allows any scalar
        // load within an int array). Unaligned-safe: `comm` is 8-aligned in the task,
        // and the header's `comm` follows two u64 fields.
        let comm = get::OFF_TASK_COMM();
        let dst = (&raw mut (*h).comm).cast::<u64>();
        core::ptr::write_unaligned(dst, load_btf::<u64>(task, comm));
        core::ptr::write_unaligned(dst.add(1), load_btf::<u64>(task, comm + 8));
        let leader: *const u8 = load_btf(task, get::OFF_PROC_TASK_GROUP_LEADER());
        (*h).process_start_ns = load_btf(leader, get::OFF_TASK_START_BOOTTIME());
    }
}

/// Copies a record header as eight `u64` moves: a plain assignment of the 64-byte
/// struct can become a call of the byte-wise `memmove` subprogram.
#[inline(always)]
pub unsafe fn copy_header(dst: *mut RecordHeader, src: *const RecordHeader) {
    const WORDS: usize = size_of::<RecordHeader>() / 8;
    let (d, s) = (dst.cast::<u64>(), src.cast::<u64>());
    for i in 0..WORDS {
        unsafe { write_volatile(d.add(i), read_volatile(s.add(i))) };
    }
}

/// The current task as a BTF-typed pointer (`bpf_get_current_task_btf`, 5.11): loads
/// through it, and through the struct pointers loaded from it, are plain loads the
/// verifier checks against BTF and makes fault-safe (a NULL pointer reads 0), not one
/// `bpf_probe_read_kernel` helper call each. See [`load_btf`].
#[inline(always)]
pub fn current_task_btf() -> *const u8 {
    unsafe { bpf_get_current_task_btf() as *const u8 }
}

/// A plain load of a `T` at `base + off`, where `base` is a BTF-typed pointer
/// ([`current_task_btf`], a typed tracepoint argument, or a struct pointer loaded with
/// this). `off` must be a field's offset (the loader's BTF offsets are frozen constants
/// to the verifier), and a pointer field must be loaded whole. `read_volatile` keeps it
/// one load of exactly `T`.
#[inline(always)]
pub unsafe fn load_btf<T: Copy>(base: *const u8, off: u64) -> T {
    unsafe { read_volatile(base.wrapping_add(off as usize) as *const T) }
}

#[inline(always)]
fn bump(index: u32) {
    if let Some(counter) = COUNTERS.get_ptr_mut(index) {
        // Per-CPU slot: no other CPU writes it, and a program is not preempted by
        // itself on the same CPU for tracepoints, so a plain add is exact.
        unsafe { *counter += 1 };
    }
}

/// Counts a record lost because its ring buffer had no room.
#[inline(always)]
pub fn count_lost(kind: RecordKind) {
    bump(counter_index(kind, COUNTER_LOST));
}

/// Counts a loss (or a degraded record) of `kind` for `reason`, one of
/// `collector_common::COUNTER_LOST*` / `COUNTER_PATH_UNREADABLE`.
#[inline(always)]
pub fn count_loss(kind: RecordKind, reason: u32) {
    bump(counter_index(kind, reason));
}

/// Counts a submitted record.
#[inline(always)]
pub fn count_emitted(kind: RecordKind) {
    bump(counter_index(kind, COUNTER_EMITTED));
}

/// Flags for `bpf_ringbuf_submit`/`output` under the wakeup policy of `watermark`, for a
/// record of `len` bytes. `reserved`: the record is already reserved (so counted in the
/// ring's pending bytes), else it is about to be written by `output`.
///
/// The reader is woken when the pending bytes cross a multiple of the watermark, not on
/// every submit above it: a wakeup is an irq_work self-IPI (an APIC write, a VM exit in a
/// guest), and from the watermark until the woken reader has drained, a storm would
/// otherwise raise one per record (perf showed `arch_irq_work_raise` at 14% of an open
/// storm's samples). A crossing missed by a race between CPUs is made up at the next
/// multiple, and below it the reader drains on its own timer.
///
/// While the ring's reader is parked (`READER_PARKED` at `slot`: idle, asleep without its
/// timer) the kernel's adaptive wakeup is used instead: the first record into the empty
/// ring wakes it at once, the ones after it until the reader has caught up do not.
#[inline(always)]
pub fn wakeup_flags(ring: &RingBuf, slot: u32, watermark: u64, len: u64, reserved: bool) -> u64 {
    if watermark == 0 || reader_parked(slot) {
        return 0;
    }
    // Each record also takes the ring's 8-byte header, rounded up to 8.
    let len = ((len + 7) & !7) + 8;
    let avail = ring.query(BPF_RB_AVAIL_DATA as u64);
    let (before, after) = if reserved {
        (avail.saturating_sub(len), avail)
    } else {
        (avail, avail + len)
    };
    if after >= watermark && before / watermark != after / watermark {
        BPF_RB_FORCE_WAKEUP as u64
    } else {
        BPF_RB_NO_WAKEUP as u64
    }
}

/// Set by a ring's reader (at its `collector_common::abi::parked` slot) while it sleeps
/// without its timer: an idle host then costs no polling, and the next record wakes the
/// reader (see [`wakeup_flags`]).
#[map]
static READER_PARKED: Array<u32> = Array::with_max_entries(parked::SLOTS, 0);

#[inline(always)]
fn reader_parked(slot: u32) -> bool {
    READER_PARKED
        .get(slot)
        .is_some_and(|v| unsafe { read_volatile(v) } != 0)
}

/// When the process ring last woke its reader for an exec (`bpf_ktime_get_boot_ns`).
#[map]
static PROCESS_LAST_WAKE: Array<u64> = Array::with_max_entries(1, 0);

/// Shortest time between two exec-driven wakeups of the process ring's reader.
const EXEC_WAKE_MIN_NS: u64 = 2_000_000;

/// Wakeup flags for an exec record: wake the reader (when it has caught up: the kernel's
/// adaptive wakeup) unless an exec woke it less than 2 ms ago, so an exec on an idle host
/// reaches subscribers at once while an exec storm costs at most 500 wakeups a second
/// (records in between ride along, or wait for the reader's timer).
/// `now` is the record's own `ktime_ns` (a second clock read costs a helper call and,
/// in a VM, a paravirtual clock read).
#[inline(always)]
pub fn exec_wakeup_flags(now: u64, len: u64) -> u64 {
    let Some(last) = PROCESS_LAST_WAKE.get_ptr_mut(0) else {
        return 0;
    };
    // Racy across CPUs by design: at worst two CPUs both wake the reader.
    if now.wrapping_sub(unsafe { *last }) >= EXEC_WAKE_MIN_NS {
        unsafe { *last = now };
        0
    } else {
        wakeup_flags(
            &PROCESS_EVENTS,
            parked::SLOT_PROCESS,
            unsafe { read_volatile(&PROCESS_WAKEUP_BYTES) },
            len,
            false,
        )
    }
}

/// Wakeup flags for a record of `len` bytes reserved in the process ring buffer.
#[inline(always)]
pub fn process_wakeup_flags(len: u64) -> u64 {
    wakeup_flags(
        &PROCESS_EVENTS,
        parked::SLOT_PROCESS,
        unsafe { read_volatile(&PROCESS_WAKEUP_BYTES) },
        len,
        true,
    )
}

/// Wakeup flags for the network ring buffer.
#[inline(always)]
pub fn net_wakeup_flags(len: u64) -> u64 {
    wakeup_flags(
        &NET_EVENTS,
        parked::SLOT_NETWORK,
        unsafe { read_volatile(&NET_WAKEUP_BYTES) },
        len,
        true,
    )
}

/// Wakeup flags for the filesystem ring buffer.
#[inline(always)]
pub fn file_wakeup_flags(len: u64) -> u64 {
    wakeup_flags(
        &FILE_EVENTS,
        parked::SLOT_FILESYSTEM,
        unsafe { read_volatile(&FILE_WAKEUP_BYTES) },
        len,
        false,
    )
}

/// Reads a `T` at `base + offset` in kernel memory.
#[inline(always)]
pub unsafe fn read_kernel<T: Copy + Default>(base: *const u8, offset: u64) -> Result<T, i64> {
    // Uninitialised: a zeroed array `T` costs a byte-wise `memset` subprogram call; the
    // helper writes every byte (zeroes on failure, which is not read).
    let mut value = core::mem::MaybeUninit::<T>::uninit();
    let ret = unsafe {
        bpf_probe_read_kernel(
            value.as_mut_ptr().cast(),
            core::mem::size_of::<T>() as u32,
            base.wrapping_add(offset as usize).cast(),
        )
    };
    if ret < 0 {
        Err(ret)
    } else {
        Ok(unsafe { value.assume_init() })
    }
}

/// The `struct file *` behind the current task's descriptor `fd`.
#[inline(always)]
pub unsafe fn fd_to_file(fd: u64) -> Result<*const u8, i64> {
    use crate::offsets::get;
    unsafe {
        // task -> files -> fdt are typed loads; `fdt->fd` is a `struct file **`, which
        // BTF types no further, so the slot itself is one helper read.
        let files: *const u8 = load_btf(current_task_btf(), get::OFF_TASK_FILES());
        let fdt: *const u8 = load_btf(files, get::OFF_FILES_FDT());
        let max_fds: u32 = load_btf(fdt, get::OFF_FDT_MAX_FDS());
        if fd >= max_fds as u64 {
            return Err(-9);
        }
        let array: u64 = load_btf(fdt, get::OFF_FDT_FD());
        let file: u64 = read_kernel(array as *const u8, fd * 8)?;
        if file == 0 {
            return Err(-9);
        }
        Ok(file as *const u8)
    }
}

/// Argument `n` (0..=4) of the syscall whose saved registers are `regs` (x86_64 ABI:
/// di, si, dx, r10, r8), for the raw `sys_enter`/`sys_exit` fallback.
#[inline(always)]
pub fn syscall_arg(regs: *const u8, n: usize) -> u64 {
    use crate::offsets::get;
    let off = match n {
        0 => get::OFF_REGS_DI(),
        1 => get::OFF_REGS_SI(),
        2 => get::OFF_REGS_DX(),
        3 => get::OFF_REGS_R10(),
        _ => get::OFF_REGS_R8(),
    };
    unsafe { read_kernel(regs, off) }.unwrap_or(0)
}

/// The syscall number saved in `regs` (`orig_ax`).
#[inline(always)]
pub fn syscall_nr(regs: *const u8) -> u64 {
    unsafe { read_kernel(regs, crate::offsets::get::OFF_REGS_ORIG_AX()) }.unwrap_or(u64::MAX)
}

/// `syscall_arg` for the typed `regs` argument of a BTF `sys_enter`/`sys_exit`
/// tracepoint: plain loads (see `syscall_nr_btf`).
#[inline(always)]
pub fn syscall_arg_btf(regs: *const u8, n: usize) -> u64 {
    use crate::offsets::get;
    let off = match n {
        0 => get::OFF_REGS_DI(),
        1 => get::OFF_REGS_SI(),
        2 => get::OFF_REGS_DX(),
        3 => get::OFF_REGS_R10(),
        _ => get::OFF_REGS_R8(),
    } as usize;
    unsafe { core::ptr::read_volatile(regs.wrapping_add(off) as *const u64) }
}

/// `syscall_nr` for the `regs` argument of a BTF `sys_exit` tracepoint: a typed kernel
/// pointer, so a plain load (checked by the verifier against `struct pt_regs`, faulting
/// safely) instead of a helper call. Every syscall on the machine passes here (in
/// `sys_exit_shared`, before anything else).
#[inline(always)]
pub fn syscall_nr_btf(regs: *const u8) -> u64 {
    let off = crate::offsets::get::OFF_REGS_ORIG_AX() as usize;
    unsafe { core::ptr::read_volatile(regs.wrapping_add(off) as *const u64) }
}
