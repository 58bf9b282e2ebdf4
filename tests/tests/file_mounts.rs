//! The in-kernel path walk crosses mounts: a file on `/dev/shm` (a tmpfs, here stacked
//! twice, on the devtmpfs `/dev`, on the root filesystem) is reported with its full
//! path, as the kernel's own `d_path` would print it.

mod common;

use collector_core::event::FilesystemEventKind;
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::KernelConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_on_a_nested_mount_reports_the_full_path() {
    if !kernel_or_skip("open_on_a_nested_mount_reports_the_full_path") {
        return;
    }
    let shm = std::path::Path::new("/dev/shm");
    assert!(
        shm.is_dir(),
        "/dev/shm is a mount point on every Linux host"
    );
    let file = tempfile::Builder::new()
        .prefix("collector-mounts-")
        .tempfile_in(shm)
        .unwrap();
    let path = file.path().display().to_string();
    let watch = common::FsWatch::start(KernelConfig::default());
    let out = run_actor(
        env!("CARGO_BIN_EXE_collector-test-actor"),
        &["opens", &path, "3"],
    );
    let pid: u32 = out["pid"].parse().unwrap();
    let seen = std::cell::Cell::new(0);
    let events = watch
        .collect(
            pid,
            |e| e.kind == FilesystemEventKind::Open && e.path.contains("collector-mounts-"),
            |_| {
                seen.set(seen.get() + 1);
                seen.get() == 3
            },
        )
        .await;
    assert_eq!(events.len(), 3, "{events:#?}");
    for e in &events {
        assert_eq!(e.path, path, "{e:#?}");
        assert!(!e.path_user_supplied && !e.path_truncated && !e.path_unreadable);
        assert!(e.result.unwrap() >= 0);
    }
}
