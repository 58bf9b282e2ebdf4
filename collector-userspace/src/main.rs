//! `collector`: the kernel-level security event collector.
//!
//! `collector run` collects (as root); `collector events|status|processes` talk to a
//! running collector over its IPC socket. This file only wires the commands together.

use clap::{Parser, Subcommand};
use collector_userspace::{config_cli, daemon, export, ipc_cli, logging};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "collector",
    version,
    about = "Kernel-level security event collector (eBPF)"
)]
struct Cli {
    /// Log format on stderr: `text` for people, `json` (one object per line) for the
    /// journal and log shippers.
    #[arg(long, global = true, value_enum, default_value_t = logging::LogFormat::Text)]
    log_format: logging::LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Collect process, network and file events from the kernel and serve them over IPC.
    Run(daemon::RunArgs),
    /// Stream events from a running collector as JSON lines.
    Events(ipc_cli::EventsArgs),
    /// Print a running collector's status as one JSON object.
    Status(ipc_cli::StatusArgs),
    /// Print the process table as JSON lines.
    Processes(ipc_cli::ProcessesArgs),
    /// Print the effective configuration and where each value came from.
    Config(config_cli::ConfigArgs),
    /// Print events from a NATS JetStream stream (fleet export) as JSON lines.
    Consume(export::ConsumeArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // `enable_debug_logging` in the configuration raises the default level of `run`;
    // COLLECTOR_LOG (an EnvFilter) always wins.
    let debug = match &cli.command {
        Command::Run(args) => collector_core::CollectorConfig::load(args.config.as_deref())
            .map(|c| c.enable_debug_logging)
            .unwrap_or(false),
        _ => false,
    };
    logging::init(cli.log_format, debug);
    // The daemon runs many tasks at once; an IPC client command is one connection and one
    // loop, so it drives its own socket on one thread: on a multi-thread runtime a worker
    // would wait in epoll and wake the main thread for every read (two context switches
    // per wakeup, most of a subscriber's time in the kernel under a storm). `consume`
    // keeps workers: its NATS client answers pings from a task of its own while the main
    // loop may be blocked writing to a slow stdout.
    let runtime = match &cli.command {
        Command::Run(_) | Command::Consume(_) => tokio::runtime::Builder::new_multi_thread(),
        _ => tokio::runtime::Builder::new_current_thread(),
    }
    .enable_all()
    .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => daemon::run(args).await,
            Command::Events(args) => ipc_cli::run_events(&args).await,
            Command::Status(args) => ipc_cli::run_status(&args).await,
            Command::Processes(args) => ipc_cli::run_processes(&args).await,
            Command::Config(args) => config_cli::run_config(&args),
            Command::Consume(args) => export::run_consume(&args).await,
        }
    })
}
