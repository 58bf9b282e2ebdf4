//! Settings of the kernel side, checked before anything is loaded.

use std::time::Duration;

use collector_common::PATH_PREFIX_LEN;

use super::error::LoadError;

/// Which hooks the syscall-based programs (file and network) use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyscallHooks {
    /// One shared program on each of the BTF `sys_enter`/`sys_exit` tracepoints, reading
    /// the arguments from the saved registers (no tracefs), on x86_64; elsewhere as
    /// [`SyscallHooks::Portable`].
    #[default]
    Auto,
    /// Per-syscall tracepoints (mounting tracefs if needed) for the file and socket
    /// calls. They fire only for their own call, but enabling any adds the perf syscall
    /// probes to every syscall (costlier than `Auto`), and they never see the 32-bit
    /// entry's file and socket calls. The process domain keeps its `sys_exit` part.
    Tracepoints,
    /// Raw `sys_enter`/`sys_exit` tracepoints, one program per domain and tracepoint (no
    /// tracefs): the fallback of older builds, kept for comparison.
    Raw,
    /// Per-syscall tracepoints, and no program that reads syscall arguments from x86_64's
    /// saved registers: what a kernel of another architecture gets. On x86_64 it loses
    /// file and socket calls made through the 32-bit entry, cred changes and failed
    /// execs.
    Portable,
}

/// Settings of the kernel side.
#[derive(Debug, Clone)]
pub struct KernelConfig {
    /// Bytes of the process ring buffer (power of two, multiple of the page size).
    pub process_ring_bytes: u32,
    /// Pending bytes at which the process ring wakes the reader; 0 = kernel adaptive.
    pub process_wakeup_bytes: u64,
    /// Bytes of the network ring buffer.
    pub network_ring_bytes: u32,
    /// Pending bytes at which the network ring wakes the reader; 0 = kernel adaptive.
    pub network_wakeup_bytes: u64,
    /// Bytes of the filesystem ring buffer.
    pub file_ring_bytes: u32,
    /// Pending bytes at which the filesystem ring wakes the reader; 0 = kernel adaptive.
    pub file_wakeup_bytes: u64,
    /// Process ids excluded in the kernel (the collector itself is always excluded).
    pub excluded_pids: Vec<u32>,
    /// Task names excluded in the kernel.
    pub excluded_comms: Vec<String>,
    /// Path prefixes whose file events are dropped in the kernel (the first
    /// `PATH_PREFIX_LEN` bytes count). Matched only against kernel-resolved canonical
    /// paths (the file an open produced); user-supplied paths (failed opens, unlink,
    /// rename) are never dropped, since a string can reach anywhere through `..` or
    /// symlinks.
    pub excluded_path_prefixes: Vec<String>,
    /// Record only the processes added with [`KernelPrograms::include_pid`](super::KernelPrograms::include_pid).
    pub include_only: bool,
    /// Let [`KernelPrograms::set_exclusions`](super::KernelPrograms::set_exclusions) change the exclusions while the programs
    /// run. Costs an array lookup per event and set; off, an empty set costs nothing
    /// (the verifier drops its lookups) and the exclusions are fixed at load.
    pub live_exclusions: bool,
    /// Hooks for the syscall-based programs.
    pub syscall_hooks: SyscallHooks,
    /// How often readers drain without a wakeup (and check for shutdown).
    pub poll_interval: Duration,
    /// How often a parked reader (idle, woken by the programs at the next record) still
    /// looks at its ring: the bound on a record whose wakeup was missed.
    pub parked_check: Duration,
    /// How long a reader waits for room in the runtime's queue before dropping.
    pub max_send_wait: Duration,
    /// Minimum time between two send-count updates of one UDP (socket, destination)
    /// flow. The first send to a destination is always reported at once; later sends
    /// are counted in the kernel and a send at least this long after the flow's last
    /// report emits an update with the total count. `Duration::ZERO` reports every send.
    pub udp_report_interval: Duration,
    /// Tell a process's last exiting thread from `signal->live == 0` even where
    /// `sched_process_exit` passes `group_dead` (6.16+): what older kernels get, so that
    /// path can be tested on a new one.
    pub exit_by_signal_live: bool,
}

impl Default for KernelConfig {
    fn default() -> Self {
        Self {
            process_ring_bytes: 8 << 20,
            // A wakeup per record (the kernel's adaptive policy when the reader keeps
            // up) is what a process program spent its time on: measured on 6.18, fork
            // and exit averaged 12 and 9 us per call with it and 1.5 and 1.7 us with a
            // 256 KiB watermark. The reader drains on its own timer (`poll_interval`)
            // below the watermark, so events wait at most that long.
            process_wakeup_bytes: 256 << 10,
            network_ring_bytes: 8 << 20,
            // A connect storm otherwise pays a reader wakeup (an IPI, costly in VMs) on
            // most submits; below 64 KiB the reader drains on its own timer.
            network_wakeup_bytes: 64 << 10,
            file_ring_bytes: 32 << 20,
            // File events come in storms: wake the reader per 256 KiB, and let it drain
            // on its own timer (`poll_interval`) below that.
            file_wakeup_bytes: 256 << 10,
            excluded_pids: Vec::new(),
            excluded_comms: Vec::new(),
            excluded_path_prefixes: Vec::new(),
            include_only: false,
            live_exclusions: false,
            syscall_hooks: SyscallHooks::Auto,
            poll_interval: Duration::from_millis(10),
            parked_check: super::drain::PARKED_CHECK,
            max_send_wait: Duration::from_millis(500),
            udp_report_interval: Duration::from_secs(10),
            exit_by_signal_live: false,
        }
    }
}

/// Largest ring buffer accepted per domain (1 GiB).
pub const MAX_RING_BYTES: u32 = 1 << 30;

impl KernelConfig {
    /// Checks every setting; an operator's bad value is an error that names it (the
    /// kernel would refuse it with a bare EINVAL, and the daemon must not fall back to
    /// polling because of a typo).
    pub fn validate(&self) -> Result<(), LoadError> {
        fn invalid(
            setting: &'static str,
            value: impl std::fmt::Display,
            rule: &'static str,
        ) -> LoadError {
            LoadError::InvalidSetting {
                setting,
                value: value.to_string(),
                rule,
            }
        }
        let page = page_size();
        let rings = [
            (
                "process_ring_bytes",
                self.process_ring_bytes,
                self.process_wakeup_bytes,
                "process_wakeup_bytes",
            ),
            (
                "network_ring_bytes",
                self.network_ring_bytes,
                self.network_wakeup_bytes,
                "network_wakeup_bytes",
            ),
            (
                "file_ring_bytes",
                self.file_ring_bytes,
                self.file_wakeup_bytes,
                "file_wakeup_bytes",
            ),
        ];
        for (setting, bytes, wakeup, wakeup_setting) in rings {
            if !bytes.is_power_of_two() || u64::from(bytes) < page || bytes > MAX_RING_BYTES {
                return Err(invalid(
                    setting,
                    bytes,
                    "a ring buffer must be a power of two of at least the page size (4096) and at most 1 GiB",
                ));
            }
            // At most half the ring: a record wakes the reader when the pending bytes
            // cross a multiple of the mark, and a crossing missed by a race between CPUs
            // is made up at the next multiple, which must fit in the ring.
            if wakeup > u64::from(bytes) / 2 {
                return Err(invalid(
                    wakeup_setting,
                    wakeup,
                    "the wakeup watermark must be at most half its ring buffer's size (0 = wake on every event)",
                ));
            }
        }
        for comm in &self.excluded_comms {
            if comm.is_empty() || comm.len() >= collector_common::COMM_LEN {
                return Err(invalid(
                    "excluded_comms",
                    format!("{comm:?}"),
                    "a task name has 1 to 15 bytes (the kernel's TASK_COMM_LEN less the NUL)",
                ));
            }
        }
        for prefix in &self.excluded_path_prefixes {
            if !prefix.starts_with('/') || prefix.len() > PATH_PREFIX_LEN {
                return Err(invalid(
                    "excluded_path_prefixes",
                    format!("{prefix:?}"),
                    "a path prefix is absolute and at most 128 bytes",
                ));
            }
        }
        if self.parked_check.is_zero() {
            return Err(invalid("parked_check", "0s", "must be above 0"));
        }
        if self.poll_interval.is_zero() || self.poll_interval > Duration::from_secs(10) {
            return Err(invalid(
                "poll_interval",
                format!("{:?}", self.poll_interval),
                "it must be above zero and at most 10s",
            ));
        }
        if self.max_send_wait > Duration::from_secs(24 * 3600) {
            return Err(invalid(
                "max_send_wait",
                format!("{:?}", self.max_send_wait),
                "it must be at most a day",
            ));
        }
        Ok(())
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(size).unwrap_or(4096).max(4096)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Operator mistakes in kernel settings: each is refused naming the setting (they
    /// used to make every kernel domain fall back to /proc polling with a warning that
    /// did not say why).
    #[test]
    fn bad_kernel_settings_are_refused_naming_the_setting() {
        type Edit = fn(&mut KernelConfig);
        let cases: [(&str, Edit); 10] = [
            ("process_ring_bytes", |c| c.process_ring_bytes = 0),
            ("network_ring_bytes", |c| c.network_ring_bytes = 12_345),
            ("file_ring_bytes", |c| c.file_ring_bytes = 1 << 31),
            ("file_wakeup_bytes", |c| c.file_wakeup_bytes = u64::MAX),
            // Past half the ring, a missed crossing would never be made up.
            ("network_wakeup_bytes", |c| {
                c.network_wakeup_bytes = u64::from(c.network_ring_bytes) / 2 + 1
            }),
            ("excluded_comms", |c| {
                c.excluded_comms = vec!["a-name-longer-than-15".into()]
            }),
            ("excluded_comms", |c| c.excluded_comms = vec![String::new()]),
            ("excluded_path_prefixes", |c| {
                c.excluded_path_prefixes = vec!["relative/".into()]
            }),
            ("poll_interval", |c| c.poll_interval = Duration::ZERO),
            ("max_send_wait", |c| c.max_send_wait = Duration::MAX),
        ];
        for (setting, edit) in cases {
            let mut config = KernelConfig::default();
            edit(&mut config);
            let err = config.validate().expect_err(setting);
            assert!(err.to_string().contains(setting), "`{err}` names {setting}");
        }
        KernelConfig::default().validate().unwrap();
        let mut half = KernelConfig::default();
        half.network_wakeup_bytes = u64::from(half.network_ring_bytes) / 2;
        half.validate().unwrap();
    }
}
