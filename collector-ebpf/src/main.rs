//! Kernel programs of the collector.
//!
//! Every program writes one record (see `collector-common`) into the ring buffer of its
//! domain and counts, per record kind, what it submitted and what it lost because the
//! ring buffer was full (`COUNTERS`, per CPU). Kernel-structure offsets are never
//! hard-coded: the loader reads them from the running kernel's BTF and sets the
//! read-only globals in `offsets`.
//!
//! Hooks (all load under lockdown=integrity; none needs kprobes, fentry or LSM):
//! - process: `tp_btf/sched_process_exec`, `tp_btf/sched_process_fork`,
//!   `tp_btf/sched_process_exit` (Linux >= 5.5 for BTF tracepoints).
#![no_std]
#![no_main]

mod common;
mod file;
mod file_compat;
mod file_sys;
mod file_uring;
mod net;
mod net_compat;
mod net_state;
mod offsets;
mod path;
mod process;
mod sys_enter;
mod sys_exit;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo<'_>) -> ! {
    // The verifier proves every path terminates; no panic path survives compilation.
    unsafe { core::hint::unreachable_unchecked() }
}

/// License the kernel checks for GPL-only helpers (`bpf_probe_read_*`, ...).
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
