//! `pushgate-gateway`: reads the command line and configuration, restarts itself with one malloc
//! arena (see `allocator`), installs logging, raises the file limit, binds, and runs the gateway
//! until SIGTERM or SIGINT has drained it. The `token` subcommand mints client tokens with the
//! configured secret.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::{Args, Parser, Subcommand};
use pushgate_gateway::{Config, Listeners, allocator, auth::Auth, listener, telemetry};
use pushgate_protocol::{ChannelClaims, ChannelName, ChannelPattern, DeviceId, SessionClaims, UserId};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(name = "pushgate-gateway", version, about = "pushgate gateway node: WebSocket sessions and the admin API")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    settings: Settings,
}

#[derive(Subcommand)]
enum Command {
    /// Print a signed client token (or, with --channel, a channel token).
    Token(TokenArgs),
}

/// Configuration flags shared by every command (later wins: defaults, file, environment, flags).
#[derive(Args, Clone)]
struct Settings {
    /// TOML configuration file.
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// Client listener address (PUSHGATE_LISTEN).
    #[arg(long, global = true)]
    listen: Option<String>,
    /// Admin listener address (PUSHGATE_ADMIN_LISTEN).
    #[arg(long, global = true)]
    admin_listen: Option<String>,
    /// Data directory (PUSHGATE_DATA_DIR).
    #[arg(long, global = true)]
    data_dir: Option<String>,
    /// Any setting, as KEY=VALUE (e.g. --set heartbeat=10s); repeatable.
    #[arg(long = "set", value_name = "KEY=VALUE", global = true)]
    set: Vec<String>,
}

#[derive(Args)]
struct TokenArgs {
    /// User id (claim `sub`).
    #[arg(long)]
    user: String,
    /// Device id (claim `dev`).
    #[arg(long)]
    device: Option<String>,
    /// Lifetime, e.g. 1h, 30m, 7d.
    #[arg(long, default_value = "1h")]
    ttl: humantime::Duration,
    /// Channel patterns the session may subscribe to, comma-separated (claim `chs`), e.g. 'news,room:*'.
    #[arg(long)]
    channels: Option<String>,
    /// Mint a channel token for this channel instead of a session token.
    #[arg(long, conflicts_with_all = ["channels", "device"])]
    channel: Option<String>,
}

impl Settings {
    fn load(&self) -> Result<Config, pushgate_gateway::ConfigError> {
        let mut overrides = Vec::new();
        for (key, value) in
            [("listen", &self.listen), ("admin_listen", &self.admin_listen), ("data_dir", &self.data_dir)]
        {
            if let Some(value) = value {
                overrides.push((key.to_owned(), value.clone()));
            }
        }
        overrides.extend(pushgate_dispatcher::settings::parse_overrides(&self.set)?);
        Config::load(self.config.as_deref(), &pushgate_gateway::config::ProcessEnv, &overrides)
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match cli.settings.load() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("pushgate-gateway: configuration error: {e}");
            return ExitCode::from(64);
        }
    };
    match cli.command {
        Some(Command::Token(args)) => token(&config, args),
        None => run(config),
    }
}

fn token(config: &Config, args: TokenArgs) -> ExitCode {
    let fail = |what: &str, e: &dyn std::fmt::Display| {
        eprintln!("pushgate-gateway token: {what}: {e}");
        ExitCode::from(64)
    };
    let auth = match Auth::load(config.jwt_secret.as_deref(), &config.data_dir, config.token_leeway) {
        Ok(auth) => auth,
        Err(e) => return fail("cannot load the secret", &e),
    };
    let sub = match UserId::new(&args.user) {
        Ok(u) => u,
        Err(e) => return fail("--user", &e),
    };
    let exp = pushgate_protocol::now_ms() / 1000 + Duration::from(args.ttl).as_secs();
    let token = if let Some(channel) = args.channel {
        match ChannelName::new(&channel) {
            Ok(ch) => auth.mint_channel(&ChannelClaims { sub, ch, exp }),
            Err(e) => return fail("--channel", &e),
        }
    } else {
        let dev = match args.device.as_deref().map(DeviceId::new).transpose() {
            Ok(d) => d,
            Err(e) => return fail("--device", &e),
        };
        let chs = match args
            .channels
            .as_deref()
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(ChannelPattern::parse)
            .collect::<Result<Vec<_>, _>>()
        {
            Ok(chs) => chs,
            Err(e) => return fail("--channels", &e),
        };
        auth.mint_session(&SessionClaims { sub, exp, dev, chs })
    };
    println!("{token}");
    ExitCode::SUCCESS
}

fn run(config: Config) -> ExitCode {
    // Before anything else starts (this returns only when it did not replace the process).
    let not_one_arena = allocator::run_with_one_arena();
    telemetry::init(&config);
    if let Some(e) = not_one_arena {
        tracing::warn!(error = %e, "could not restart with one malloc arena; running with glibc's default arenas");
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pushgate-gateway: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    runtime.block_on(async move {
        let budget = listener::raise_file_limit();
        tracing::info!(file_limit_sockets = budget, "raised RLIMIT_NOFILE to its hard limit");
        let started = match Listeners::bind(&config) {
            Ok(listeners) => pushgate_gateway::start(config, listeners, budget).await,
            Err(e) => Err(e),
        };
        let gateway = match started {
            Ok(g) => g,
            Err(e) => {
                eprintln!("pushgate-gateway: {e}");
                return ExitCode::from(e.exit_code() as u8);
            }
        };
        println!(
            "pushgate-gateway ready client={} admin={} node={}",
            gateway.client_addr,
            gateway.admin_addr,
            gateway.node().node_id
        );
        // One wait for the drain (started by a signal or `POST /v1/drain`) and its final flush:
        // two of them raced, and the one that found nothing left to write ended the process
        // while the other was still writing the last session events.
        tokio::select! {
            () = gateway.drained() => {}
            () = signals(&gateway) => {}
        }
        ExitCode::SUCCESS
    })
}

/// The first SIGTERM or SIGINT starts the drain; a second one returns (exit at once).
async fn signals(gateway: &pushgate_gateway::Gateway) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        tracing::error!("cannot install signal handlers");
        return std::future::pending().await;
    };
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::info!("signal received: draining (send it again to exit at once)");
    gateway.drain();
    tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
    tracing::warn!("second signal: exiting without waiting for the drain");
}
