//! Process-identity actions for the kernel tests (`tests/process_identity.rs`): credential
//! changes through both syscall entries, failed execs, and thread tricks around exit and
//! exec. Prints `key=value` pairs on one line, like `collector-test-actor`.
//!
//! ```text
//! collector-proc-actor setresuid UID           setresuid(UID, UID, UID) through libc (x86_64 entry)
//! collector-proc-actor setresuid32 UID         the same through `int $0x80` (i386 setresuid32)
//! collector-proc-actor execve32 PATH           i386 execve of PATH (expected to fail), prints errno
//! collector-proc-actor execveat-both PATH      execveat(AT_FDCWD, PATH) through the x86_64 entry,
//!                                              then of PATH-i386 through `int $0x80` (both
//!                                              expected to fail), prints both errnos
//! collector-proc-actor leader-exits-first MS   main thread exits (SYS_exit), a worker runs MS ms more,
//!                                              runs /bin/true, then ends the process
//! collector-proc-actor exec-from-thread ARG    a worker thread execs `/bin/true ARG`
//! collector-proc-actor rename-then-fork NAME ARG  set comm to NAME, then run `/bin/true ARG`
//! collector-proc-actor fork-exec-after-go ARG  print pid, wait for a stdin line, run
//!                                              `/bin/true ARG-fork`, then exec `/bin/true ARG-exec`
//! collector-proc-actor memfd-exec NAME ARG    copy /bin/true into memfd NAME and fexecve it with ARG
//! collector-proc-actor thread-creds           a worker thread alone sets its euid to 65534 (raw
//!                                              x86_64 setresuid), then the main thread makes a
//!                                              no-op setresuid, then the worker sets euid 0 back
//!                                              through `int $0x80` (setresuid32)
//! collector-proc-actor euid-after-go UID      print pid, wait for a stdin line, set the euid to
//!                                              UID and back to 0 (raw x86_64 setresuid)
//! collector-proc-actor thread-euid-exec UID    a worker thread alone sets its euid to UID (raw
//!                                              setresuid), then execs `/bin/true thread-euid`
//! ```
//! x86_64 only (the i386 entry and the raw thread exit use its syscall numbers).
use std::ffi::CString;
use std::io::Write;
use std::time::Duration;

use collector_tests::syscall32;

extern "C" {
    fn setresuid(ruid: u32, euid: u32, suid: u32) -> i32;
    fn getuid() -> u32;
    fn geteuid() -> u32;
    fn syscall(nr: i64, ...) -> i64;
    fn execv(path: *const i8, argv: *const *const i8) -> i32;
    fn prctl(option: i32, arg2: u64, ...) -> i32;
}

fn run_true(arg: &str) {
    let status = std::process::Command::new("/bin/true")
        .arg(arg)
        .status()
        .expect("spawn /bin/true");
    assert!(status.success());
}

fn rename_then_fork(name: &str, arg: &str) -> String {
    const PR_SET_NAME: i32 = 15;
    let name = CString::new(name).unwrap();
    // SAFETY: NUL-terminated name; the kernel copies at most 15 bytes.
    assert_eq!(unsafe { prctl(PR_SET_NAME, name.as_ptr() as u64) }, 0);
    let comm = std::fs::read_to_string("/proc/self/comm").unwrap();
    run_true(arg);
    format!("comm={}", comm.trim())
}

fn fork_exec_after_go(arg: &str) -> String {
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    run_true(&format!("{arg}-fork"));
    let path = CString::new("/bin/true").unwrap();
    let argv1 = CString::new(format!("{arg}-exec")).unwrap();
    let argv = [path.as_ptr(), argv1.as_ptr(), std::ptr::null()];
    // SAFETY: NUL-terminated strings and a NULL-terminated argv that outlive the call.
    unsafe { execv(path.as_ptr(), argv.as_ptr()) };
    panic!("execv failed");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).cloned().unwrap_or_default();
    let out = match args.first().map(String::as_str) {
        Some("setresuid") => set_ids(arg(1).parse().expect("uid"), false),
        Some("setresuid32") => set_ids(arg(1).parse().expect("uid"), true),
        Some("execve32") => execve32(&arg(1)),
        Some("execveat-both") => execveat_both(&arg(1)),
        Some("leader-exits-first") => leader_exits_first(arg(1).parse().expect("ms")),
        Some("exec-from-thread") => exec_from_thread(&arg(1)),
        Some("rename-then-fork") => rename_then_fork(&arg(1), &arg(2)),
        Some("fork-exec-after-go") => fork_exec_after_go(&arg(1)),
        Some("memfd-exec") => memfd_exec(&arg(1), &arg(2)),
        Some("thread-creds") => thread_creds(),
        Some("euid-after-go") => euid_after_go(arg(1).parse().expect("uid")),
        Some("thread-euid-exec") => thread_euid_exec(arg(1).parse().expect("uid")),
        _ => {
            eprintln!("usage: see the header of collector-proc-actor.rs");
            std::process::exit(2);
        }
    };
    println!("pid={} {out}", std::process::id());
}

fn set_ids(uid: u32, compat: bool) -> String {
    // SAFETY: plain syscalls; this process is single-threaded here.
    let before = unsafe { (getuid(), geteuid()) };
    let ret = if compat {
        // SAFETY: i386 setresuid32 takes no pointer.
        i64::from(unsafe { syscall32(208, [uid, uid, uid, 0, 0]) })
    } else {
        i64::from(unsafe { setresuid(uid, uid, uid) })
    };
    assert_eq!(ret, 0, "setresuid failed");
    let after = unsafe { (getuid(), geteuid()) };
    format!(
        "uid_before={} euid_before={} uid_after={} euid_after={}",
        before.0, before.1, after.0, after.1
    )
}

/// Credentials are per thread: a raw setresuid (not glibc's, which makes every thread
/// call it) changes only the caller's.
fn thread_creds() -> String {
    const SETRESUID: i64 = 117;
    const SETRESUID32: u32 = 208;
    let (to_main, from_worker) = std::sync::mpsc::channel::<i64>();
    let (to_worker, from_main) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        // SAFETY: a plain syscall; -1 leaves the real and saved uids as they are.
        let dropped = unsafe { syscall(SETRESUID, -1i64, 65534i64, -1i64) };
        to_main.send(dropped).unwrap();
        from_main.recv().unwrap();
        // The saved uid is still 0, so the euid may go back to it.
        // SAFETY: i386 setresuid32 takes no pointer.
        i64::from(unsafe { syscall32(SETRESUID32, [u32::MAX, 0, u32::MAX, 0, 0]) })
    });
    let dropped = from_worker.recv().unwrap();
    // SAFETY: as above; the main thread's euid is already 0, so nothing changes.
    let noop = unsafe { syscall(SETRESUID, -1i64, 0i64, -1i64) };
    to_worker.send(()).unwrap();
    let restored = worker.join().unwrap();
    assert_eq!((dropped, noop, restored), (0, 0, 0), "setresuid calls");
    "ok=1".to_string()
}

/// The exec'ing worker's credentials differ from the leader's: the exec takes the
/// leader's thread id, and its credentials change is the worker's.
fn thread_euid_exec(uid: i64) -> String {
    const SETRESUID: i64 = 117;
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    let path = CString::new("/bin/true").unwrap();
    let argv1 = CString::new("thread-euid").unwrap();
    let worker = std::thread::spawn(move || {
        // SAFETY: a plain syscall; -1 leaves the real and saved uids (0) as they are.
        assert_eq!(unsafe { syscall(SETRESUID, -1i64, uid, -1i64) }, 0);
        let argv = [path.as_ptr(), argv1.as_ptr(), std::ptr::null()];
        // SAFETY: NUL-terminated strings and a NULL-terminated argv that outlive the call.
        unsafe { execv(path.as_ptr(), argv.as_ptr()) };
        panic!("execv failed");
    });
    let _ = worker.join();
    unreachable!("the exec replaces the whole process");
}

/// Started before the collector, so the kernel side has never seen this thread.
fn euid_after_go(uid: i64) -> String {
    const SETRESUID: i64 = 117;
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().read_line(&mut line).unwrap();
    // SAFETY: plain syscalls; -1 leaves the real and saved uids (0) as they are.
    let calls = unsafe {
        (
            syscall(SETRESUID, -1i64, uid, -1i64),
            syscall(SETRESUID, -1i64, 0i64, -1i64),
        )
    };
    assert_eq!(calls, (0, 0), "setresuid calls");
    "ok=1".to_string()
}

/// `path`, NUL-terminated, in a fresh page below 4 GiB (i386 pointers are 32 bits).
fn low_copy(path: &str) -> u32 {
    const MAP_32BIT: i64 = 0x40;
    // SAFETY: anonymous private mapping of one page, written only within bounds.
    let page = unsafe { syscall(9, 0i64, 4096i64, 3i64, 0x22i64 | MAP_32BIT, -1i64, 0i64) };
    assert!(page > 0 && page < (1 << 32), "no 32-bit mapping: {page}");
    let bytes = path.as_bytes();
    assert!(bytes.len() < 4000);
    unsafe {
        std::ptr::copy_nonoverlapping(bytes.as_ptr(), page as *mut u8, bytes.len());
        *(page as *mut u8).add(bytes.len()) = 0;
    }
    page as u32
}

/// execveat's path is its second argument (after the directory fd): a failed one is
/// reported with the path read from that register on both entries.
fn execveat_both(path: &str) -> String {
    const AT_FDCWD: i32 = -100;
    let native = CString::new(path).unwrap();
    // SAFETY: execveat(2) with a NUL-terminated path; NULL argv/envp, no flags. It fails
    // on the path before looking at them.
    let ret = unsafe { syscall(322, AT_FDCWD as i64, native.as_ptr(), 0i64, 0i64, 0i64) };
    assert_eq!(ret, -1, "execveat of {path} unexpectedly succeeded");
    let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(0);
    let low = low_copy(&format!("{path}-i386"));
    // SAFETY: the path is below 4 GiB; NULL argv/envp, no flags.
    let ret32 = unsafe { syscall32(358, [AT_FDCWD as u32, low, 0, 0, 0]) };
    assert!(ret32 < 0, "i386 execveat unexpectedly succeeded");
    format!("errno={errno} errno32={}", -ret32)
}

fn execve32(path: &str) -> String {
    let page = low_copy(path);
    // argv and envp NULL: the kernel accepts them (and fails on the path first).
    // SAFETY: the path is below 4 GiB.
    let ret = unsafe { syscall32(11, [page, 0, 0, 0, 0]) };
    assert!(ret < 0, "i386 execve of {path} unexpectedly succeeded");
    format!("errno={}", -ret)
}

fn leader_exits_first(ms: u64) -> String {
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(ms));
        // Observable proof that the process is alive after its leader left.
        let status = std::process::Command::new("/bin/true")
            .arg("worker-still-running")
            .status()
            .expect("spawn /bin/true");
        assert!(status.success());
        std::process::exit(0);
    });
    // The leader thread alone ends (SYS_exit, not exit_group), as pthread_exit would,
    // without unwinding through Rust frames.
    // SAFETY: this thread holds no locks; the rest of the process goes on.
    unsafe { syscall(60, 0i64) };
    unreachable!("SYS_exit returned");
}

fn exec_from_thread(arg: &str) -> String {
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    let path = CString::new("/bin/true").unwrap();
    let argv0 = CString::new("/bin/true").unwrap();
    let argv1 = CString::new(arg).unwrap();
    let worker = std::thread::spawn(move || {
        let argv = [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()];
        // SAFETY: NUL-terminated strings and a NULL-terminated argv that outlive the call.
        unsafe { execv(path.as_ptr(), argv.as_ptr()) };
        panic!("execv failed");
    });
    let _ = worker.join();
    unreachable!("the exec replaces the whole process");
}

fn memfd_exec(name: &str, arg: &str) -> String {
    use std::io::Write as _;
    use std::os::fd::FromRawFd;
    let cname = CString::new(name).unwrap();
    // SAFETY: memfd_create(2) with a NUL-terminated name.
    let fd = unsafe { syscall(319, cname.as_ptr(), 0i64) };
    assert!(fd >= 0, "memfd_create failed");
    // SAFETY: a fresh descriptor we own.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd as i32) };
    file.write_all(&std::fs::read("/bin/true").unwrap())
        .unwrap();
    println!("pid={}", std::process::id());
    std::io::stdout().flush().unwrap();
    let empty = CString::new("").unwrap();
    let argv0 = CString::new(name).unwrap();
    let argv1 = CString::new(arg).unwrap();
    let argv = [argv0.as_ptr(), argv1.as_ptr(), std::ptr::null()];
    let envp: [*const i8; 1] = [std::ptr::null()];
    const AT_EMPTY_PATH: i64 = 0x1000;
    // fexecve(3): execveat(fd, "", argv, envp, AT_EMPTY_PATH).
    // SAFETY: valid strings and NULL-terminated vectors that outlive the call.
    unsafe {
        syscall(
            322,
            fd,
            empty.as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            AT_EMPTY_PATH,
        )
    };
    panic!("fexecve of the memfd failed");
}
