//! `pushgate-loadtest`: `hold` opens and holds many sessions over worker processes and measures
//! them; `watch` is a command-line client; `worker` is what `hold` spawns.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate_loadtest::{durable, hold, watch, worker};

#[derive(Parser)]
#[command(name = "pushgate-loadtest", version, about = "Open, hold and measure many pushgate sessions")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Open N sessions over several processes, hold them, time broadcasts, sample gateway memory.
    Hold(hold::HoldArgs),
    /// Durable messages per second into a store, through the batched write path.
    Store(durable::StoreArgs),
    /// Publish → receive latency of durable messages at a steady HTTP publish rate.
    Latency(durable::LatencyArgs),
    /// Time the replay of an offline user's backlog.
    Replay(durable::ReplayArgs),
    /// Connect one session, print every frame, send what you type.
    Watch(watch::WatchArgs),
    /// (internal) One worker process of `hold`.
    #[command(hide = true)]
    Worker(worker::WorkerArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate-loadtest: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Hold(args) => {
                let report = hold::run(args).await?;
                println!("{}", serde_json::to_string_pretty(&report)?);
                Ok(report.held())
            }
            Command::Store(args) => print(durable::store(args).await),
            Command::Latency(args) => print(durable::latency(args).await),
            Command::Replay(args) => print(durable::replay(args).await),
            Command::Watch(args) => watch::run(args).await.map(|()| true),
            Command::Worker(args) => worker::run(args).await.map(|()| true),
        }
    });
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("pushgate-loadtest: the run fell short of what it was asked to hold");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("pushgate-loadtest: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print(report: anyhow::Result<serde_json::Value>) -> anyhow::Result<bool> {
    println!("{}", serde_json::to_string_pretty(&report?)?);
    Ok(true)
}
