//! `syscall_hooks = "portable"`: the hook set a kernel of another architecture gets
//! (no program reads syscall arguments from x86_64's saved registers), loaded on this
//! x86_64 kernel. The domains still attach; per-syscall tracepoints stand in for
//! the file parts of `sys_enter_shared` and `sys_exit_shared`, and their opens carry
//! the same kernel-resolved fields, seen from an unprivileged actor (uid 65534).

mod common;

use collector_core::event::FilesystemEventKind;
use collector_core::EventSource;
use collector_tests::{kernel_or_skip, run_actor};
use collector_userspace::ebpf::{
    KernelConfig, KernelDomain, KernelPrograms, KernelSource, SyscallHooks,
};

/// The syscall programs the domains share: their parts read the saved registers, so in
/// portable mode no domain attaches them.
const SHARED: [&str; 2] = [
    collector_common::abi::sys_enter::PROGRAM,
    collector_common::abi::sys_exit::PROGRAM,
];

fn portable() -> KernelConfig {
    KernelConfig {
        syscall_hooks: SyscallHooks::Portable,
        ..KernelConfig::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_file_hooks_resolve_the_same_paths() {
    if !kernel_or_skip("portable_file_hooks_resolve_the_same_paths") {
        return;
    }
    let (_tmp, dir) = common::shared_dir();
    let watch = common::FsWatch::start(portable());
    let hooks = watch.programs.hooks();
    assert!(
        SHARED.iter().all(|p| !hooks.contains_key(*p)),
        "no register-reading program: {hooks:?}"
    );
    for (program, hook) in [
        ("sys_exit_openat", "tracepoint/syscalls/sys_exit_openat"),
        ("sys_enter_openat", "tracepoint/syscalls/sys_enter_openat"),
        // x86_64 has the legacy calls: their optional hooks attach here.
        ("sys_exit_creat", "tracepoint/syscalls/sys_exit_creat"),
        ("sys_exit_unlinkat", "tracepoint/syscalls/sys_exit_unlinkat"),
    ] {
        assert_eq!(
            hooks.get(program).map(String::as_str),
            Some(hook),
            "{hooks:?}"
        );
    }

    let out = run_actor(
        env!("CARGO_BIN_EXE_kfile-actor"),
        &["paths", &dir, "nobody"],
    );
    assert_eq!(out["uid"], "65534", "actor runs unprivileged");
    let pid: u32 = out["pid"].parse().unwrap();
    let events = watch
        .collect(pid, |_| true, |e| e.path.ends_with("missing-rel"))
        .await;

    for key in ["cwd", "dirfd", "long", "via_quiet", "via_loud"] {
        let e = events
            .iter()
            .find(|e| e.kind == FilesystemEventKind::Create && e.path == out[key])
            .unwrap_or_else(|| panic!("{key}: no create of {} in {events:#?}", out[key]));
        assert!(!e.path_user_supplied, "{key}: kernel-resolved: {e:?}");
        assert!(!e.path_truncated && !e.path_unreadable, "{key}: {e:?}");
        assert!(!e.path_relative, "{key}: {e:?}");
        assert_eq!(e.uid, Some(65534), "{key}: {e:?}");
        assert!(!e.compat_syscall, "{key}: {e:?}");
        assert!(e.result.unwrap() >= 0, "{key}: {e:?}");
    }
    assert!(out["long"].len() > 3000, "the long path is long");
    let missing = events
        .iter()
        .find(|e| e.path == out["missing"])
        .unwrap_or_else(|| panic!("no failed open of {} in {events:#?}", out["missing"]));
    assert_eq!(missing.kind, FilesystemEventKind::Open);
    assert_eq!(missing.result, Some(-2), "ENOENT");
    assert!(missing.path_user_supplied, "{missing:?}");
    // Each call reported once: no second program saw the same open.
    let creates = events
        .iter()
        .filter(|e| e.kind == FilesystemEventKind::Create && e.path == out["cwd"])
        .count();
    assert_eq!(creates, 1, "{events:#?}");
}

/// The process domain attaches without its register-reading syscall hooks (cred
/// changes and failed execs), keeping its exec, fork and exit hooks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portable_process_hooks_leave_out_only_the_register_readers() {
    if !kernel_or_skip("portable_process_hooks_leave_out_only_the_register_readers") {
        return;
    }
    let programs = KernelPrograms::load(portable()).expect("load kernel programs");
    let source = KernelSource::new(programs.clone(), KernelDomain::Process).expect("attach");
    let hooks = programs.hooks();
    for program in [
        "sched_process_exec",
        "sched_process_fork",
        "sched_process_exit",
    ] {
        assert!(hooks.contains_key(program), "{program}: {hooks:?}");
    }
    assert!(SHARED.iter().all(|p| !hooks.contains_key(*p)), "{hooks:?}");
    // Attached by `new`; `stop` detaches (no `start`: a start racing the stop would
    // attach again, as a restarted source does).
    source.stop().await.unwrap();
    assert!(
        programs.attached_programs(KernelDomain::Process).is_empty(),
        "stop detaches what was attached"
    );
}
