//! Workspace-level integration tests against the real kernel; see `tests/`.
//!
//! [`kernel_or_skip`] decides whether a kernel test can run here.
#![deny(missing_docs)]

/// Returns true when kernel tests can run (root and BTF present). Otherwise prints why
/// and returns false, or panics when `COLLECTOR_REQUIRE_KERNEL=1` (CI), where a skip is
/// a failure.
pub fn kernel_or_skip(test: &str) -> bool {
    let reason = if unsafe_geteuid() != 0 {
        Some("not root (kernel tests need CAP_BPF and CAP_PERFMON)")
    } else if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match reason {
        None => true,
        Some(why) => {
            if std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() == Ok("1") {
                panic!("{test}: cannot run ({why}) but COLLECTOR_REQUIRE_KERNEL=1 forbids skipping");
            }
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

fn unsafe_geteuid() -> u32 {
    extern "C" {
        fn geteuid() -> u32;
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { geteuid() }
}
