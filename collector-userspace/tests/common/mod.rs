//! What the daemon-level tests share: the kernel-test gate and a `collector run` child
//! that is stopped with SIGTERM when the test ends, even on failure.
// Each test binary compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::Child;

/// Whether this test can load kernel programs (root, BTF). Skips (false) otherwise;
/// under `COLLECTOR_REQUIRE_KERNEL=1` a skip is a failure.
pub fn kernel_or_skip(test: &str) -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let why = if unsafe { libc::geteuid() } != 0 {
        Some("not root (kernel tests need CAP_BPF and CAP_PERFMON)")
    } else if !Path::new("/sys/kernel/btf/vmlinux").exists() {
        Some("no kernel BTF at /sys/kernel/btf/vmlinux")
    } else {
        None
    };
    match why {
        None => true,
        Some(why) => {
            assert!(
                std::env::var("COLLECTOR_REQUIRE_KERNEL").as_deref() != Ok("1"),
                "{test}: cannot run ({why}) but COLLECTOR_REQUIRE_KERNEL=1 forbids skipping"
            );
            eprintln!("skipping {test}: {why}");
            false
        }
    }
}

/// A child process (the daemon) sent SIGTERM and reaped when dropped.
pub struct Daemon(pub Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: plain kill(2) on our child.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGTERM) };
        let _ = self.0.wait();
    }
}
