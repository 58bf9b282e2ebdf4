//! Filesystem-path scenarios for the kernel path tests (tests/tests/file_paths.rs).
//! Drops to uid/gid 65534 (`nobody`) first when the second argument is `nobody`, so
//! the kernel sees an unprivileged caller. Prints `key=value` pairs (paths it used).
//!
//! ```text
//! kfile-actor paths DIR [nobody]
//!   - chdir DIR/sub, open("rel", O_CREAT)                          -> cwd=DIR/sub/rel
//!   - openat(dirfd of DIR/sub, "viadirfd", O_CREAT), close(dirfd) at once
//!                                                                  -> dirfd=DIR/sub/viadirfd
//!   - a path of ~3000 bytes (14 directories of 220-byte names)    -> long=...
//!   - open DIR/quiet/../loud/f (under loud, spelled through quiet) -> via_quiet=DIR/loud/f
//!   - open DIR/loud/../quiet/g (under quiet, spelled through loud) -> via_loud=DIR/quiet/g
//!   - open("missing-rel", O_RDONLY) fails with ENOENT              -> missing=DIR/sub/missing-rel
//!
//! kfile-actor fifo DIR [nobody]
//!   - mkfifo DIR/fifo, create DIR/deco; the main thread opens DIR/fifo for reading
//!     (blocks); once /proc shows it blocked in openat, a thread rewrites the path
//!     buffer to DIR/deco, then opens the FIFO for writing so the read open returns
//!                                                                  -> fifo=DIR/fifo decoy=DIR/deco
//! ```
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

fn open_creat(dirfd: i32, path: &str) -> i32 {
    let p = cstr(path);
    // SAFETY: valid NUL-terminated path; the fd is checked and closed by the caller.
    let fd = unsafe { libc::openat(dirfd, p.as_ptr(), libc::O_CREAT | libc::O_WRONLY, 0o644) };
    assert!(
        fd >= 0,
        "openat {path}: {}",
        std::io::Error::last_os_error()
    );
    fd
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this process opened.
    unsafe { libc::close(fd) };
}

fn drop_to_nobody() {
    // SAFETY: plain syscalls; checked.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0, "setresgid");
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0, "setresuid");
        // The uid change made the process non-dumpable, which hides its own
        // /proc/self/task/*/syscall from it; the fifo scenario reads that.
        assert_eq!(libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0), 0, "prctl");
    }
}

fn paths(dir: &str) -> String {
    let sub = format!("{dir}/sub");
    std::fs::create_dir_all(&sub).expect("mkdir sub");
    std::fs::create_dir_all(format!("{dir}/quiet")).expect("mkdir quiet");
    std::fs::create_dir_all(format!("{dir}/loud")).expect("mkdir loud");
    std::env::set_current_dir(&sub).expect("chdir");
    close(open_creat(libc::AT_FDCWD, "rel"));

    let subc = cstr(&sub);
    // SAFETY: valid path; checked.
    let dirfd = unsafe { libc::open(subc.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(dirfd >= 0, "open dir");
    let fd = open_creat(dirfd, "viadirfd");
    close(dirfd);
    close(fd);

    let mut long = dir.to_string();
    let name = "d".repeat(220);
    for _ in 0..14 {
        long.push('/');
        long.push_str(&name);
        std::fs::create_dir_all(&long).expect("mkdir long");
    }
    long.push_str("/leaf");
    close(open_creat(libc::AT_FDCWD, &long));

    let via_quiet = format!("{dir}/quiet/../loud/f");
    close(open_creat(libc::AT_FDCWD, &via_quiet));
    let via_loud = format!("{dir}/loud/../quiet/g");
    close(open_creat(libc::AT_FDCWD, &via_loud));

    let missing = cstr("missing-rel");
    // SAFETY: valid path; the failure is the point.
    let r = unsafe { libc::open(missing.as_ptr(), libc::O_RDONLY) };
    assert!(r < 0, "missing-rel must not exist");

    let cwd = std::env::current_dir().unwrap();
    format!(
        "cwd={}/rel dirfd={sub}/viadirfd long={long} via_quiet={dir}/loud/f via_loud={dir}/quiet/g missing={}/missing-rel uid={}",
        String::from_utf8_lossy(cwd.as_os_str().as_bytes()),
        String::from_utf8_lossy(cwd.as_os_str().as_bytes()),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() },
    )
}

fn fifo(dir: &str) -> String {
    let fifo = format!("{dir}/fifo");
    let decoy = format!("{dir}/deco");
    assert_eq!(fifo.len(), decoy.len());
    close(open_creat(libc::AT_FDCWD, &decoy));
    let fifo_c = cstr(&fifo);
    // SAFETY: valid path; checked.
    assert_eq!(unsafe { libc::mkfifo(fifo_c.as_ptr(), 0o666) }, 0, "mkfifo");
    // The buffer the main thread passes to openat; the other thread rewrites it.
    let buf: &'static mut [u8] = Box::leak(cstr(&fifo).into_bytes_with_nul().into_boxed_slice());
    let addr = buf.as_mut_ptr() as usize;
    // SAFETY: gettid cannot fail.
    let tid = unsafe { libc::gettid() };
    let decoy_bytes = decoy.clone().into_bytes();
    let writer = std::thread::spawn(move || {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let sc = std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
                .unwrap_or_default();
            // Blocked in openat (257) = past getname, waiting for a writer.
            if sc.starts_with("257 ") {
                break;
            }
            if std::time::Instant::now() > deadline {
                // Unblock the main thread before failing, so the actor exits.
                // SAFETY: valid path.
                close(unsafe { libc::open(fifo_c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) });
                panic!("reader never blocked in openat");
            }
            std::thread::yield_now();
        }
        // SAFETY: same length as the original (NUL kept); the main thread does not read
        // the buffer in user space, only the kernel did, at syscall entry.
        unsafe {
            std::ptr::copy_nonoverlapping(decoy_bytes.as_ptr(), addr as *mut u8, decoy_bytes.len())
        };
        // SAFETY: valid path; checked. A reader is waiting, so this does not fail.
        let w = unsafe { libc::open(fifo_c.as_ptr(), libc::O_WRONLY | libc::O_NONBLOCK) };
        assert!(w >= 0, "open fifo for writing");
        close(w);
    });
    // SAFETY: NUL-terminated buffer that stays alive (leaked).
    let r = unsafe { libc::openat(libc::AT_FDCWD, addr as *const libc::c_char, libc::O_RDONLY) };
    assert!(
        r >= 0,
        "open fifo for reading: {}",
        std::io::Error::last_os_error()
    );
    writer.join().unwrap();
    close(r);
    assert_eq!(
        &buf[..decoy.len()],
        decoy.as_bytes(),
        "the buffer was rewritten"
    );
    format!("fifo={fifo} decoy={decoy}")
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.get(2).map(String::as_str) == Some("nobody") {
        drop_to_nobody();
    }
    let out = match args.first().map(String::as_str) {
        Some("paths") => paths(&args[1]),
        Some("fifo") => fifo(&args[1]),
        _ => {
            eprintln!("usage: kfile-actor paths DIR [nobody]");
            std::process::exit(2);
        }
    };
    println!("pid={} {out}", std::process::id());
}
