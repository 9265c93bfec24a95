//! `pushgate-dispatcher`: reads the command line and configuration, installs logging, binds the
//! admin listener, and runs the dispatcher until SIGTERM or SIGINT.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use pushgate_dispatcher::{
    service::{self, DispatcherConfig},
    settings::{ProcessEnv, parse_overrides},
    telemetry,
};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "pushgate-dispatcher",
    version,
    about = "pushgate dispatcher: AMQP ingest, MySQL, routing to gateway nodes"
)]
struct Cli {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Admin listener address (PUSHGATE_ADMIN_LISTEN).
    #[arg(long)]
    admin_listen: Option<String>,
    /// Any setting, as KEY=VALUE; repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut overrides = match parse_overrides(&cli.set) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("pushgate-dispatcher: configuration error: {e}");
            return ExitCode::from(64);
        }
    };
    if let Some(addr) = cli.admin_listen {
        overrides.insert(0, ("admin_listen".into(), addr));
    }
    let config = match DispatcherConfig::load(cli.config.as_deref(), &ProcessEnv, &overrides) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pushgate-dispatcher: configuration error: {e}");
            return ExitCode::from(64);
        }
    };
    telemetry::init_logging(&config.log, config.log_format == "json");
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate-dispatcher: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let admin = match tokio::net::TcpListener::bind(config.admin_listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("pushgate-dispatcher: cannot bind {}: {e}", config.admin_listen);
                return ExitCode::FAILURE;
            }
        };
        let dispatcher = match service::start(config, admin).await {
            Ok(d) => d,
            Err(e) => {
                eprintln!("pushgate-dispatcher: {e}");
                return ExitCode::from(64);
            }
        };
        println!("pushgate-dispatcher ready admin={} node={}", dispatcher.admin_addr, dispatcher.node_id);
        use tokio::signal::unix::{SignalKind, signal};
        if let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
            tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        } else {
            std::future::pending::<()>().await;
        }
        tracing::info!("stopping: finishing the batches under way");
        dispatcher.shutdown(Duration::from_secs(10)).await;
        ExitCode::SUCCESS
    })
}
