//! Network activity for the kernel network tests, beyond what `collector-test-actor`
//! does: raw socket calls (non-blocking and refused connects, UDP sends, unix sockets,
//! dual-stack accepts, the 32-bit `int $0x80` entry). Prints `key=value` pairs.
//!
//! ```text
//! collector-net-actor refused                 connect to a closed loopback port
//! collector-net-actor nonblock                non-blocking connect (EINPROGRESS), accept, close
//! collector-net-actor udp                     sendto three destinations, then the first again
//! collector-net-actor udp-mmsg                one sendmmsg: destinations 1, 2, 1, 3
//! collector-net-actor unix DIR                connect to a unix socket at DIR/sock and to an abstract name
//! collector-net-actor dualstack               accept a 127.0.0.1 connection on a [::] listener
//! collector-net-actor int80                   as nobody: connect through int $0x80 (socketcall and direct)
//! collector-net-actor dup2-race              dup2 another socket onto the fd of a blocking connect
//! collector-net-actor accept-swap N           as nobody: a forked child connects N times to a
//!                                             listener while the parent accepts them and a thread
//!                                             dup2s decoy sockets (connected to another port) onto
//!                                             the descriptor each accept returns, then closes it
//! collector-net-actor uring                   connect and accept through io_uring (IORING_OP_CONNECT/ACCEPT)
//! collector-net-actor raw                     (root) sendto on raw sockets (ICMP to 127.0.0.1, GRE to
//!                                             127.0.0.2, ICMPv6 to ::1) and on an ICMP ping socket
//!                                             (to 127.0.0.3; `ping_group_range` opened for its creation)
//! ```
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, TcpListener};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("refused") => refused(),
        Some("nonblock") => nonblock(),
        Some("udp") => udp(),
        Some("raw") => raw(),
        Some("udp-mmsg") => udp_mmsg(),
        Some("unix") => unix(&args[1]),
        Some("dualstack") => dualstack(),
        Some("int80") => int80_connects(),
        Some("uring") => uring(),
        Some("dup2-race") => dup2_race(),
        Some("accept-swap") => accept_swap(args[1].parse().expect("N")),
        _ => {
            eprintln!("usage: collector-net-actor refused|nonblock|udp|unix DIR|dualstack|int80");
            std::process::exit(2);
        }
    };
    println!("pid={} {out}", std::process::id());
}

fn check(rc: i32, what: &str) -> i32 {
    if rc < 0 {
        panic!("{what}: {}", std::io::Error::last_os_error());
    }
    rc
}

fn sockaddr_in(port: u16) -> libc::sockaddr_in {
    // SAFETY: all-zero is a valid sockaddr_in.
    let mut sa: libc::sockaddr_in = unsafe { zeroed() };
    sa.sin_family = libc::AF_INET as u16;
    sa.sin_port = port.to_be();
    sa.sin_addr.s_addr = u32::from(Ipv4Addr::LOCALHOST).to_be();
    sa
}

fn connect_in(fd: i32, sa: &libc::sockaddr_in) -> (i32, i32) {
    // SAFETY: valid fd and sockaddr of the given size.
    let rc = unsafe {
        libc::connect(
            fd,
            (sa as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    let errno = if rc < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    };
    (rc, errno)
}

fn local_port(fd: i32) -> u16 {
    // SAFETY: getsockname into a sockaddr_in6-sized buffer.
    let mut sa: libc::sockaddr_in6 = unsafe { zeroed() };
    let mut len = size_of::<libc::sockaddr_in6>() as u32;
    check(
        unsafe { libc::getsockname(fd, (&mut sa as *mut libc::sockaddr_in6).cast(), &mut len) },
        "getsockname",
    );
    u16::from_be(sa.sin6_port)
}

/// A loopback port with nothing listening: bound then closed.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

fn tcp_socket(flags: i32) -> i32 {
    // SAFETY: plain syscall.
    check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | flags, 0) },
        "socket",
    )
}

fn refused() -> String {
    let port = free_port();
    let fd = tcp_socket(0);
    let (rc, errno) = connect_in(fd, &sockaddr_in(port));
    assert!(rc < 0, "connect to a closed port succeeded");
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    format!("port={port} errno={errno}")
}

fn nonblock() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = tcp_socket(libc::SOCK_NONBLOCK);
    let (rc, errno) = connect_in(fd, &sockaddr_in(port));
    assert!(
        rc < 0 && errno == libc::EINPROGRESS,
        "expected EINPROGRESS, got {rc}/{errno}"
    );
    let client_port = local_port(fd);
    let (accepted, _) = listener.accept().unwrap();
    // Let the connect complete before closing.
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLOUT,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut pfd, 1, 5000) };
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    drop(accepted);
    format!("port={port} client_port={client_port} errno={errno}")
}

fn udp() -> String {
    // SAFETY: plain syscalls with valid buffers.
    let fd = check(
        unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0) },
        "socket",
    );
    let ports = [free_port(), free_port(), free_port()];
    let msg = b"x";
    for port in ports.iter().chain(std::iter::once(&ports[0])) {
        let sa = sockaddr_in(*port);
        // SAFETY: valid buffers.
        let rc = unsafe {
            libc::sendto(
                fd,
                msg.as_ptr().cast(),
                msg.len(),
                0,
                (&sa as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as u32,
            )
        };
        check(rc as i32, "sendto");
    }
    let local = local_port(fd);
    // SAFETY: our fd.
    unsafe { libc::close(fd) };
    format!(
        "local_port={local} p1={} p2={} p3={}",
        ports[0], ports[1], ports[2]
    )
}

/// One datagram of `msg` to `to` (a `sockaddr_in` or `sockaddr_in6`) on a new socket of
/// `(family, kind, protocol)`; the bytes sent.
fn send_one<T>(family: i32, kind: i32, protocol: i32, msg: &[u8], to: &T) -> isize {
    // SAFETY: plain syscalls with valid buffers; checked.
    unsafe {
        let fd = check(libc::socket(family, kind, protocol), "socket");
        let sent = libc::sendto(
            fd,
            msg.as_ptr().cast(),
            msg.len(),
            0,
            (to as *const T).cast(),
            size_of::<T>() as u32,
        );
        check(sent as i32, "sendto");
        libc::close(fd);
        sent
    }
}

fn raw() -> String {
    let v4 = |last: u8| {
        // SAFETY: all-zero is a valid sockaddr_in.
        let mut sa: libc::sockaddr_in = unsafe { zeroed() };
        sa.sin_family = libc::AF_INET as u16;
        sa.sin_addr.s_addr = u32::from(Ipv4Addr::new(127, 0, 0, last)).to_be();
        sa
    };
    // ICMP echo request, identifier and sequence 1 (checksum precomputed).
    let echo: [u8; 8] = [8, 0, 0xf7, 0xfd, 0, 1, 0, 1];
    let icmp = send_one(
        libc::AF_INET,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMP,
        &echo,
        &v4(1),
    );
    let gre = send_one(libc::AF_INET, libc::SOCK_RAW, 47, &[0u8; 4], &v4(2));
    // SAFETY: all-zero is a valid sockaddr_in6.
    let mut sa6: libc::sockaddr_in6 = unsafe { zeroed() };
    sa6.sin6_family = libc::AF_INET6 as u16;
    sa6.sin6_addr.s6_addr[15] = 1;
    // ICMPv6 echo request: the kernel fills the checksum of a raw ICMPv6 socket.
    let icmp6 = send_one(
        libc::AF_INET6,
        libc::SOCK_RAW,
        libc::IPPROTO_ICMPV6,
        &[128, 0, 0, 0, 0, 1, 0, 1],
        &sa6,
    );
    // A ping socket needs the caller's group in `ping_group_range`, checked when the
    // socket is made: opened for that moment only.
    let range = "/proc/sys/net/ipv4/ping_group_range";
    let was = std::fs::read_to_string(range).expect("ping_group_range");
    std::fs::write(range, "0 0").expect("open ping_group_range");
    // SAFETY: a plain syscall; checked.
    let ping = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP) };
    std::fs::write(range, was.trim()).expect("restore ping_group_range");
    let ping = check(ping, "ping socket");
    let to = v4(3);
    // SAFETY: valid buffers; checked.
    let sent = unsafe {
        libc::sendto(
            ping,
            echo.as_ptr().cast(),
            echo.len(),
            0,
            (&to as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as u32,
        )
    };
    check(sent as i32, "ping sendto");
    let ident = local_port(ping);
    // SAFETY: our fd.
    unsafe { libc::close(ping) };
    format!("icmp={icmp} gre={gre} icmp6={icmp6} ping={sent} ping_ident={ident}")
}

fn sockaddr_un(path: &[u8]) -> (libc::sockaddr_un, u32) {
    // SAFETY: all-zero is a valid sockaddr_un.
    let mut sa: libc::sockaddr_un = unsafe { zeroed() };
    sa.sun_family = libc::AF_UNIX as u16;
    for (d, s) in sa.sun_path.iter_mut().zip(path) {
        *d = *s as libc::c_char;
    }
    (sa, (2 + path.len()) as u32)
}

fn unix_connect(listen_path: &[u8], connect_with_nul: bool) {
    // SAFETY: plain syscalls with valid buffers.
    unsafe {
        let l = check(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), "socket");
        let (sa, len) = sockaddr_un(listen_path);
        check(
            libc::bind(l, (&sa as *const libc::sockaddr_un).cast(), len),
            "bind",
        );
        check(libc::listen(l, 1), "listen");
        let c = check(libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), "socket");
        let len = if connect_with_nul { len + 1 } else { len };
        check(
            libc::connect(c, (&sa as *const libc::sockaddr_un).cast(), len),
            "connect",
        );
        libc::close(c);
        libc::close(l);
    }
}

fn unix(dir: &str) -> String {
    let path = format!("{dir}/sock");
    unix_connect(path.as_bytes(), true);
    let abs = format!("collector-test-{}", std::process::id());
    let mut name = vec![0u8];
    name.extend_from_slice(abs.as_bytes());
    unix_connect(&name, false);
    format!("path={path} abstract=@{abs}")
}

fn dualstack() -> String {
    // SAFETY: plain syscalls with valid buffers.
    unsafe {
        let l = check(libc::socket(libc::AF_INET6, libc::SOCK_STREAM, 0), "socket");
        let off: i32 = 0;
        check(
            libc::setsockopt(
                l,
                libc::IPPROTO_IPV6,
                libc::IPV6_V6ONLY,
                (&off as *const i32).cast(),
                4,
            ),
            "IPV6_V6ONLY",
        );
        let mut sa: libc::sockaddr_in6 = zeroed();
        sa.sin6_family = libc::AF_INET6 as u16;
        check(
            libc::bind(
                l,
                (&sa as *const libc::sockaddr_in6).cast(),
                size_of::<libc::sockaddr_in6>() as u32,
            ),
            "bind",
        );
        check(libc::listen(l, 4), "listen");
        let port = local_port(l);
        let c = tcp_socket(0);
        let (rc, errno) = connect_in(c, &sockaddr_in(port));
        assert_eq!(rc, 0, "connect: errno {errno}");
        let client_port = local_port(c);
        let a = check(
            libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()),
            "accept",
        );
        libc::close(a);
        libc::close(c);
        libc::close(l);
        format!("port={port} client_port={client_port}")
    }
}

#[cfg(target_arch = "x86_64")]
use collector_tests::syscall32;

#[cfg(target_arch = "x86_64")]
fn int80_connects() -> String {
    // Listeners first (as root is fine), then drop to nobody for the 32-bit calls.
    let l1 = TcpListener::bind("127.0.0.1:0").unwrap();
    let l2 = TcpListener::bind("127.0.0.1:0").unwrap();
    let (p1, p2) = (
        l1.local_addr().unwrap().port(),
        l2.local_addr().unwrap().port(),
    );
    // SAFETY: plain syscalls; the mapping is ours.
    unsafe {
        check(libc::setresgid(65534, 65534, 65534), "setresgid");
        check(libc::setresuid(65534, 65534, 65534), "setresuid");
        // Memory below 4 GiB for the 32-bit pointers.
        let mem = libc::mmap(
            std::ptr::null_mut(),
            4096,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_32BIT,
            -1,
            0,
        );
        assert_ne!(mem, libc::MAP_FAILED, "mmap MAP_32BIT");
        let base = mem as usize;
        assert!(base < u32::MAX as usize);
        let sa1 = base as *mut libc::sockaddr_in;
        let sa2 = (base + 64) as *mut libc::sockaddr_in;
        let args = (base + 128) as *mut u32;
        *sa1 = sockaddr_in(p1);
        *sa2 = sockaddr_in(p2);
        // socketcall(SYS_CONNECT, [fd, sa1, 16])
        let fd1 = tcp_socket(0);
        *args = fd1 as u32;
        *args.add(1) = sa1 as u32;
        *args.add(2) = 16;
        let rc1 = syscall32(102, [3, args as u32, 0, 0, 0]);
        // connect(fd, sa2, 16), i386 nr 362
        let fd2 = tcp_socket(0);
        let rc2 = syscall32(362, [fd2 as u32, sa2 as u32, 16, 0, 0]);
        let (c1, c2) = (local_port(fd1), local_port(fd2));
        libc::close(fd1);
        libc::close(fd2);
        drop((l1, l2));

        // bind, listen and accept through socketcall, sendto through i386 sendto (369).
        let sa3 = (base + 192) as *mut libc::sockaddr_in;
        *sa3 = sockaddr_in(0);
        let l = tcp_socket(0);
        *args = l as u32;
        *args.add(1) = sa3 as u32;
        *args.add(2) = 16;
        let rc_bind = syscall32(102, [2, args as u32, 0, 0, 0]);
        *args.add(1) = 8;
        let rc_listen = syscall32(102, [4, args as u32, 0, 0, 0]);
        let p3 = local_port(l);
        *sa3 = sockaddr_in(p3);
        let c = tcp_socket(0);
        let (rc, errno) = connect_in(c, &*sa3);
        assert_eq!(rc, 0, "connect: {errno}");
        let c3 = local_port(c);
        *args = l as u32;
        *args.add(1) = 0;
        *args.add(2) = 0;
        let afd = syscall32(102, [5, args as u32, 0, 0, 0]);
        let u = check(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0), "socket");
        let p4 = free_port();
        *sa3 = sockaddr_in(p4);
        let msg = (base + 256) as *mut u8;
        *msg = b'x';
        // sendto(fd, buf, len, flags, addr, addrlen): six arguments, the last in ebp.
        let rc_sendto = syscall32_6(369, [u as u32, msg as u32, 1, 0, sa3 as u32, 16]);
        let u_port = local_port(u);
        libc::close(u);
        libc::close(afd);
        libc::close(c);
        libc::close(l);
        format!(
            "p1={p1} p2={p2} rc1={rc1} rc2={rc2} c1={c1} c2={c2} uid={} \
             rc_bind={rc_bind} rc_listen={rc_listen} p3={p3} c3={c3} afd={afd} \
             p4={p4} rc_sendto={rc_sendto} u_port={u_port}",
            libc::getuid()
        )
    }
}

/// A 32-bit syscall with six arguments (the sixth in ebp, saved around the call).
#[cfg(target_arch = "x86_64")]
unsafe fn syscall32_6(nr: u32, a: [u32; 6]) -> i32 {
    let ret: u32;
    // SAFETY: the caller passes a valid i386 syscall; rbx and rbp are restored.
    unsafe {
        std::arch::asm!(
            "push rbp",
            "push rbx",
            "mov ebx, dword ptr [{a}]",
            "mov ecx, dword ptr [{a} + 4]",
            "mov edx, dword ptr [{a} + 8]",
            "mov esi, dword ptr [{a} + 12]",
            "mov edi, dword ptr [{a} + 16]",
            "mov ebp, dword ptr [{a} + 20]",
            "int 0x80",
            "pop rbx",
            "pop rbp",
            a = in(reg) a.as_ptr(),
            inlateout("eax") nr => ret,
            out("ecx") _, out("edx") _, out("esi") _, out("edi") _,
            lateout("r8") _, lateout("r9") _, lateout("r10") _, lateout("r11") _,
        );
    }
    ret as i32
}

#[cfg(not(target_arch = "x86_64"))]
fn int80_connects() -> String {
    "skipped=not-x86_64".into()
}

fn uring() -> String {
    use io_uring::{opcode, types, IoUring};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let lfd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    let mut ring = IoUring::new(8).expect("io_uring_setup");
    let fd = tcp_socket(0);
    let sa = sockaddr_in(port);
    let connect = opcode::Connect::new(
        types::Fd(fd),
        (&sa as *const libc::sockaddr_in).cast(),
        size_of::<libc::sockaddr_in>() as u32,
    )
    .build()
    .user_data(1);
    // SAFETY: `sa` outlives the wait below.
    unsafe { ring.submission().push(&connect).expect("queue connect") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let cqe = ring.completion().next().expect("connect completion");
    assert_eq!(cqe.result(), 0, "io_uring connect");
    let accept = opcode::Accept::new(types::Fd(lfd), std::ptr::null_mut(), std::ptr::null_mut())
        .build()
        .user_data(2);
    // SAFETY: no buffers.
    unsafe { ring.submission().push(&accept).expect("queue accept") };
    ring.submit_and_wait(1).expect("io_uring_enter");
    let cqe = ring.completion().next().expect("accept completion");
    let afd = cqe.result();
    assert!(afd >= 0, "io_uring accept: {afd}");
    let client_port = local_port(fd);
    // SAFETY: our fds.
    unsafe {
        libc::close(afd);
        libc::close(fd);
    }
    format!("port={port} client_port={client_port}")
}

/// A blocking connect whose fd another thread replaces (`dup2`) while it blocks. The
/// listener's accept queue is full, so the first SYN is dropped and the connect waits
/// for the retransmission (1 s); meanwhile the fd is pointed at a different, bound
/// socket and the queue is drained.
fn dup2_race() -> String {
    // SAFETY: plain syscalls on our own fds.
    unsafe {
        let l = tcp_socket(0);
        let sa = sockaddr_in(0);
        check(
            libc::bind(l, (&sa as *const libc::sockaddr_in).cast(), 16),
            "bind",
        );
        check(libc::listen(l, 0), "listen");
        let port = local_port(l);
        // Fill the accept queue (backlog 0 holds one).
        let filler = tcp_socket(0);
        assert_eq!(connect_in(filler, &sockaddr_in(port)).0, 0);
        let fd = tcp_socket(0);
        let connector = std::thread::spawn(move || connect_in(fd, &sockaddr_in(port)));
        std::thread::sleep(std::time::Duration::from_millis(300));
        let other = tcp_socket(0);
        check(
            libc::bind(other, (&sa as *const libc::sockaddr_in).cast(), 16),
            "bind",
        );
        let other_port = local_port(other);
        check(libc::dup2(other, fd), "dup2");
        let a1 = check(
            libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut()),
            "accept",
        );
        let (rc, errno) = connector.join().unwrap();
        assert_eq!(rc, 0, "the raced connect: errno {errno}");
        // The connected socket's port, as its peer sees it.
        let mut peer: libc::sockaddr_in = zeroed();
        let mut len = size_of::<libc::sockaddr_in>() as u32;
        let a2 = check(
            libc::accept(l, (&mut peer as *mut libc::sockaddr_in).cast(), &mut len),
            "accept",
        );
        let connected_port = u16::from_be(peer.sin_port);
        for f in [a1, a2, fd, other, filler, l] {
            libc::close(f);
        }
        format!("port={port} connected_port={connected_port} other_port={other_port}")
    }
}

fn accept_swap(n: usize) -> String {
    use std::sync::atomic::{AtomicBool, Ordering};
    const DECOYS: usize = 64;
    // SAFETY: plain syscalls on our own fds; the child only connects and exits.
    unsafe {
        assert_eq!(libc::setgroups(0, std::ptr::null()), 0, "setgroups");
        assert_eq!(libc::setresgid(65534, 65534, 65534), 0, "setresgid");
        assert_eq!(libc::setresuid(65534, 65534, 65534), 0, "setresuid");
        let listen_on = |backlog: i32| {
            let l = tcp_socket(0);
            let sa = sockaddr_in(0);
            check(
                libc::bind(l, (&sa as *const libc::sockaddr_in).cast(), 16),
                "bind",
            );
            check(libc::listen(l, backlog), "listen");
            l
        };
        let (l, decoy_l) = (listen_on(128), listen_on(DECOYS as i32));
        let (port, decoy_port) = (local_port(l), local_port(decoy_l));
        // Decoys: connected sockets to the other listener, each a different file.
        let decoys: Vec<i32> = (0..DECOYS)
            .map(|_| {
                let d = tcp_socket(0);
                assert_eq!(
                    connect_in(d, &sockaddr_in(decoy_port)).0,
                    0,
                    "decoy connect"
                );
                d
            })
            .collect();
        // The connector, in its own process: its sockets take no descriptor here.
        let child = libc::fork();
        if child == 0 {
            for _ in 0..n {
                let c = tcp_socket(0);
                connect_in(c, &sockaddr_in(port));
                libc::close(c);
            }
            libc::_exit(0);
        }
        // The lowest free descriptor, which each accept returns.
        let target = check(libc::dup(0), "dup");
        libc::close(target);
        let stop = AtomicBool::new(false);
        let mut accepted = 0;
        std::thread::scope(|s| {
            s.spawn(|| {
                let mut k = 0;
                while !stop.load(Ordering::Relaxed) {
                    if libc::dup2(decoys[k % DECOYS], target) == target {
                        libc::close(target);
                    }
                    k += 1;
                }
            });
            for _ in 0..n {
                let a = libc::accept(l, std::ptr::null_mut(), std::ptr::null_mut());
                if a >= 0 {
                    accepted += 1;
                    libc::close(a);
                }
            }
            stop.store(true, Ordering::Relaxed);
        });
        let mut status = 0;
        libc::waitpid(child, &mut status, 0);
        format!(
            "port={port} decoy_port={decoy_port} target={target} accepted={accepted} uid={}",
            libc::getuid()
        )
    }
}

fn udp_mmsg() -> String {
    // SAFETY: plain syscalls with buffers that outlive them.
    unsafe {
        let fd = check(libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0), "socket");
        let ports = [free_port(), free_port(), free_port()];
        let dests = [
            sockaddr_in(ports[0]),
            sockaddr_in(ports[1]),
            sockaddr_in(ports[0]),
            sockaddr_in(ports[2]),
        ];
        let mut byte = *b"x";
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut msgs: Vec<libc::mmsghdr> = dests
            .iter()
            .map(|d| {
                let mut m: libc::mmsghdr = zeroed();
                m.msg_hdr.msg_name = (d as *const libc::sockaddr_in).cast_mut().cast();
                m.msg_hdr.msg_namelen = size_of::<libc::sockaddr_in>() as u32;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
                m
            })
            .collect();
        let sent = libc::sendmmsg(fd, msgs.as_mut_ptr(), msgs.len() as u32, 0);
        assert_eq!(sent, 4, "sendmmsg: {}", std::io::Error::last_os_error());
        let local = local_port(fd);
        libc::close(fd);
        format!(
            "local_port={local} p1={} p2={} p3={}",
            ports[0], ports[1], ports[2]
        )
    }
}
