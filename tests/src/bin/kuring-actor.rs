//! Two-path and io_uring file scenarios for the kernel tests tests/tests/file_two_paths.rs
//! and tests/tests/file_io_uring.rs. Drops to uid/gid 65534 (`nobody`) first when the
//! second argument is `nobody`. Prints `key=value` pairs (paths it used, results as
//! 0/fd or -errno).
//!
//! ```text
//! kuring-actor twopaths DIR [nobody]
//!   - create DIR/r/a; renameat(dirfd of DIR/r, "a", dirfd, "b"), close(dirfd) at once
//!   - linkat(new dirfd of DIR/r, "b", dirfd, "lnk"), close(dirfd) at once
//!   - chdir DIR/r: rename("b", "c"), link("c", "hl"), symlink("../t/./x", "sl"); chdir /
//!   - renameat(dirfd, "c", dirfd, LONG) with LONG a 3,000-byte relative path
//!     (L/ + 13 directories of 220 bytes + a 125-byte name)      -> long=LONG
//!   - renameat2(DIR/r/e1, DIR/r/e2, RENAME_EXCHANGE)
//!   - rename(DIR/r/nope, DIR/r/nope2) fails with ENOENT            -> r=DIR/r and results
//!
//! kuring-actor race DIR nobody N
//!   - N times: rename(BUF, DIR/x/dst) while a second thread rewrites BUF once (one
//!     aligned store), from [/..]DIR/x/AAAA to [/..]DIR/x/BBBB, after a varying delay;
//!     then which of AAAA/BBBB the kernel moved is recorded and dst is renamed back to it
//!     (from a fixed buffer)           -> x=DIR/x a=.. b=.. did=ABBA... (one letter per rename)
//!
//! kuring-actor uring DIR [nobody]   every call through io_uring, one SQE at a time:
//!   - dirfd of DIR/u: OPENAT(dirfd, "f", O_CREAT|O_WRONLY, 0o640) -> open_fd, closed
//!   - OPENAT2(AT_FDCWD, DIR/u/f, O_RDONLY)                           -> open2_fd, closed
//!   - MKDIRAT(dirfd, "md", 0o750), RENAMEAT(dirfd, "f", dirfd, "g"),
//!     LINKAT(dirfd, "g", dirfd, "hl"), SYMLINKAT("g", dirfd, "sl"),
//!     OPENAT(dirfd, "g") into fixed-file slot 0 (a direct descriptor, no fd),
//!     UNLINKAT(dirfd, "hl"), UNLINKAT(dirfd, "md", AT_REMOVEDIR)
//!   - MKDIRAT(dirfd, "skipd") with IOSQE_CQE_SKIP_SUCCESS (no completion), then a NOP
//!   - OPENAT(dirfd, "missing", O_RDONLY) fails with ENOENT          -> u=DIR/u and results
//!
//! kuring-actor uring-truncate DIR [nobody]   FTRUNCATE through io_uring, one at a time:
//!   - DIR/t/f (100 bytes), opened O_WRONLY: FTRUNCATE(fd, 5,000,000,000)   -> big
//!   - DIR/t/g registered as fixed file 0: FTRUNCATE(slot 0, 3)             -> fixed
//!   - /etc/passwd opened O_RDONLY: FTRUNCATE(fd, 0) fails with EINVAL      -> passwd
//!   - FTRUNCATE(fd 9999, 0) fails with EBADF                               -> badfd
//!   - descriptor X names DIR/t/decoy when FTRUNCATE(X, 1) is submitted, linked
//!     after a READ of an empty pipe; then DIR/t/h is dup2'd over X and the pipe
//!     written: the request truncates h         -> swap, h_len=1 decoy_len=100
//!
//! kuring-actor uring-xattr DIR [nobody]   SETXATTR and FSETXATTR through io_uring, in
//!   DIR/ux: SETXATTR(f, "user.u", 3 bytes, XATTR_CREATE); FSETXATTR(fd of f, "user.fu",
//!   2 bytes); FSETXATTR(fd of f, "user.skip", 1 byte) with IOSQE_CQE_SKIP_SUCCESS (no
//!   completion), linked before a NOP; SETXATTR(f, "security.capability", 20 bytes)
//!   (EPERM unprivileged); and
//!   FSETXATTR(X, "user.swap", 1 byte) linked behind a READ of an empty pipe, X naming
//!   decoy at submission and h (dup2) when it runs       -> ux=DIR/ux and results
//!
//! kuring-actor uring-overflow DIR nobody N [same]   N MKDIRATs (DIR/o0/d0..) on a ring
//!   whose 2-entry completion queue is not reaped until all are submitted: most complete
//!   through the kernel's overflow list. `same`: every request has the same user_data
//!   (DIR/o1/d0..)                                                -> o=DIR/oX n=N ok=...
//!
//! kuring-actor rename-storm DIR N   (cost measurement) prints `pid=`, waits for a line
//!   on stdin, then N times renameat(dirfd, f, dirfd, g) and back  -> renames=2N seconds=S
//!
//! kuring-actor uring-storm DIR N   (cost measurement, tests/tests/file_cost.rs) prints
//!   `pid=`, waits for a line on stdin, then N times io_uring OPENAT+close, two RENAMEATs
//!   and two NOPs (with a third argument `nops`: five NOPs)       -> ops=5N seconds=S
//! ```
use std::ffi::CString;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL in path")
}

/// A syscall's result as 0/fd or -errno.
fn res(r: i32) -> i32 {
    if r < 0 {
        -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        r
    }
}

fn close(fd: i32) {
    // SAFETY: closing a descriptor this process opened.
    unsafe { libc::close(fd) };
}

fn open_dir(path: &str) -> i32 {
    let p = cstr(path);
    // SAFETY: valid NUL-terminated path; checked.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

fn touch(path: &str) {
    std::fs::write(path, b"x").unwrap_or_else(|e| panic!("create {path}: {e}"));
}

fn drop_to_nobody() {
    // SAFETY: plain syscalls; checked.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0, "setresgid");
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0, "setresuid");
    }
}

fn twopaths(dir: &str) -> String {
    let r = format!("{dir}/r");
    std::fs::create_dir_all(&r).expect("mkdir r");
    touch(&format!("{r}/a"));
    let c = |s: &str| cstr(s);
    // SAFETY (all blocks below): plain syscalls with valid NUL-terminated strings; every
    // result is reported.
    let dirfd = open_dir(&r);
    let renameat = res(unsafe { libc::renameat(dirfd, c("a").as_ptr(), dirfd, c("b").as_ptr()) });
    close(dirfd);
    let dirfd = open_dir(&r);
    let linkat = res(unsafe { libc::linkat(dirfd, c("b").as_ptr(), dirfd, c("lnk").as_ptr(), 0) });
    close(dirfd);

    std::env::set_current_dir(&r).expect("chdir r");
    let rename = res(unsafe { libc::rename(c("b").as_ptr(), c("c").as_ptr()) });
    let link = res(unsafe { libc::link(c("c").as_ptr(), c("hl").as_ptr()) });
    let symlink = res(unsafe { libc::symlink(c("../t/./x").as_ptr(), c("sl").as_ptr()) });
    std::env::set_current_dir("/").expect("chdir /");

    let mut long = String::from("L");
    for _ in 0..13 {
        long.push('/');
        long.push_str(&"d".repeat(220));
        std::fs::create_dir_all(format!("{r}/{long}")).expect("mkdir long");
    }
    long.push('/');
    long.push_str(&"n".repeat(125));
    assert_eq!(long.len(), 3000);
    let dirfd = open_dir(&r);
    let long_res = res(unsafe { libc::renameat(dirfd, c("c").as_ptr(), dirfd, c(&long).as_ptr()) });
    close(dirfd);
    touch(&format!("{r}/e1"));
    touch(&format!("{r}/e2"));
    let exchange = res(unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            c(&format!("{r}/e1")).as_ptr(),
            libc::AT_FDCWD,
            c(&format!("{r}/e2")).as_ptr(),
            libc::RENAME_EXCHANGE,
        ) as i32
    });
    let missing = res(unsafe {
        libc::rename(
            c(&format!("{r}/nope")).as_ptr(),
            c(&format!("{r}/nope2")).as_ptr(),
        )
    });
    format!(
        "r={r} long={long} renameat={renameat} linkat={linkat} rename={rename} link={link} \
         symlink={symlink} long_res={long_res} exchange={exchange} missing={missing} uid={}",
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

/// The path buffer the racing rename reads, rewritten by another thread.
#[repr(align(8))]
struct Buf(std::cell::UnsafeCell<[u8; 256]>);
// SAFETY: the race on these bytes is the point of the scenario; both threads only read
// and write plain bytes through raw pointers (volatile), never references.
unsafe impl Sync for Buf {}

fn race(dir: &str, n: usize) -> String {
    let x = format!("{dir}/x");
    std::fs::create_dir_all(&x).expect("mkdir x");
    // Leading slashes (harmless in a path) put the 4 bytes that change at a 4-aligned
    // offset, so the rewrite is one store: the kernel sees AAAA or BBBB, never a mix.
    let pad = "/".repeat((4 - (x.len() + 1) % 4) % 4);
    let (a, b, dst) = (
        format!("{pad}{x}/AAAA"),
        format!("{pad}{x}/BBBB"),
        format!("{x}/dst"),
    );
    let name_at = a.len() - 4;
    assert_eq!(name_at % 4, 0);
    touch(&a);
    touch(&b);
    let buf = Arc::new(Buf(std::cell::UnsafeCell::new([0; 256])));
    let write = |buf: &Buf, s: &str| {
        let p = buf.0.get().cast::<u8>();
        for (i, byte) in s.bytes().chain([0]).enumerate() {
            // SAFETY: inside the 256-byte buffer (paths are short); volatile because the
            // other thread and the kernel read it concurrently.
            unsafe { p.add(i).write_volatile(byte) };
        }
    };
    // 0: idle, 1 + delay: rewrite after `delay` spins, then back to 0.
    let go = Arc::new(AtomicU32::new(0));
    let flipper = {
        let (buf, go) = (buf.clone(), go.clone());
        std::thread::spawn(move || loop {
            let v = go.load(Ordering::Acquire);
            if v == u32::MAX {
                return;
            }
            if v == 0 {
                std::hint::spin_loop();
                continue;
            }
            for _ in 0..(v - 1) {
                std::hint::spin_loop();
            }
            // One rewrite per rename, one aligned 4-byte store: the buffer changes at
            // most once during the call.
            let p = buf.0.get().cast::<u8>();
            // SAFETY: `name_at` is 4-aligned inside the 8-aligned buffer.
            unsafe {
                p.add(name_at)
                    .cast::<u32>()
                    .write_volatile(u32::from_ne_bytes(*b"BBBB"))
            };
            go.store(0, Ordering::Release);
        })
    };
    let dst_c = cstr(&dst);
    let mut did = String::with_capacity(n);
    for i in 0..n {
        write(&buf, &a);
        // Delays from 1 to 40 spins spread the rewrite over the call (a rename takes a few
        // microseconds).
        go.store(1 + (i as u32 * 3) % 40, Ordering::Release);
        // SAFETY: the buffer is NUL-terminated in both states (same length).
        let r = unsafe { libc::rename(buf.0.get().cast::<libc::c_char>(), dst_c.as_ptr()) };
        assert_eq!(r, 0, "rename: {}", std::io::Error::last_os_error());
        while go.load(Ordering::Acquire) != 0 {
            std::hint::spin_loop();
        }
        let moved = if std::path::Path::new(&a).exists() {
            'B'
        } else {
            'A'
        };
        did.push(moved);
        let back = if moved == 'A' { &a } else { &b };
        std::fs::rename(&dst, back).expect("rename back");
    }
    go.store(u32::MAX, Ordering::Release);
    flipper.join().unwrap();
    format!("x={x} a={a} b={b} did={did}")
}

fn uring(dir: &str) -> String {
    use io_uring::{opcode, types, IoUring};
    let u = format!("{dir}/u");
    std::fs::create_dir_all(&u).expect("mkdir u");
    let dirfd = open_dir(&u);
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    // One direct-descriptor slot, for an open into a fixed file.
    ring.submitter()
        .register_files_sparse(1)
        .expect("register files");
    let d = types::Fd(dirfd);
    let f = cstr("f");
    let open_fd = run_after(
        &mut ring,
        None,
        opcode::OpenAt::new(d, f.as_ptr())
            .flags(libc::O_CREAT | libc::O_WRONLY)
            .mode(0o640)
            .build(),
    );
    if open_fd >= 0 {
        close(open_fd);
    }
    let abs = cstr(&format!("{u}/f"));
    let how = types::OpenHow::new().flags(libc::O_RDONLY as u64);
    let open2_fd = run_after(
        &mut ring,
        None,
        opcode::OpenAt2::new(types::Fd(libc::AT_FDCWD), abs.as_ptr(), &how).build(),
    );
    if open2_fd >= 0 {
        close(open2_fd);
    }
    let (md, g, hl, sl, missing) = (
        cstr("md"),
        cstr("g"),
        cstr("hl"),
        cstr("sl"),
        cstr("missing"),
    );
    let mkdirat = run_after(
        &mut ring,
        None,
        opcode::MkDirAt::new(d, md.as_ptr()).mode(0o750).build(),
    );
    let renameat = run_after(
        &mut ring,
        None,
        opcode::RenameAt::new(d, f.as_ptr(), d, g.as_ptr()).build(),
    );
    let linkat = run_after(
        &mut ring,
        None,
        opcode::LinkAt::new(d, g.as_ptr(), d, hl.as_ptr()).build(),
    );
    let symlinkat = run_after(
        &mut ring,
        None,
        opcode::SymlinkAt::new(d, g.as_ptr(), sl.as_ptr()).build(),
    );
    let fixed_open = run_after(
        &mut ring,
        None,
        opcode::OpenAt::new(d, g.as_ptr())
            .flags(libc::O_RDONLY)
            .file_index(Some(
                types::DestinationSlot::try_from_slot_target(0).expect("slot 0"),
            ))
            .build(),
    );
    let unlinkat = run_after(
        &mut ring,
        None,
        opcode::UnlinkAt::new(d, hl.as_ptr()).build(),
    );
    let rmdirat = run_after(
        &mut ring,
        None,
        opcode::UnlinkAt::new(d, md.as_ptr())
            .flags(libc::AT_REMOVEDIR)
            .build(),
    );
    // IOSQE_CQE_SKIP_SUCCESS: no completion when it succeeds; a NOP marks the end.
    let skipd = cstr("skipd");
    let sqe = opcode::MkDirAt::new(d, skipd.as_ptr())
        .mode(0o700)
        .build()
        .flags(io_uring::squeue::Flags::SKIP_SUCCESS);
    let nop = run_after(&mut ring, Some(sqe), opcode::Nop::new().build());
    // The mkdir may still run in an io-wq worker: wait for it (bounded).
    let skipd_path = std::path::PathBuf::from(format!("{u}/skipd"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while !skipd_path.is_dir() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let skip_mkdirat = if skipd_path.is_dir() && nop == 0 {
        0
    } else {
        -1
    };
    let missing = run_after(
        &mut ring,
        None,
        opcode::OpenAt::new(d, missing.as_ptr())
            .flags(libc::O_RDONLY)
            .build(),
    );
    close(dirfd);
    format!(
        "u={u} dirfd={dirfd} open_fd={open_fd} open2_fd={open2_fd} mkdirat={mkdirat} \
         renameat={renameat} linkat={linkat} symlinkat={symlinkat} fixed_open={fixed_open} \
         unlinkat={unlinkat} \
         rmdirat={rmdirat} skip_mkdirat={skip_mkdirat} missing={missing} uid={}",
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

/// Opens `path` with `flags`; panics naming it when that fails.
fn open_file(path: &str, flags: i32) -> i32 {
    let p = cstr(path);
    // SAFETY: a valid NUL-terminated path; checked.
    let fd = unsafe { libc::open(p.as_ptr(), flags) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

/// Queues `skipped` (no completion expected) and `sqe` on `ring`, and returns `sqe`'s
/// result. The caller keeps every pointer in the SQEs alive for the call.
fn run_after(
    ring: &mut io_uring::IoUring,
    skipped: Option<io_uring::squeue::Entry>,
    sqe: io_uring::squeue::Entry,
) -> i32 {
    // SAFETY: the caller keeps the SQEs' pointers alive until the wait below returns.
    unsafe {
        if let Some(s) = skipped {
            ring.submission().push(&s).expect("queue full");
        }
        ring.submission().push(&sqe).expect("queue full")
    };
    ring.submit_and_wait(1).expect("io_uring_enter");
    ring.completion().next().expect("a completion").result()
}

/// Runs `sqe`, which names descriptor `x`, linked behind a READ of an empty pipe
/// (IO_LINK), so that the kernel looks `x` up only when the pipe is written: after `h`
/// is dup2'd over `x`. Closes `x` and `h`; returns `sqe`'s result.
fn swapped_under(
    ring: &mut io_uring::IoUring,
    x: i32,
    h: i32,
    sqe: io_uring::squeue::Entry,
) -> i32 {
    use io_uring::{opcode, squeue::Flags, types};
    let mut pipe = [0i32; 2];
    // SAFETY: pipe writes two descriptors into the array.
    assert_eq!(unsafe { libc::pipe(pipe.as_mut_ptr()) }, 0, "pipe");
    let mut byte = [0u8; 1];
    let read = opcode::Read::new(types::Fd(pipe[0]), byte.as_mut_ptr(), 1)
        .build()
        .flags(Flags::IO_LINK)
        .user_data(1);
    // SAFETY: `byte` outlives both completions, reaped below; the caller keeps `sqe`'s
    // pointers alive for this call.
    unsafe {
        ring.submission().push(&read).expect("queue full");
        ring.submission()
            .push(&sqe.user_data(2))
            .expect("queue full");
    }
    ring.submit().expect("io_uring_enter");
    // SAFETY: plain syscalls on descriptors this process owns.
    unsafe {
        assert_eq!(libc::dup2(h, x), x, "dup2");
        assert_eq!(libc::write(pipe[1], b"go".as_ptr().cast(), 1), 1, "write");
    }
    ring.submit_and_wait(2).expect("io_uring_enter");
    let mut result = i32::MIN;
    for cqe in ring.completion() {
        if cqe.user_data() == 2 {
            result = cqe.result();
        }
    }
    for fd in [h, x, pipe[0], pipe[1]] {
        close(fd);
    }
    result
}

fn uring_truncate(dir: &str) -> String {
    use io_uring::{opcode, types, IoUring};
    let t = format!("{dir}/t");
    std::fs::create_dir_all(&t).expect("mkdir t");
    for name in ["f", "g", "decoy", "h"] {
        std::fs::write(format!("{t}/{name}"), [b'x'; 100]).expect("create");
    }
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    let g = open_file(&format!("{t}/g"), libc::O_RDWR);
    ring.submitter()
        .register_files(&[g])
        .expect("register files");
    close(g);
    let f = open_file(&format!("{t}/f"), libc::O_WRONLY);
    let big = run_after(
        &mut ring,
        None,
        opcode::Ftruncate::new(types::Fd(f), 5_000_000_000).build(),
    );
    close(f);
    let fixed = run_after(
        &mut ring,
        None,
        opcode::Ftruncate::new(types::Fixed(0), 3).build(),
    );
    let ro = open_file("/etc/passwd", libc::O_RDONLY);
    let passwd = run_after(
        &mut ring,
        None,
        opcode::Ftruncate::new(types::Fd(ro), 0).build(),
    );
    close(ro);
    let badfd = run_after(
        &mut ring,
        None,
        opcode::Ftruncate::new(types::Fd(9999), 0).build(),
    );

    let x = open_file(&format!("{t}/decoy"), libc::O_WRONLY);
    let h = open_file(&format!("{t}/h"), libc::O_WRONLY);
    let swap = swapped_under(
        &mut ring,
        x,
        h,
        opcode::Ftruncate::new(types::Fd(x), 1).build(),
    );
    let len = |name: &str| {
        std::fs::metadata(format!("{t}/{name}"))
            .map(|m| m.len())
            .unwrap_or(u64::MAX)
    };
    format!(
        "t={t} big={big} fixed={fixed} passwd={passwd} badfd={badfd} swap={swap}          f_len={} g_len={} h_len={} decoy_len={} uid={}",
        len("f"),
        len("g"),
        len("h"),
        len("decoy"),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

fn uring_xattr(dir: &str) -> String {
    use io_uring::{opcode, types, IoUring};
    let ux = format!("{dir}/ux");
    std::fs::create_dir_all(&ux).expect("mkdir ux");
    for name in ["f", "decoy", "h"] {
        std::fs::write(format!("{ux}/{name}"), b"x").expect("create");
    }
    let open = |path: &str| open_file(path, libc::O_RDONLY);
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    let f = cstr(&format!("{ux}/f"));
    let (u, fu, caps_name, swap_name) = (
        cstr("user.u"),
        cstr("user.fu"),
        cstr("security.capability"),
        cstr("user.swap"),
    );
    let mut caps = [0u8; 20];
    caps[..4].copy_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    caps[4..8].copy_from_slice(&(1u32 << 7).to_le_bytes());
    let set = run_after(
        &mut ring,
        None,
        opcode::SetXattr::new(u.as_ptr(), b"abc".as_ptr().cast(), f.as_ptr(), 3)
            .flags(libc::XATTR_CREATE)
            .build(),
    );
    let fd = open(&format!("{ux}/f"));
    let fset = run_after(
        &mut ring,
        None,
        opcode::FSetXattr::new(types::Fd(fd), fu.as_ptr(), b"ab".as_ptr().cast(), 2).build(),
    );
    // IOSQE_CQE_SKIP_SUCCESS: no completion when it succeeds; a NOP marks the end.
    let skip_name = cstr("user.skip");
    let skip = opcode::FSetXattr::new(types::Fd(fd), skip_name.as_ptr(), b"k".as_ptr().cast(), 1)
        .build()
        .flags(io_uring::squeue::Flags::SKIP_SUCCESS | io_uring::squeue::Flags::IO_LINK);
    let skipped = run_after(&mut ring, Some(skip), opcode::Nop::new().build());
    close(fd);
    let caps_res = run_after(
        &mut ring,
        None,
        opcode::SetXattr::new(caps_name.as_ptr(), caps.as_ptr().cast(), f.as_ptr(), 20).build(),
    );
    let (x, h) = (open(&format!("{ux}/decoy")), open(&format!("{ux}/h")));
    let swap = swapped_under(
        &mut ring,
        x,
        h,
        opcode::FSetXattr::new(types::Fd(x), swap_name.as_ptr(), b"s".as_ptr().cast(), 1).build(),
    );
    let has = |name: &str, attr: &str| {
        let mut buf = [0u8; 8];
        // SAFETY: valid strings and a buffer of its own size.
        let r = unsafe {
            libc::getxattr(
                cstr(&format!("{ux}/{name}")).as_ptr(),
                cstr(attr).as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        i32::from(r >= 0)
    };
    format!(
        "ux={ux} set={set} fset={fset} skipped={skipped} f_skip={} caps={caps_res} swap={swap} \
         h_has={} decoy_has={} uid={}",
        has("f", "user.skip"),
        has("h", "user.swap"),
        has("decoy", "user.swap"),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

/// Cost measurement: prints `pid=`, waits for a line on stdin, then N times: io_uring
/// OPENAT of DIR/s/f (O_CREAT) + close, RENAMEAT f -> g -> f, and two NOPs (an opcode the
/// file hooks must skip at once).
fn uring_storm(dir: &str, n: usize, nops_only: bool) {
    use io_uring::{opcode, types, IoUring};
    use std::io::BufRead;
    let s = format!("{dir}/s");
    std::fs::create_dir_all(&s).expect("mkdir s");
    let dirfd = open_dir(&s);
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    println!("pid={}", std::process::id());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("go");
    let d = types::Fd(dirfd);
    let (f, g) = (cstr("f"), cstr("g"));
    let start = std::time::Instant::now();
    for _ in 0..n {
        let sqes = [
            opcode::OpenAt::new(d, f.as_ptr())
                .flags(libc::O_CREAT | libc::O_WRONLY)
                .mode(0o600)
                .build(),
            opcode::Nop::new().build(),
            opcode::RenameAt::new(d, f.as_ptr(), d, g.as_ptr()).build(),
            opcode::RenameAt::new(d, g.as_ptr(), d, f.as_ptr()).build(),
            opcode::Nop::new().build(),
        ];
        let sqes = if nops_only {
            [(); 5].map(|_| opcode::Nop::new().build())
        } else {
            sqes
        };
        for sqe in sqes {
            // SAFETY: the paths outlive the wait below.
            unsafe { ring.submission().push(&sqe).expect("queue full") };
            ring.submit_and_wait(1).expect("io_uring_enter");
            let r = ring.completion().next().expect("a completion").result();
            if r > 0 {
                close(r);
            }
        }
    }
    println!("ops={} seconds={}", 5 * n, start.elapsed().as_secs_f64());
}

/// Fills the completion queue (2 entries) and goes on submitting MKDIRATs without
/// reaping, so that their completions overflow; then reaps them all.
fn uring_overflow(dir: &str, n: usize, same_user_data: bool) -> String {
    use io_uring::{opcode, types, IoUring};
    let o = format!("{dir}/o{}", u8::from(same_user_data));
    std::fs::create_dir_all(&o).expect("mkdir o");
    let dirfd = open_dir(&o);
    let mut ring = IoUring::builder()
        .setup_cqsize(2)
        .build(1)
        .expect("io_uring_setup");
    let names: Vec<CString> = (0..n).map(|i| cstr(&format!("d{i}"))).collect();
    for (i, name) in names.iter().enumerate() {
        let sqe = opcode::MkDirAt::new(types::Fd(dirfd), name.as_ptr())
            .mode(0o700)
            .build()
            .user_data(if same_user_data { 7 } else { i as u64 + 1 });
        // SAFETY: the names outlive the ring's work (all reaped below).
        unsafe { ring.submission().push(&sqe).expect("queue full") };
        ring.submit().expect("io_uring_enter");
    }
    let mut results: Vec<i32> = Vec::new();
    while results.len() < n {
        ring.submit_and_wait(1).expect("io_uring_enter");
        results.extend(
            ring.completion()
                .map(|c: io_uring::cqueue::Entry| c.result()),
        );
    }
    let ok = results.iter().filter(|&&r| r == 0).count();
    close(dirfd);
    format!("o={o} n={n} ok={ok}")
}

/// Cost measurement: prints `pid=`, waits for a line on stdin, then N times
/// renameat(dirfd, "f", dirfd, "g") and back, relative to a dirfd of DIR/m.
fn rename_storm(dir: &str, n: usize) {
    use std::io::BufRead;
    let m = format!("{dir}/m");
    std::fs::create_dir_all(&m).expect("mkdir m");
    touch(&format!("{m}/f"));
    let dirfd = open_dir(&m);
    let (f, g) = (cstr("f"), cstr("g"));
    println!("pid={}", std::process::id());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("go");
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: valid NUL-terminated names relative to an open directory.
        unsafe {
            assert_eq!(libc::renameat(dirfd, f.as_ptr(), dirfd, g.as_ptr()), 0);
            assert_eq!(libc::renameat(dirfd, g.as_ptr(), dirfd, f.as_ptr()), 0);
        }
    }
    println!(
        "renames={} seconds={}",
        2 * n,
        start.elapsed().as_secs_f64()
    );
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.get(2).map(String::as_str) == Some("nobody") {
        drop_to_nobody();
    }
    let out = match args.first().map(String::as_str) {
        Some("twopaths") => twopaths(&args[1]),
        Some("race") => race(&args[1], args[3].parse().expect("N")),
        Some("uring") => uring(&args[1]),
        Some("uring-truncate") => uring_truncate(&args[1]),
        Some("uring-xattr") => uring_xattr(&args[1]),
        Some("uring-overflow") => uring_overflow(
            &args[1],
            args[3].parse().expect("N"),
            args.get(4).is_some_and(|a| a == "same"),
        ),
        Some("rename-storm") => {
            rename_storm(&args[1], args[2].parse().expect("N"));
            return;
        }
        Some("uring-storm") => {
            uring_storm(
                &args[1],
                args[2].parse().expect("N"),
                args.get(3).is_some_and(|a| a == "nops"),
            );
            return;
        }
        _ => {
            eprintln!("usage: kuring-actor twopaths|race|uring|uring-truncate DIR [nobody] [N]");
            std::process::exit(2);
        }
    };
    println!("pid={} {out}", std::process::id());
}
