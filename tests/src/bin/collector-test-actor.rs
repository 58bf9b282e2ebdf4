//! A separate process that performs the activity kernel tests observe: the collector
//! (and so each test process) excludes its own events in the kernel, so tests ask
//! this actor to act for them. Prints what it did as one line of `key=value` pairs,
//! ending with `sys=S`: the system CPU seconds it and its waited-for children spent
//! (the kernel's side of a storm).
//!
//! ```text
//! collector-test-actor tcp 127.0.0.1|::1   listen, connect, accept, close
//! collector-test-actor files DIR           create DIR/a, rename to DIR/b, unlink DIR/b
//! collector-test-actor opens PATH N        open+close PATH N times
//! collector-test-actor exec-storm N ARG...  run `/bin/true ARG...` N times, one after another
//! collector-test-actor exec-paced N MS      run `/bin/true` N times, MS ms apart (a quiet host)
//! collector-test-actor connect-storm N      N loopback TCP connections (connect, accept, close)
//! collector-test-actor fileops-storm DIR N  N x (create, rename, unlink) in DIR
//! collector-test-actor syscalls N           N x getppid(2) (the raw syscall): what every
//!                                           syscall on the host pays for the collector
//! collector-test-actor opens-after-go PATH N   print pid, wait for a stdin line, then open N times
//! collector-test-actor opens-per-line PATH...   print pid, then per stdin line open each PATH once
//!                                               and print `done` (until stdin closes)
//! ```
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

/// System CPU seconds of this process and of its children that were waited for.
fn sys_seconds() -> f64 {
    let of = |who| {
        // SAFETY: getrusage fills the struct we pass.
        let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: as above.
        unsafe { libc::getrusage(who, &mut ru) };
        ru.ru_stime.tv_sec as f64 + ru.ru_stime.tv_usec as f64 / 1e6
    };
    of(libc::RUSAGE_SELF) + of(libc::RUSAGE_CHILDREN)
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let sys0 = sys_seconds();
    let out = match args.first().map(String::as_str) {
        Some("tcp") => tcp(args[1].parse().expect("IP address")),
        Some("files") => files(&args[1]),
        Some("opens") => opens(&args[1], args[2].parse().expect("count")),
        Some("exec-storm") => exec_storm(args[1].parse().expect("count"), &args[2..]),
        Some("exec-paced") => exec_paced(
            args[1].parse().expect("count"),
            args[2].parse().expect("milliseconds"),
        ),
        Some("connect-storm") => connect_storm(args[1].parse().expect("count")),
        Some("fileops-storm") => fileops_storm(&args[1], args[2].parse().expect("count")),
        Some("syscalls") => syscalls(args[1].parse().expect("count")),
        Some("opens-after-go") => {
            // Announce our pid, wait for "go" on stdin, then act: lets a test register
            // this process in the kernel filters first.
            println!("pid={}", std::process::id());
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            opens(&args[1], args[2].parse().expect("count"))
        }
        Some("opens-per-line") => {
            // Rounds on demand: a test changes something in the collector between two
            // rounds and looks at each round's events.
            println!("pid={}", std::process::id());
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            let mut rounds = 0;
            while std::io::stdin().read_line(&mut line).unwrap() > 0 {
                line.clear();
                for path in &args[1..] {
                    drop(std::fs::File::open(path).expect("open"));
                }
                rounds += 1;
                println!("done");
                std::io::stdout().flush().unwrap();
            }
            format!("rounds={rounds}")
        }
        _ => {
            eprintln!("usage: collector-test-actor tcp IP | files DIR | opens PATH N");
            std::process::exit(2);
        }
    };
    let mut stdout = std::io::stdout();
    writeln!(
        stdout,
        "pid={} {out} sys={}",
        std::process::id(),
        sys_seconds() - sys0
    )
    .unwrap();
}

fn tcp(ip: IpAddr) -> String {
    let listener = TcpListener::bind(SocketAddr::new(ip, 0)).expect("bind");
    let server = listener.local_addr().unwrap();
    let client = TcpStream::connect(server).expect("connect");
    let (accepted, peer) = listener.accept().expect("accept");
    let client_addr = client.local_addr().unwrap();
    assert_eq!(peer, client_addr);
    drop(client);
    drop(accepted);
    format!("server={server} client={client_addr}")
}

fn files(dir: &str) -> String {
    let a = format!("{dir}/a");
    let b = format!("{dir}/b");
    std::fs::File::create(&a).expect("create");
    std::fs::rename(&a, &b).expect("rename");
    std::fs::remove_file(&b).expect("unlink");
    // A relative open, resolved against the cwd.
    std::env::set_current_dir(dir).unwrap();
    std::fs::File::create("rel").expect("create relative");
    std::fs::remove_file("rel").unwrap();
    format!("a={a} b={b}")
}

fn opens(path: &str, n: u64) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        drop(std::fs::File::open(path).expect("open"));
    }
    format!("opens={n} seconds={}", start.elapsed().as_secs_f64())
}

fn syscalls(n: u64) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        // SAFETY: getppid takes no argument and cannot fail.
        std::hint::black_box(unsafe { libc::syscall(libc::SYS_getppid) });
    }
    format!("syscalls={n} seconds={}", start.elapsed().as_secs_f64())
}

fn exec_storm(n: u64, args: &[String]) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new("/bin/true")
            .args(args)
            .status()
            .expect("spawn /bin/true");
        assert!(status.success());
    }
    format!("execs={n} seconds={}", start.elapsed().as_secs_f64())
}

fn exec_paced(n: u64, ms: u64) -> String {
    let start = std::time::Instant::now();
    for _ in 0..n {
        let status = std::process::Command::new("/bin/true")
            .status()
            .expect("spawn /bin/true");
        assert!(status.success());
        std::thread::sleep(std::time::Duration::from_millis(ms));
    }
    format!("execs={n} seconds={}", start.elapsed().as_secs_f64())
}

fn connect_storm(n: u64) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let server = listener.local_addr().unwrap();
    let start = std::time::Instant::now();
    for _ in 0..n {
        let client = TcpStream::connect(server).expect("connect");
        let (accepted, _) = listener.accept().expect("accept");
        drop(client);
        drop(accepted);
    }
    format!("connections={n} seconds={}", start.elapsed().as_secs_f64())
}

fn fileops_storm(dir: &str, n: u64) -> String {
    let a = format!("{dir}/storm-a");
    let b = format!("{dir}/storm-b");
    let start = std::time::Instant::now();
    for _ in 0..n {
        std::fs::File::create(&a).expect("create");
        std::fs::rename(&a, &b).expect("rename");
        std::fs::remove_file(&b).expect("unlink");
    }
    format!("fileops={n} seconds={}", start.elapsed().as_secs_f64())
}
