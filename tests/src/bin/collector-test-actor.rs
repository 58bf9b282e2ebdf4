//! A separate process that performs the activity kernel tests observe: the collector
//! (and so each test process) excludes its own events in the kernel, so tests ask
//! this actor to act for them. Prints what it did as one line of `key=value` pairs.
//!
//! ```text
//! collector-test-actor tcp 127.0.0.1|::1   listen, connect, accept, close
//! collector-test-actor files DIR           create DIR/a, rename to DIR/b, unlink DIR/b
//! collector-test-actor opens PATH N        open+close PATH N times
//! collector-test-actor opens-after-go PATH N   print pid, wait for a stdin line, then open N times
//! ```
use std::io::Write;
use std::net::{IpAddr, SocketAddr, TcpListener, TcpStream};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let out = match args.first().map(String::as_str) {
        Some("tcp") => tcp(args[1].parse().expect("IP address")),
        Some("files") => files(&args[1]),
        Some("opens") => opens(&args[1], args[2].parse().expect("count")),
        Some("opens-after-go") => {
            // Announce our pid, wait for "go" on stdin, then act: lets a test register
            // this process in the kernel filters first.
            println!("pid={}", std::process::id());
            std::io::stdout().flush().unwrap();
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).unwrap();
            opens(&args[1], args[2].parse().expect("count"))
        }
        _ => {
            eprintln!("usage: collector-test-actor tcp IP | files DIR | opens PATH N");
            std::process::exit(2);
        }
    };
    let mut stdout = std::io::stdout();
    writeln!(stdout, "pid={} {out}", std::process::id()).unwrap();
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
    for _ in 0..n {
        drop(std::fs::File::open(path).expect("open"));
    }
    format!("opens={n}")
}
