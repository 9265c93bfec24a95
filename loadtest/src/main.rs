//! `pushgate-loadtest`: `hold` opens and holds many sessions over worker processes and measures
//! them; `watch` is a command-line client; `worker` is what `hold` spawns.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate_loadtest::{hold, watch, worker};

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
