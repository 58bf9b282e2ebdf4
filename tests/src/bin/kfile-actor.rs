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
//!
//! kfile-actor int80 DIR [nobody]   (x86_64) every file call through `int $0x80`:
//!   - open(5) DIR/c32/open5 O_CREAT, creat(8) DIR/c32/creat8,
//!     openat(295) (dirfd of DIR/c32, "at295", O_CREAT), openat2(437) DIR/c32/at2_437,
//!     rename(38) creat8 -> ren38, renameat(302) ren38 -> ren302,
//!     renameat2(353) ren302 -> ren353, unlink(10) open5, unlinkat(301) (dirfd, "at295"),
//!     a failed open(5) of DIR/c32/missing                        -> dir=DIR/c32 and results
//!
//! kfile-actor dirs DIR [nobody]
//!   - mkdir DIR/d/m1 0o750, mkdirat(dirfd of DIR/d, "m2", 0o700), rmdir DIR/d/m1,
//!     unlinkat(dirfd, "m2", AT_REMOVEDIR), create DIR/d/f, chmod DIR/d/f 0o4755 (setuid),
//!     fchmodat(dirfd, "f", 0o2750) (setgid), a failed chmod of DIR/d/missing (ENOENT)
//!                                                                  -> d=DIR/d and results
//!
//! kfile-actor links DIR [nobody]
//!   - create DIR/l/f; link(f, DIR/l/hl); linkat(dirfd of DIR/l, "f", dirfd, "hl2");
//!     symlink("../elsewhere/t", DIR/l/sl); symlinkat("f", dirfd, "sl2");
//!     chown(f, -1, own gid); lchown(sl, own uid, -1); fchownat(dirfd, "f", uid, gid);
//!     memfd_create("kfile3-memfd", MFD_CLOEXEC); a failed chown of DIR/l/missing
//!                                                                  -> l=DIR/l and results
//!
//! kfile-actor int80-more DIR [nobody]   (x86_64) the other file calls through `int $0x80`:
//!   - in DIR/m32: mkdir(39) d39 0o750, mkdirat(296) (dirfd, "d296", 0o700), rmdir(40) d39,
//!     create f (native), chmod(15) f 0o4755, fchmodat(306) (dirfd, "f", 0o2750),
//!     chown32(212) f (-1, own gid), lchown16(16) f (0xffff, 0xffff),
//!     fchownat(298) (dirfd, "f", own uid, -1, 0), link(9) f -> hl,
//!     linkat(303) (dirfd, "f", dirfd, "hl2", 0), symlink(83) "t/x" -> sl,
//!     symlinkat(304) ("f", dirfd, "sl2"), memfd_create(356) "m32-memfd"
//!                                                                  -> m=DIR/m32 and results
//!
//! kfile-actor byfd DIR [nobody]   calls that name their file by descriptor, in DIR/h:
//!   - create f, fd = open(f); fchmod(fd, 0o4755); fchown(fd, -1, own gid);
//!     (x86_64) through `int $0x80`: fchmod(94) (fd, 0o2750), fchown32(207) (fd, own uid,
//!     -1), fchown16(95) (fd, 0xffff, 0xffff);
//!   - name_to_handle_at(f); mfd = open(DIR/h); open_by_handle_at(mfd, handle, O_RDONLY)
//!     (needs CAP_DAC_READ_SEARCH: EPERM as nobody), then (x86_64) the same through
//!     `int $0x80` (342), the actor's last call                     -> h=DIR/h and results
//!
//! kfile-actor mknod DIR [nobody]   in DIR/n: mknod fifo (S_IFIFO|0o640), mknod suid
//!   (S_IFREG|0o4755: a setuid file without an open), mknodat(dirfd, "fifo2", S_IFIFO|0o600),
//!   mknod null (S_IFCHR 1:3: EPERM unprivileged); (x86_64) through `int $0x80`:
//!   mknod(14) fifo32, mknodat(297) (dirfd, "reg32", S_IFREG|0o2755); the last call
//!                                                                  -> n=DIR/n and results
//!
//! kfile-actor truncate DIR [nobody]   DIR/t/log (100 bytes): truncate(log, 0), ftruncate(fd,
//!   5e9), truncate("/etc/shadow", 0) (EACCES unprivileged); (x86_64) through `int $0x80`:
//!   truncate64(193) (log, 2^32 + 7), truncate(92) (log, -1: EINVAL), ftruncate(93) (fd, 3),
//!   the last call                                               -> log=DIR/t/log and results
//!
//! kfile-actor chroot DIR [nobody]   as root of a new user namespace (no privilege on
//!   the host), chroot(DIR/jail) (which holds etc/passwd, a decoy, and w/), chdir("/");
//!   open("/etc/passwd"), chdir("w"), open("new", O_CREAT), unlink("new"), and an open
//!   of /w/new that now fails (ENOENT)          -> jail=DIR/jail and results, uid on the host
//!
//! kfile-actor chroot-exec DIR [nobody]   DIR/jail/bin/ldconfig (a copy of the static
//!   /sbin/ldconfig), then as root of a new user namespace chroot(DIR/jail), chdir("/"),
//!   and a child execs "/bin/ldconfig --version"          -> jail=DIR/jail child=PID status
//!
//! kfile-actor xattr DIR [nobody]   in DIR/x (f, and sl a symlink to it):
//!   setxattr(f, "user.note", 5 bytes, XATTR_CREATE); lsetxattr(sl, "user.l") (EPERM:
//!   no user attributes on symlinks); fsetxattr(fd of f, "user.fd", 2 bytes,
//!   XATTR_REPLACE) (ENODATA: not there); setxattr(f, "security.capability", a v2
//!   capability set with cap_setuid) (EPERM unprivileged); chdir DIR/x:
//!   setxattr("f", "trusted.t") (EPERM); setxattrat(dirfd, "f", 0, "user.at", 3 bytes);
//!   setxattrat(fd of f, "", AT_EMPTY_PATH, "user.atfd", 3 bytes);
//!   (x86_64) through `int $0x80`: setxattr(226) (f, "user.c32", 3 bytes),
//!   fsetxattr(228) (fd, "user.fd32", 4 bytes, XATTR_CREATE), the last call
//!                                                                  -> x=DIR/x and results
//!
//! kfile-actor userns DIR [nobody]   a child made by clone(CLONE_NEWUSER) exits at
//!   once; then the actor itself enters a new user namespace (unshare(CLONE_NEWUSER))
//!                                                      -> clone_child=PID unshare=0
//!
//! kfile-actor cwd-race DIR N [nobody]   a thread flips the shared cwd between DIR/race/real
//!   and DIR/race/decoy (fchdir) while the main thread chmods (0o4755) then unlinks
//!   r0..rN, which exist only in real, by relative name       -> real=.. decoy=.. and counts
//!
//! kfile-actor fd-swap DIR N [nobody]   DIR/swap/secret and DIR/swap/benign; benign is
//!   opened once (fd B), then the main thread opens secret N times (open + close) while a
//!   thread `dup2`s B over the descriptor the next open will get and closes it again: an
//!   open whose new fd is swapped before the collector reads it
//!   -> secret=.. benign=.. benign_fd=B opened=N' target_fd=T uid=..
//!
//! kfile-actor fd-flip DIR N [nobody]   DIR/flip/f0..f255; fd F holds f0 while a thread
//!   dup2s f1, f2, ... onto F in turn (20 us apart, never one twice) and the main thread
//!   calls ftruncate(F, i) for i = 1..=N, natively for odd i and through `int $0x80`
//!   (93) for even i on x86_64; after each call the file whose size is i took it
//!   -> dir=DIR/flip hits=<k of the file call i truncated, comma-separated> uid=..
//!
//! kfile-actor int80-opens PATH N   (x86_64, cost measurement) prints `pid=`, waits for a
//!   line on stdin, then N times open(5)+close(6) of PATH through `int $0x80`
//!                                                                  -> opens=N seconds=S
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

/// A libc call's result: itself, or minus the errno it set when it failed.
fn err(r: i32) -> i32 {
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

/// Root of a fresh user namespace (mapped to the caller's uid and gid), which gives the
/// capabilities that `chroot` needs inside it and nothing on the host.
fn enter_user_namespace() {
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: plain syscall; checked.
    assert_eq!(
        unsafe { libc::unshare(libc::CLONE_NEWUSER) },
        0,
        "unshare(CLONE_NEWUSER): {}",
        std::io::Error::last_os_error()
    );
    std::fs::write("/proc/self/setgroups", "deny").expect("setgroups deny");
    std::fs::write("/proc/self/uid_map", format!("0 {uid} 1")).expect("uid_map");
    std::fs::write("/proc/self/gid_map", format!("0 {gid} 1")).expect("gid_map");
}

fn userns() -> String {
    // SAFETY: a raw clone with no new stack behaves like fork; the child only calls
    // _exit. The parent reaps it.
    let child = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::CLONE_NEWUSER | libc::SIGCHLD,
            0,
            0,
            0,
            0,
        )
    };
    if child == 0 {
        // SAFETY: leaving the child at once, without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    assert!(child > 0, "clone: {}", std::io::Error::last_os_error());
    let mut status = 0;
    // SAFETY: our own child.
    unsafe { libc::waitpid(child as i32, &mut status, 0) };
    // SAFETY: plain syscall.
    let unshared = err(unsafe { libc::unshare(libc::CLONE_NEWUSER) });
    format!("clone_child={child} unshare={unshared} uid=65534")
}

fn chroot(dir: &str) -> String {
    let jail = format!("{dir}/jail");
    std::fs::create_dir_all(format!("{jail}/etc")).expect("mkdir jail/etc");
    std::fs::create_dir_all(format!("{jail}/w")).expect("mkdir jail/w");
    std::fs::write(format!("{jail}/etc/passwd"), "decoy:x:0:0::/:/bin/sh\n").expect("decoy");
    // SAFETY: getuid cannot fail.
    let host_uid = unsafe { libc::getuid() };
    enter_user_namespace();
    let c = |s: &str| cstr(s);
    // SAFETY (all blocks below): plain syscalls with valid NUL-terminated strings; every
    // result is reported.
    let chrooted = err(unsafe { libc::chroot(c(&jail).as_ptr()) });
    assert_eq!(chrooted, 0, "chroot: {}", std::io::Error::last_os_error());
    std::env::set_current_dir("/").expect("chdir /");
    let passwd = err(unsafe { libc::open(c("/etc/passwd").as_ptr(), libc::O_RDONLY) });
    if passwd >= 0 {
        close(passwd);
    }
    std::env::set_current_dir("w").expect("chdir w");
    let created = err(unsafe {
        libc::open(
            c("new").as_ptr(),
            libc::O_CREAT | libc::O_WRONLY,
            0o600 as libc::c_uint,
        )
    });
    if created >= 0 {
        close(created);
    }
    let unlinked = err(unsafe { libc::unlink(c("new").as_ptr()) });
    let gone = err(unsafe { libc::open(c("new").as_ptr(), libc::O_RDONLY) });
    format!(
        "jail={jail} passwd={} created={} unlinked={unlinked} gone={gone} uid={host_uid}",
        i32::from(passwd >= 0),
        i32::from(created >= 0)
    )
}

fn chroot_exec(dir: &str) -> String {
    let jail = format!("{dir}/jail");
    std::fs::create_dir_all(format!("{jail}/bin")).expect("mkdir jail/bin");
    // Statically linked: it runs in a jail without libraries.
    std::fs::copy("/sbin/ldconfig", format!("{jail}/bin/ldconfig")).expect("copy ldconfig");
    // SAFETY: getuid cannot fail.
    let host_uid = unsafe { libc::getuid() };
    enter_user_namespace();
    // SAFETY: plain syscall with a valid NUL-terminated path; checked.
    let chrooted = err(unsafe { libc::chroot(cstr(&jail).as_ptr()) });
    assert_eq!(chrooted, 0, "chroot: {}", std::io::Error::last_os_error());
    std::env::set_current_dir("/").expect("chdir /");
    let child = std::process::Command::new("/bin/ldconfig")
        .arg("--version")
        // Piped, not null: the jail has no /dev/null.
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("exec /bin/ldconfig in the jail");
    let pid = child.id();
    let status = child
        .wait_with_output()
        .expect("wait")
        .status
        .code()
        .unwrap_or(-1);
    format!("jail={jail} child={pid} status={status} uid={host_uid}")
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

#[cfg(target_arch = "x86_64")]
use collector_tests::syscall32;

/// Memory below 4 GiB (`MAP_32BIT`), where i386 syscall arguments can point.
#[cfg(target_arch = "x86_64")]
struct LowMem {
    base: usize,
    next: usize,
    len: usize,
}

#[cfg(target_arch = "x86_64")]
impl LowMem {
    fn new(len: usize) -> Self {
        // SAFETY: an anonymous private mapping of our own, checked.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED, "mmap MAP_32BIT");
        let base = mem as usize;
        assert!(base + len < u32::MAX as usize, "mapping below 4 GiB");
        Self {
            base,
            next: base,
            len,
        }
    }

    /// Copies `bytes` and a NUL into the mapping (8-aligned); returns its 32-bit address.
    fn put(&mut self, bytes: &[u8]) -> u32 {
        let at = self.next;
        assert!(at + bytes.len() + 1 < self.base + self.len);
        // SAFETY: inside our mapping (checked above).
        unsafe {
            std::ptr::copy_nonoverlapping(bytes.as_ptr(), at as *mut u8, bytes.len());
            *((at + bytes.len()) as *mut u8) = 0;
        }
        self.next = (at + bytes.len() + 8) & !7;
        at as u32
    }
}

#[cfg(target_arch = "x86_64")]
fn int80(dir: &str) -> String {
    const AT_FDCWD: u32 = -100i32 as u32;
    let c32 = format!("{dir}/c32");
    std::fs::create_dir_all(&c32).expect("mkdir c32");
    let mut low = LowMem::new(8192);
    let mut put = |bytes: &[u8]| low.put(bytes);
    let p = |name: &str| format!("{c32}/{name}");
    let open5 = put(p("open5").as_bytes());
    let creat8 = put(p("creat8").as_bytes());
    let at295 = put(b"at295");
    let at2 = put(p("at2_437").as_bytes());
    let ren38 = put(p("ren38").as_bytes());
    let ren302 = put(p("ren302").as_bytes());
    let ren353 = put(p("ren353").as_bytes());
    let missing = put(p("missing").as_bytes());
    // struct open_how { u64 flags; u64 mode; u64 resolve; }
    let how = put(&[0u8; 24]);
    // SAFETY: inside our mapping, 8-aligned.
    unsafe {
        *(how as usize as *mut u64) = (libc::O_CREAT | libc::O_WRONLY) as u64;
        *((how as usize + 8) as *mut u64) = 0o600;
    }
    let creat = (libc::O_CREAT | libc::O_WRONLY) as u32;
    let dirfd = open_dir(&c32);
    // SAFETY: i386 syscalls with pointers into our low mapping.
    let r = unsafe {
        let open = syscall32(5, [open5, creat, 0o644, 0, 0]);
        let creat_fd = syscall32(8, [creat8, 0o640, 0, 0, 0]);
        let openat = syscall32(295, [dirfd as u32, at295, creat, 0o600, 0]);
        let openat2 = syscall32(437, [AT_FDCWD, at2, how, 24, 0]);
        let rename = syscall32(38, [creat8, ren38, 0, 0, 0]);
        let renameat = syscall32(302, [AT_FDCWD, ren38, AT_FDCWD, ren302, 0]);
        let renameat2 = syscall32(353, [AT_FDCWD, ren302, AT_FDCWD, ren353, 1]);
        let unlink = syscall32(10, [open5, 0, 0, 0, 0]);
        let unlinkat = syscall32(301, [dirfd as u32, at295, 0, 0, 0]);
        let missing = syscall32(5, [missing, 0, 0, 0, 0]);
        [
            ("open", open),
            ("creat", creat_fd),
            ("openat", openat),
            ("openat2", openat2),
            ("rename", rename),
            ("renameat", renameat),
            ("renameat2", renameat2),
            ("unlink", unlink),
            ("unlinkat", unlinkat),
            ("missing", missing),
        ]
    };
    let mut out = format!("dir={c32} uid={}", unsafe { libc::getuid() });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

#[cfg(target_arch = "x86_64")]
fn int80_more(dir: &str) -> String {
    let m = format!("{dir}/m32");
    std::fs::create_dir_all(&m).expect("mkdir m32");
    let mut low = LowMem::new(8192);
    let mut put = |bytes: &[u8]| low.put(bytes);
    let p = |name: &str| format!("{m}/{name}");
    let d39 = put(p("d39").as_bytes());
    let d296 = put(b"d296");
    let f_abs = put(p("f").as_bytes());
    let f_rel = put(b"f");
    let hl = put(p("hl").as_bytes());
    let hl2 = put(b"hl2");
    let target = put(b"t/x");
    let sl = put(p("sl").as_bytes());
    let sl2 = put(b"sl2");
    let memfd_name = put(b"m32-memfd");
    std::fs::write(p("f"), b"x").expect("create f");
    let dirfd = open_dir(&m) as u32;
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // SAFETY: i386 syscalls with pointers into our low mapping.
    let r = unsafe {
        [
            ("mkdir", syscall32(39, [d39, 0o750, 0, 0, 0])),
            ("mkdirat", syscall32(296, [dirfd, d296, 0o700, 0, 0])),
            ("rmdir", syscall32(40, [d39, 0, 0, 0, 0])),
            ("chmod", syscall32(15, [f_abs, 0o4755, 0, 0, 0])),
            ("fchmodat", syscall32(306, [dirfd, f_rel, 0o2750, 0, 0])),
            ("chown32", syscall32(212, [f_abs, u32::MAX, gid, 0, 0])),
            ("lchown16", syscall32(16, [f_abs, 0xffff, 0xffff, 0, 0])),
            ("fchownat", syscall32(298, [dirfd, f_rel, uid, u32::MAX, 0])),
            ("link", syscall32(9, [f_abs, hl, 0, 0, 0])),
            ("linkat", syscall32(303, [dirfd, f_rel, dirfd, hl2, 0])),
            ("symlink", syscall32(83, [target, sl, 0, 0, 0])),
            ("symlinkat", syscall32(304, [f_rel, dirfd, sl2, 0, 0])),
            ("memfd", syscall32(356, [memfd_name, 1, 0, 0, 0])),
        ]
    };
    let mut out = format!("m={m} uid={uid} gid={gid}");
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

/// N opens + closes of `path` through `int $0x80`, after a `go` line on stdin (the
/// collector includes this pid first).
#[cfg(target_arch = "x86_64")]
fn int80_opens(path: &str, n: u64) -> String {
    use std::io::BufRead;
    let mut low = LowMem::new(8192);
    let p = low.put(path.as_bytes());
    println!("pid={}", std::process::id());
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).expect("go");
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: i386 open/close with a pointer into our low mapping.
        unsafe {
            let fd = syscall32(5, [p, 0, 0, 0, 0]);
            assert!(fd >= 0, "open {path}: {fd}");
            syscall32(6, [fd as u32, 0, 0, 0, 0]);
        }
    }
    format!("opens={n} seconds={}", start.elapsed().as_secs_f64())
}

fn dirs(dir: &str) -> String {
    let d = format!("{dir}/d");
    std::fs::create_dir_all(&d).expect("mkdir d");
    let dirfd = open_dir(&d);
    let c = |name: &str| cstr(&format!("{d}/{name}"));
    // SAFETY: plain syscalls with valid NUL-terminated paths; results are reported.
    let r = unsafe {
        let mkdir = libc::mkdir(c("m1").as_ptr(), 0o750);
        let mkdirat = libc::mkdirat(dirfd, cstr("m2").as_ptr(), 0o700);
        let rmdir = libc::rmdir(c("m1").as_ptr());
        let unlinkat = libc::unlinkat(dirfd, cstr("m2").as_ptr(), libc::AT_REMOVEDIR);
        close(open_creat(libc::AT_FDCWD, &format!("{d}/f")));
        let chmod = libc::chmod(c("f").as_ptr(), 0o4755);
        let fchmodat = libc::fchmodat(dirfd, cstr("f").as_ptr(), 0o2750, 0);
        let missing = libc::chmod(c("missing").as_ptr(), 0o644);
        [
            ("mkdir", mkdir),
            ("mkdirat", mkdirat),
            ("rmdir", rmdir),
            ("unlinkat", unlinkat),
            ("chmod", chmod),
            ("fchmodat", fchmodat),
            (
                "missing",
                if missing < 0 {
                    -std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
                } else {
                    missing
                },
            ),
        ]
    };
    close(dirfd);
    let mut out = format!("d={d} uid={}", unsafe { libc::getuid() });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

fn links(dir: &str) -> String {
    let l = format!("{dir}/l");
    std::fs::create_dir_all(&l).expect("mkdir l");
    let dirfd = open_dir(&l);
    close(open_creat(libc::AT_FDCWD, &format!("{l}/f")));
    let c = |name: &str| cstr(&format!("{l}/{name}"));
    // SAFETY: plain syscalls with valid NUL-terminated strings; results are reported.
    let r = unsafe {
        let (uid, gid) = (libc::getuid(), libc::getgid());
        let link = err(libc::link(c("f").as_ptr(), c("hl").as_ptr()));
        let linkat = err(libc::linkat(
            dirfd,
            cstr("f").as_ptr(),
            dirfd,
            cstr("hl2").as_ptr(),
            0,
        ));
        let symlink = err(libc::symlink(
            cstr("../elsewhere/t").as_ptr(),
            c("sl").as_ptr(),
        ));
        let symlinkat = err(libc::symlinkat(
            cstr("f").as_ptr(),
            dirfd,
            cstr("sl2").as_ptr(),
        ));
        let chown = err(libc::chown(c("f").as_ptr(), u32::MAX, gid));
        let lchown = err(libc::lchown(c("sl").as_ptr(), uid, u32::MAX));
        let fchownat = err(libc::fchownat(dirfd, cstr("f").as_ptr(), uid, gid, 0));
        let name = cstr("kfile3-memfd");
        let memfd =
            err(libc::syscall(libc::SYS_memfd_create, name.as_ptr(), libc::MFD_CLOEXEC) as i32);
        let missing = err(libc::chown(c("missing").as_ptr(), 0, 0));
        [
            ("link", link),
            ("linkat", linkat),
            ("symlink", symlink),
            ("symlinkat", symlinkat),
            ("chown", chown),
            ("lchown", lchown),
            ("fchownat", fchownat),
            ("memfd", memfd),
            ("missing", missing),
        ]
    };
    close(dirfd);
    let mut out = format!("l={l} uid={} gid={}", unsafe { libc::getuid() }, unsafe {
        libc::getgid()
    });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

/// An unnamed file made with `O_TMPFILE` in DIR/t, written, then given a name through
/// `linkat` of `/proc/self/fd/N` (what an unprivileged process can do).
fn tmpfile(dir: &str) -> String {
    let t = format!("{dir}/t");
    std::fs::create_dir_all(&t).expect("mkdir t");
    // SAFETY: plain syscalls with valid NUL-terminated strings; results are reported.
    let (fd, linked) = unsafe {
        let fd = err(libc::open(
            cstr(&t).as_ptr(),
            libc::O_TMPFILE | libc::O_RDWR,
            0o600,
        ));
        if fd >= 0 {
            libc::write(fd, b"payload".as_ptr().cast(), 7);
        }
        let linked = err(libc::linkat(
            libc::AT_FDCWD,
            cstr(&format!("/proc/self/fd/{fd}")).as_ptr(),
            libc::AT_FDCWD,
            cstr(&format!("{t}/named")).as_ptr(),
            libc::AT_SYMLINK_FOLLOW,
        ));
        (fd, linked)
    };
    format!("t={t} uid={} fd={fd} linked={linked}", unsafe {
        libc::getuid()
    })
}

/// `struct file_handle` with room for any filesystem's handle (`MAX_HANDLE_SZ` 128).
#[repr(C)]
struct FileHandle {
    handle_bytes: u32,
    handle_type: i32,
    f_handle: [u8; 128],
}

fn byfd(dir: &str) -> String {
    let h = format!("{dir}/h");
    std::fs::create_dir_all(&h).expect("mkdir h");
    let f = format!("{h}/f");
    close(open_creat(libc::AT_FDCWD, &f));
    let err = |r: i64| {
        if r < 0 {
            -std::io::Error::last_os_error().raw_os_error().unwrap_or(0) as i64
        } else {
            r
        }
    };
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let fd = {
        let p = cstr(&f);
        // SAFETY: valid NUL-terminated path; checked.
        let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY) };
        assert!(fd >= 0, "open {f}: {}", std::io::Error::last_os_error());
        fd
    };
    let mut r: Vec<(&str, i64)> = Vec::new();
    // SAFETY: plain syscalls on our own fd; results are reported.
    unsafe {
        r.push(("fchmod", err(libc::fchmod(fd, 0o4755) as i64)));
        r.push(("fchown", err(libc::fchown(fd, u32::MAX, gid) as i64)));
    }
    #[cfg(target_arch = "x86_64")]
    // SAFETY: i386 syscalls on our own fd, no pointers.
    unsafe {
        r.push((
            "fchmod32",
            syscall32(94, [fd as u32, 0o2750, 0, 0, 0]) as i64,
        ));
        r.push((
            "fchown32",
            syscall32(207, [fd as u32, uid, u32::MAX, 0, 0]) as i64,
        ));
        r.push((
            "fchown16",
            syscall32(95, [fd as u32, 0xffff, 0xffff, 0, 0]) as i64,
        ));
    }
    let mut handle = FileHandle {
        handle_bytes: 128,
        handle_type: 0,
        f_handle: [0; 128],
    };
    let mut mount_id: i32 = 0;
    let mfd = open_dir(&h);
    // SAFETY: a valid path, handle buffer and mount id out-parameter; checked.
    unsafe {
        let p = cstr(&f);
        let named = libc::syscall(
            libc::SYS_name_to_handle_at,
            libc::AT_FDCWD,
            p.as_ptr(),
            &raw mut handle,
            &raw mut mount_id,
            0,
        );
        assert_eq!(
            named,
            0,
            "name_to_handle_at: {}",
            std::io::Error::last_os_error()
        );
        let opened = err(libc::syscall(
            libc::SYS_open_by_handle_at,
            mfd,
            &raw mut handle,
            libc::O_RDONLY,
        ));
        r.push(("by_handle", opened));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut low = LowMem::new(4096);
        // SAFETY: `handle` is plain old data.
        let bytes = unsafe {
            std::slice::from_raw_parts((&raw const handle).cast::<u8>(), size_of::<FileHandle>())
        };
        let at = low.put(bytes);
        // SAFETY: an i386 syscall with a pointer into our low mapping.
        let opened = unsafe { syscall32(342, [mfd as u32, at, libc::O_RDONLY as u32, 0, 0]) };
        r.push(("by_handle32", opened as i64));
    }
    let mut out = format!("h={h} fd={fd} mfd={mfd} uid={uid} gid={gid}");
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

fn mknod(dir: &str) -> String {
    let n = format!("{dir}/n");
    std::fs::create_dir_all(&n).expect("mkdir n");
    let dirfd = open_dir(&n);
    let c = |name: &str| cstr(&format!("{n}/{name}"));
    let mut r: Vec<(&str, i32)> = Vec::new();
    // SAFETY: plain syscalls with valid NUL-terminated paths; results are reported.
    unsafe {
        r.push((
            "fifo",
            err(libc::mknod(c("fifo").as_ptr(), libc::S_IFIFO | 0o640, 0)),
        ));
        r.push((
            "suid",
            err(libc::mknod(c("suid").as_ptr(), libc::S_IFREG | 0o4755, 0)),
        ));
        r.push((
            "fifo2",
            err(libc::mknodat(
                dirfd,
                cstr("fifo2").as_ptr(),
                libc::S_IFIFO | 0o600,
                0,
            )),
        ));
        r.push((
            "null",
            err(libc::mknod(
                c("null").as_ptr(),
                libc::S_IFCHR | 0o666,
                libc::makedev(1, 3),
            )),
        ));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut low = LowMem::new(4096);
        let fifo32 = low.put(format!("{n}/fifo32").as_bytes());
        let reg32 = low.put(b"reg32");
        // SAFETY: i386 syscalls with pointers into our low mapping.
        unsafe {
            r.push((
                "fifo32",
                syscall32(14, [fifo32, libc::S_IFIFO | 0o644, 0, 0, 0]),
            ));
            r.push((
                "reg32",
                syscall32(297, [dirfd as u32, reg32, libc::S_IFREG | 0o2755, 0, 0]),
            ));
        }
    }
    let mut out = format!("n={n} uid={}", unsafe { libc::getuid() });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

fn truncate(dir: &str) -> String {
    let t = format!("{dir}/t");
    std::fs::create_dir_all(&t).expect("mkdir t");
    let log = format!("{t}/log");
    std::fs::write(&log, [b'x'; 100]).expect("write log");
    let fd = open_creat(libc::AT_FDCWD, &log);
    let mut r: Vec<(&str, i32)> = Vec::new();
    // SAFETY: plain syscalls with a valid NUL-terminated path and our own fd.
    unsafe {
        r.push(("wipe", err(libc::truncate(cstr(&log).as_ptr(), 0))));
        // Past 4 GiB: the length's high half matters (a sparse file).
        r.push(("grow", err(libc::ftruncate(fd, 5_000_000_000))));
        r.push((
            "shadow",
            err(libc::truncate(cstr("/etc/shadow").as_ptr(), 0)),
        ));
    }
    #[cfg(target_arch = "x86_64")]
    {
        let mut low = LowMem::new(4096);
        let log32 = low.put(log.as_bytes());
        // SAFETY: i386 syscalls with pointers into our low mapping and our own fd.
        unsafe {
            // truncate64(path, low, high)
            r.push(("t64", syscall32(193, [log32, 7, 1, 0, 0])));
            // truncate(path, -1): EINVAL, the length as passed
            r.push(("neg", syscall32(92, [log32, u32::MAX, 0, 0, 0])));
            // ftruncate(fd, 3): the actor's last call
            r.push(("f32", syscall32(93, [fd as u32, 3, 0, 0, 0])));
        }
    }
    close(fd);
    let mut out = format!("log={log} uid={}", unsafe { libc::getuid() });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

fn xattr(dir: &str) -> String {
    let x = format!("{dir}/x");
    std::fs::create_dir_all(&x).expect("mkdir x");
    let f = format!("{x}/f");
    std::fs::write(&f, b"data").expect("create f");
    std::os::unix::fs::symlink(&f, format!("{x}/sl")).expect("symlink sl");
    let fd = open_creat(libc::AT_FDCWD, &f);
    let c = |s: &str| cstr(s);
    // A v2 `vfs_cap_data`: magic | effective, then permitted/inheritable pairs;
    // permitted = CAP_SETUID (bit 7).
    let mut caps = [0u8; 20];
    caps[..4].copy_from_slice(&(0x0200_0000u32 | 1).to_le_bytes());
    caps[4..8].copy_from_slice(&(1u32 << 7).to_le_bytes());
    let set = |path: &str, name: &str, value: &[u8], flags: i32| {
        // SAFETY: valid NUL-terminated strings and a value buffer of `value.len()` bytes.
        err(unsafe {
            libc::setxattr(
                c(path).as_ptr(),
                c(name).as_ptr(),
                value.as_ptr().cast(),
                value.len(),
                flags,
            )
        })
    };
    let mut r: Vec<(&str, i32)> = Vec::new();
    r.push(("note", set(&f, "user.note", b"hello", libc::XATTR_CREATE)));
    // SAFETY (the blocks below): as for `set`, and our own descriptors.
    r.push((
        "link",
        err(unsafe {
            libc::lsetxattr(
                c(&format!("{x}/sl")).as_ptr(),
                c("user.l").as_ptr(),
                b"v".as_ptr().cast(),
                1,
                0,
            )
        }),
    ));
    r.push((
        "byfd",
        err(unsafe {
            libc::fsetxattr(
                fd,
                c("user.fd").as_ptr(),
                b"vv".as_ptr().cast(),
                2,
                libc::XATTR_REPLACE,
            )
        }),
    ));
    r.push(("caps", set(&f, "security.capability", &caps, 0)));
    std::env::set_current_dir(&x).expect("chdir x");
    r.push(("trusted", set("f", "trusted.t", b"t", 0)));
    let dirfd = open_dir(&x);
    // struct xattr_args { u64 value; u32 size; u32 flags; }
    let value = b"abc";
    let mut args = [0u64; 2];
    args[0] = value.as_ptr() as u64;
    args[1] = 3;
    r.push((
        "at",
        err(unsafe {
            libc::syscall(
                463,
                dirfd,
                c("f").as_ptr(),
                0,
                c("user.at").as_ptr(),
                args.as_ptr(),
                16usize,
            ) as i32
        }),
    ));
    // On the descriptor itself: an empty path with AT_EMPTY_PATH.
    r.push((
        "at_fd",
        err(unsafe {
            libc::syscall(
                463,
                fd,
                c("").as_ptr(),
                libc::AT_EMPTY_PATH,
                c("user.atfd").as_ptr(),
                args.as_ptr(),
                16usize,
            ) as i32
        }),
    ));
    close(dirfd);
    #[cfg(target_arch = "x86_64")]
    {
        let mut low = LowMem::new(4096);
        let f32 = low.put(f.as_bytes());
        let name32 = low.put(b"user.c32");
        let fdname32 = low.put(b"user.fd32");
        let v32 = low.put(b"abcd");
        // SAFETY: i386 syscalls with pointers into our low mapping and our own fd.
        unsafe {
            r.push(("c32", syscall32(226, [f32, name32, v32, 3, 0])));
            r.push((
                "fd32",
                syscall32(
                    228,
                    [fd as u32, fdname32, v32, 4, libc::XATTR_CREATE as u32],
                ),
            ));
        }
    }
    close(fd);
    let mut out = format!("x={x} uid={}", unsafe { libc::getuid() });
    for (name, ret) in r {
        out.push_str(&format!(" {name}={ret}"));
    }
    out
}

fn cwd_race(dir: &str, n: usize) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    let real = format!("{dir}/race/real");
    let decoy = format!("{dir}/race/decoy");
    std::fs::create_dir_all(&real).expect("mkdir real");
    std::fs::create_dir_all(&decoy).expect("mkdir decoy");
    for i in 0..n {
        close(open_creat(libc::AT_FDCWD, &format!("{real}/r{i}")));
    }
    let (real_fd, decoy_fd) = (open_dir(&real), open_dir(&decoy));
    // SAFETY: our own directory fd.
    assert_eq!(unsafe { libc::fchdir(real_fd) }, 0, "fchdir");
    let stop = AtomicBool::new(false);
    let mut counts = [0u32; 4];
    // Each thread on its own CPU where there are two: the flips then land inside the
    // calls even on a busy host, not only when the scheduler switches threads.
    let pin = |cpu: usize| {
        // SAFETY: a zeroed cpu_set_t, one bit set, for the calling thread.
        unsafe {
            let mut set: libc::cpu_set_t = std::mem::zeroed();
            libc::CPU_SET(cpu, &mut set);
            libc::sched_setaffinity(0, size_of::<libc::cpu_set_t>(), &set);
        }
    };
    let two_cpus = std::thread::available_parallelism().is_ok_and(|n| n.get() >= 2);
    if two_cpus {
        pin(0);
    }
    std::thread::scope(|s| {
        // Threads share the cwd (one fs_struct): the flips move the main thread's too.
        s.spawn(|| {
            if two_cpus {
                pin(1);
            }
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: our own directory fds.
                unsafe {
                    libc::fchdir(decoy_fd);
                    libc::fchdir(real_fd);
                }
            }
        });
        for i in 0..n {
            let name = cstr(&format!("r{i}"));
            // SAFETY: a valid NUL-terminated relative name.
            let (chmod, unlink) = unsafe {
                (
                    libc::chmod(name.as_ptr(), 0o4755),
                    libc::unlink(name.as_ptr()),
                )
            };
            counts[usize::from(chmod == 0)] += 1;
            counts[2 + usize::from(unlink == 0)] += 1;
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The last call, for the test to know it has everything.
    let end = cstr(&format!("{real}/end"));
    // SAFETY: a valid NUL-terminated path.
    unsafe { libc::unlink(end.as_ptr()) };
    format!(
        "real={real} decoy={decoy} chmod_ok={} unlink_ok={} uid={}",
        counts[1],
        counts[3],
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

fn fd_swap(dir: &str, n: usize) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    let swap = format!("{dir}/swap");
    std::fs::create_dir_all(&swap).expect("mkdir swap");
    let (secret, benign) = (format!("{swap}/secret"), format!("{swap}/benign"));
    std::fs::write(&secret, "s").expect("write secret");
    std::fs::write(&benign, "b").expect("write benign");
    let benign_c = cstr(&benign);
    // SAFETY: a valid NUL-terminated path; checked.
    let benign_fd = unsafe { libc::open(benign_c.as_ptr(), libc::O_RDONLY) };
    assert!(benign_fd >= 0, "open benign");
    // More descriptors of benign, each its own open file: the swaps rotate through
    // them, so a file put back in the slot is never the one just taken out (the one
    // interleaving the check cannot see, docs/kernel.md).
    let more: Vec<i32> = (0..63)
        .map(|_| {
            // SAFETY: as above.
            let fd = unsafe { libc::open(benign_c.as_ptr(), libc::O_RDONLY) };
            assert!(fd >= 0, "open benign");
            fd
        })
        .collect();
    let sources: Vec<i32> = std::iter::once(benign_fd).chain(more).collect();
    // The lowest free descriptor, which each open of secret gets.
    // SAFETY: dup of stdin, closed at once.
    let target = unsafe { libc::dup(0) };
    close(target);
    let stop = AtomicBool::new(false);
    let mut opened = 0usize;
    let secret_c = cstr(&secret);
    std::thread::scope(|s| {
        s.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::Relaxed) {
                // SAFETY: our own descriptors; the slot may hold the main thread's
                // newly opened secret, which dup2 closes (the attack's point).
                unsafe {
                    if libc::dup2(sources[k % sources.len()], target) == target {
                        libc::close(target);
                    }
                }
                k += 1;
            }
        });
        for _ in 0..n {
            // SAFETY: a valid NUL-terminated path; the fd (whatever file it holds by
            // now) is closed.
            let fd = unsafe { libc::open(secret_c.as_ptr(), libc::O_RDONLY) };
            if fd >= 0 {
                opened += 1;
                close(fd);
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The last call, for the test to know it has everything.
    close(open_creat(libc::AT_FDCWD, &format!("{swap}/end")));
    format!(
        "secret={secret} benign={benign} benign_fd={benign_fd} last_source_fd={} target_fd={target} opened={opened} uid={}",
        sources[sources.len() - 1],
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

fn fd_flip(dir: &str, n: usize) -> String {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    const FILES: usize = 256;
    let flip = format!("{dir}/flip");
    std::fs::create_dir_all(&flip).expect("mkdir flip");
    let paths: Vec<String> = (0..FILES).map(|k| format!("{flip}/f{k}")).collect();
    let fds: Vec<i32> = paths
        .iter()
        .map(|path| {
            let p = cstr(path);
            // SAFETY: a valid NUL-terminated path; checked.
            let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDWR | libc::O_CREAT, 0o644) };
            assert!(fd >= 0, "open {path}");
            fd
        })
        .collect();
    // The descriptor the calls name: f0's, until the thread moves it on.
    // SAFETY: our own descriptor.
    let target = unsafe { libc::dup(fds[0]) };
    assert!(target >= 0, "dup");
    // The index of the last file dup2'd onto `target` (the slot may already hold the
    // next one).
    let swapped = AtomicUsize::new(0);
    let stop = AtomicBool::new(false);
    let mut hits = Vec::with_capacity(n);
    let size = |k: usize| std::fs::metadata(&paths[k]).map(|m| m.len()).unwrap_or(0);
    std::thread::scope(|s| {
        s.spawn(|| {
            // Each file goes onto the descriptor once, never back: a call that saw
            // one file at entry and another at exit is told apart whatever happened in
            // between (a flip back, A -> B -> A, is not: see docs/kernel.md).
            for (k, &fd) in fds.iter().enumerate().skip(1) {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                // SAFETY: our own descriptors.
                unsafe { libc::dup2(fd, target) };
                swapped.store(k, Ordering::SeqCst);
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_micros(20) {
                    std::hint::spin_loop();
                }
            }
        });
        for i in 1..=n {
            let lo = swapped.load(Ordering::SeqCst);
            #[cfg(target_arch = "x86_64")]
            let r = if i.is_multiple_of(2) {
                // SAFETY: ftruncate(fd, length) through the 32-bit entry.
                unsafe { syscall32(93, [target as u32, i as u32, 0, 0, 0]) }
            } else {
                // SAFETY: our own descriptor.
                unsafe { libc::ftruncate(target, i as libc::off_t) }
            };
            #[cfg(not(target_arch = "x86_64"))]
            // SAFETY: our own descriptor.
            let r = unsafe { libc::ftruncate(target, i as libc::off_t) };
            assert_eq!(r, 0, "ftruncate {i}");
            let hi = swapped.load(Ordering::SeqCst);
            // Only this thread truncates: the one file now i bytes long took call i.
            let hit = (lo..=(hi + 1).min(FILES - 1)).find(|&k| size(k) == i as u64);
            hits.push(hit.map_or("?".to_owned(), |k| k.to_string()));
        }
        stop.store(true, Ordering::Relaxed);
    });
    // The last call, for the test to know it has everything.
    close(open_creat(libc::AT_FDCWD, &format!("{flip}/end")));
    format!(
        "dir={flip} hits={} uid={}",
        hits.join(","),
        // SAFETY: getuid cannot fail.
        unsafe { libc::getuid() }
    )
}

fn open_dir(path: &str) -> i32 {
    let p = cstr(path);
    // SAFETY: valid NUL-terminated path; checked.
    let fd = unsafe { libc::open(p.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
    assert!(fd >= 0, "open {path}: {}", std::io::Error::last_os_error());
    fd
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.get(2).map(String::as_str) == Some("nobody")
        || (matches!(
            args.first().map(String::as_str),
            Some("cwd-race" | "fd-swap" | "fd-flip")
        ) && args.get(3).map(String::as_str) == Some("nobody"))
    {
        drop_to_nobody();
    }
    let out = match args.first().map(String::as_str) {
        Some("paths") => paths(&args[1]),
        Some("fifo") => fifo(&args[1]),
        Some("dirs") => dirs(&args[1]),
        Some("links") => links(&args[1]),
        Some("tmpfile") => tmpfile(&args[1]),
        Some("byfd") => byfd(&args[1]),
        Some("mknod") => mknod(&args[1]),
        Some("truncate") => truncate(&args[1]),
        Some("chroot") => chroot(&args[1]),
        Some("chroot-exec") => chroot_exec(&args[1]),
        Some("xattr") => xattr(&args[1]),
        Some("userns") => userns(),
        Some("cwd-race") => cwd_race(&args[1], args[2].parse().expect("N")),
        Some("fd-swap") => fd_swap(&args[1], args[2].parse().expect("N")),
        Some("fd-flip") => fd_flip(&args[1], args[2].parse().expect("N")),
        #[cfg(target_arch = "x86_64")]
        Some("int80") => int80(&args[1]),
        #[cfg(target_arch = "x86_64")]
        Some("int80-more") => int80_more(&args[1]),
        #[cfg(target_arch = "x86_64")]
        Some("int80-opens") => {
            let out = int80_opens(&args[1], args[2].parse().expect("N"));
            println!("{out}");
            return;
        }
        _ => {
            eprintln!("usage: kfile-actor paths DIR [nobody]");
            std::process::exit(2);
        }
    };
    println!("pid={} {out}", std::process::id());
}
