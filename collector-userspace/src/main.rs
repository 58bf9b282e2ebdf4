//! `collector`: the kernel-level security event collector.
//!
//! `collector run` collects (as root); `collector events|status|processes` talk to a
//! running collector over its IPC socket. This file only wires the commands together.

use clap::{Parser, Subcommand};
use collector_userspace::{daemon, export, ipc_cli};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "collector",
    version,
    about = "Kernel-level security event collector (eBPF)"
)]
struct Cli {
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
    let default_level = if debug { "debug" } else { "info" };
    // Logs go to stderr; stdout carries events and command output only.
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_env("COLLECTOR_LOG")
                .unwrap_or_else(|_| EnvFilter::new(default_level)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        match cli.command {
            Command::Run(args) => daemon::run(args).await,
            Command::Events(args) => ipc_cli::run_events(&args).await,
            Command::Status(args) => ipc_cli::run_status(&args).await,
            Command::Processes(args) => ipc_cli::run_processes(&args).await,
            Command::Consume(args) => export::run_consume(&args).await,
        }
    })
}
