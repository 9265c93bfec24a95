//! `pushgate-loadtest`: long-connection soak tests and load for pushgate — `soak` (alias `hold`),
//! `fanout`, `publish`, `storm`; the durable-path measurements `store`, `latency`, `replay`;
//! `floor`, the loopback floor; `watch`, a command-line client; and `worker`, what the scenarios
//! spawn.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pushgate_loadtest::{args, durable, floor, scenario, watch, worker};

#[derive(Parser)]
#[command(name = "pushgate-loadtest", version, about = "Open, hold and measure many pushgate sessions; publish load")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Hold N sessions for a duration (heartbeats answered), optionally with a durable stream to
    /// random held users and periodic broadcasts; count unexpected closes and lost messages.
    #[command(alias = "hold")]
    Soak(args::SoakArgs),
    /// Delivery latency of broadcasts, channel messages and user-targeted messages.
    Fanout(args::FanoutArgs),
    /// Publish load over HTTP or AMQP at a set rate, optionally to held sessions.
    Publish(args::PublishScenarioArgs),
    /// Reconnect storm: take K held sessions down at once, time their return and resume.
    Storm(args::StormArgs),
    /// Durable messages per second into a store, through the batched write path.
    Store(durable::StoreArgs),
    /// Publish → receive latency of durable messages at a steady HTTP publish rate.
    Latency(durable::LatencyArgs),
    /// Time the replay of an offline user's backlog.
    Replay(durable::ReplayArgs),
    /// The loopback floor: the kernel's own CPU and time to deliver one small frame to each of N
    /// TCP connections, with no server in between (the bound under every broadcast figure).
    Floor(floor::FloorArgs),
    /// Connect one session, print every frame, send what you type.
    Watch(watch::WatchArgs),
    /// (internal) One worker process of the scenarios: its spec and commands on stdin.
    #[command(hide = true)]
    Worker,
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
            Command::Soak(args) => scenario::soak(args).await.map(|r| r.passed),
            Command::Fanout(args) => scenario::fanout(args).await.map(|r| r.passed),
            Command::Publish(args) => scenario::publish(args).await.map(|r| r.passed),
            Command::Storm(args) => scenario::storm(args).await.map(|r| r.passed),
            Command::Store(args) => print(durable::store(args).await),
            Command::Latency(args) => print(durable::latency(args).await),
            Command::Replay(args) => print(durable::replay(args).await),
            Command::Floor(args) => print(floor::run(args).await),
            Command::Watch(args) => watch::run(args).await.map(|()| true),
            Command::Worker => worker::run().await.map(|()| true),
        }
    });
    // Workers and connections still around end with the runtime.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
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
