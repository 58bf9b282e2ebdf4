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
                panic!(
                    "{test}: cannot run ({why}) but COLLECTOR_REQUIRE_KERNEL=1 forbids skipping"
                );
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

/// Runs `collector-test-actor` (from an integration test) and parses its output.
#[macro_export]
macro_rules! actor {
    ($($arg:expr),* $(,)?) => {
        $crate::run_actor(env!("CARGO_BIN_EXE_collector-test-actor"), &[$($arg),*])
    };
}

/// Runs the actor binary at `path` and parses its `key=value` output.
pub fn run_actor(path: &str, args: &[&str]) -> std::collections::HashMap<String, String> {
    let out = std::process::Command::new(path)
        .args(args)
        .output()
        .expect("run collector-test-actor");
    assert!(
        out.status.success(),
        "actor failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .filter_map(|kv| {
            kv.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
        })
        .collect()
}

/// An actor run in a mode that first prints `pid=N` and then waits on its stdin
/// (`opens-after-go`, `opens-per-line`, `euid-after-go`, ...), so that a test can register
/// or exclude the pid in the kernel filters before the actor acts.
pub struct Announced {
    /// The process.
    pub child: std::process::Child,
    /// Its pid, as it printed it.
    pub pid: u32,
    /// Its stdin: a line starts each action.
    pub stdin: std::process::ChildStdin,
    /// The rest of its output, kept open: some modes print a result at the end.
    pub stdout: std::io::BufReader<std::process::ChildStdout>,
}

impl Announced {
    /// Starts the actor binary at `path` with `args` and reads its `pid=` line.
    pub fn spawn(path: &str, args: &[&str]) -> Self {
        use std::io::BufRead;
        use std::process::Stdio;
        let mut child = std::process::Command::new(path)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the actor");
        let stdin = child.stdin.take().expect("piped stdin");
        let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped stdout"));
        let mut line = String::new();
        stdout.read_line(&mut line).expect("the actor's pid line");
        let pid = line
            .trim()
            .strip_prefix("pid=")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the actor announced {line:?}, not pid=N"));
        Self {
            child,
            pid,
            stdin,
            stdout,
        }
    }
}

/// A syscall through the 32-bit entry (`int $0x80`), which any 64-bit process may use
/// when the kernel has `CONFIG_IA32_EMULATION`: number in eax, arguments in ebx, ecx,
/// edx, esi, edi (unused ones 0). Returns the raw result (a negative errno on failure).
///
/// # Safety
///
/// `nr` and `args` must be a valid i386 syscall: pointer arguments point to memory
/// below 4 GiB that the call may read or write.
#[cfg(target_arch = "x86_64")]
pub unsafe fn syscall32(nr: u32, args: [u32; 5]) -> i32 {
    let ret: u32;
    // SAFETY: the caller passes a valid i386 syscall. rbx is swapped around the call
    // because LLVM reserves it; the entry clobbers r8-r11.
    unsafe {
        std::arch::asm!(
            "xchg rbx, {a:r}",
            "int 0x80",
            "xchg rbx, {a:r}",
            a = inout(reg) u64::from(args[0]) => _,
            inlateout("eax") nr => ret,
            in("ecx") args[1],
            in("edx") args[2],
            in("esi") args[3],
            in("edi") args[4],
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
        );
    }
    ret as i32
}

/// Runs a race test's `round` (given its number) until the race it sets up has shown:
/// `round` returns how many reports the race put on the wrong object (each one already
/// checked to be flagged). At most 24 rounds: on an idle host the first nearly always
/// does, but beside a build the racing threads share the cores and one swap test once
/// went 8 rounds without a hit. Panics when none did: then nothing was tested.
pub async fn until_raced<F, Fut>(what: &str, mut round: F)
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = usize>,
{
    const ROUNDS: usize = 24;
    for n in 0..ROUNDS {
        if round(n).await > 0 {
            return;
        }
    }
    panic!("{what} in {ROUNDS} rounds: nothing was tested");
}
