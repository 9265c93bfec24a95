//! Command-line options of the scenarios, shared groups first, and their validation (done before
//! anything is started, so that a bad option costs nothing).

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, ensure};
use serde::Serialize;

use crate::{
    plan::{DEFAULT_SOURCE_IPS, MAX_SESSIONS_PER_WORKER, Mode, parse_source_ips},
    progress::ProgressMode,
    publisher::{PublishArgs, Via},
    wire::{ServerKind, StormMethod},
};

/// The gateway nodes and how to authenticate.
#[derive(Debug, Clone, clap::Args)]
pub struct TargetArgs {
    /// What the sessions connect to: pushgate gateways, or a peer broadcast server to compare
    /// with (`soak` only): a plain WebSocket at --url, open once upgraded, whose every data frame
    /// is a broadcast; broadcasts are POSTed to --peer-publish; --admin and the secret are unused.
    #[arg(long, value_enum, default_value = "pushgate")]
    pub server: ServerKind,
    /// With --server peer: where a broadcast's payload (JSON) is POSTed; any 2xx accepts it.
    #[arg(long, value_name = "URL")]
    pub peer_publish: Option<String>,
    /// Client endpoints of the gateway nodes, comma-separated or repeated; sessions are spread
    /// over them round-robin.
    #[arg(long = "url", value_delimiter = ',', default_value = "ws://127.0.0.1:8080/ws")]
    pub urls: Vec<String>,
    /// Admin endpoints: one per --url in the same order (standalone nodes), or any of the
    /// cluster's (--mode cluster).
    #[arg(long = "admin", value_delimiter = ',', default_value = "http://127.0.0.1:9090")]
    pub admins: Vec<String>,
    /// standalone: independent nodes, each its own store; cluster: one cluster.
    #[arg(long, value_enum, default_value = "standalone")]
    pub mode: Mode,
    /// API key of the admin API, if it has one.
    #[arg(long, env = "PUSHGATE_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// HS256 secret of the gateways' client tokens.
    #[arg(long, env = "PUSHGATE_JWT_SECRET", hide_env_values = true)]
    pub secret: Option<String>,
    /// File holding the secret (a standalone gateway's DATA_DIR/jwt_secret).
    #[arg(long)]
    pub secret_file: Option<PathBuf>,
    /// Gateway processes (or a peer server's) to sample (RSS, CPU): pids (comma-separated or
    /// repeated), or `auto` for the processes listening on the --url ports.
    #[arg(long = "gateway-pid", value_delimiter = ',')]
    pub gateway_pids: Vec<String>,
}

impl TargetArgs {
    /// Checks the options that depend on the kind of server.
    pub fn validate(&self) -> anyhow::Result<()> {
        match (self.server, &self.peer_publish) {
            (ServerKind::Pushgate, None) => Ok(()),
            (ServerKind::Pushgate, Some(_)) => bail!("--peer-publish needs --server peer"),
            (ServerKind::Peer, None) => bail!("--server peer needs --peer-publish URL"),
            (ServerKind::Peer, Some(url)) => {
                ensure!(url.starts_with("http://"), "--peer-publish {url}: must start with http://");
                ensure!(
                    self.urls.len() == 1,
                    "--server peer takes one --url (its broadcasts go to one --peer-publish)"
                );
                Ok(())
            }
        }
    }

    /// Refuses a peer server for scenarios that need pushgate's features.
    pub fn pushgate_only(&self, scenario: &str) -> anyhow::Result<()> {
        ensure!(self.server == ServerKind::Pushgate, "{scenario} needs pushgate: --server peer is for soak");
        Ok(())
    }

    /// The token secret, from the option, the environment or the file.
    pub fn secret(&self) -> anyhow::Result<String> {
        match (&self.secret, &self.secret_file) {
            (Some(s), _) => Ok(s.clone()),
            (None, Some(path)) => Ok(std::fs::read_to_string(path)
                .map_err(|e| anyhow::anyhow!("reading {}: {e}", path.display()))?
                .trim()
                .to_owned()),
            (None, None) => {
                bail!("give the gateway's token secret with --secret, PUSHGATE_JWT_SECRET or --secret-file")
            }
        }
    }
}

/// The sessions and the processes that hold them.
#[derive(Debug, Clone, clap::Args, Serialize)]
pub struct LoadArgs {
    /// Sessions to open and hold (one user each).
    #[arg(long, default_value_t = 1000)]
    pub sessions: usize,
    /// Worker processes (default: as few as the 20,000-file limit allows, at least 2); each holds
    /// at most 18,000 sessions.
    #[arg(long)]
    pub workers: Option<usize>,
    /// New sessions per second, over all workers.
    #[arg(long, default_value_t = 4000)]
    pub ramp_per_s: u32,
    /// Connections being set up at once at most, over all workers (0: no bound, the ramp rate
    /// alone paces them). With a bound, a ramp faster than the server can take measures how many
    /// handshakes per second it completes, without overrunning its accept backlog.
    #[arg(long, default_value_t = 0)]
    pub max_connecting: usize,
    /// Source addresses of the load connections: a range A-B or a list; dealt out to the workers.
    #[arg(long, default_value = DEFAULT_SOURCE_IPS)]
    pub source_ips: String,
    /// The upgrade, welcome (and subscribed) of a session must complete within this (the upgrade
    /// alone with --server peer).
    #[arg(long, default_value = "30s")]
    #[serde(serialize_with = "ser_duration")]
    pub connect_timeout: humantime::Duration,
    /// Attempts of a session's first connection.
    #[arg(long, default_value_t = 3)]
    pub connect_attempts: u32,
    /// Idle time after the ramp before the idle memory figure.
    #[arg(long, default_value = "3s")]
    #[serde(serialize_with = "ser_duration")]
    pub settle: humantime::Duration,
    /// Each session acks its durable messages (cumulative) at most this often; 0s: never.
    #[arg(long, default_value = "250ms")]
    #[serde(serialize_with = "ser_duration")]
    pub ack_interval: humantime::Duration,
    /// Do not reconnect after an unexpected close.
    #[arg(long)]
    pub no_reconnect: bool,
}

impl Default for LoadArgs {
    fn default() -> Self {
        Self {
            sessions: 1000,
            workers: None,
            ramp_per_s: 4000,
            max_connecting: 0,
            source_ips: DEFAULT_SOURCE_IPS.into(),
            connect_timeout: Duration::from_secs(30).into(),
            connect_attempts: 3,
            settle: Duration::from_secs(3).into(),
            ack_interval: Duration::from_millis(250).into(),
            no_reconnect: false,
        }
    }
}

fn ser_duration<S: serde::Serializer>(d: &humantime::Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&d.to_string())
}

impl LoadArgs {
    pub fn validate(&self, allow_zero: bool) -> anyhow::Result<()> {
        ensure!(allow_zero || self.sessions > 0, "--sessions must be at least 1");
        ensure!(self.ramp_per_s > 0, "--ramp-per-s must be at least 1");
        ensure!(self.connect_attempts > 0, "--connect-attempts must be at least 1");
        ensure!(Duration::from(self.connect_timeout) >= Duration::from_millis(100), "--connect-timeout is too short");
        if let Some(w) = self.workers {
            ensure!(w > 0, "--workers must be at least 1");
            ensure!(
                self.sessions.div_ceil(w) <= MAX_SESSIONS_PER_WORKER,
                "{} sessions over {w} workers is more than {MAX_SESSIONS_PER_WORKER} per process (the open-file limit is 20,000)",
                self.sessions
            );
        }
        parse_source_ips(&self.source_ips)?;
        Ok(())
    }
}

/// What to write and show.
#[derive(Debug, Clone, clap::Args)]
pub struct OutputArgs {
    /// Write the JSON report here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    /// Write the HTML report (one self-contained file with plots) here.
    #[arg(long)]
    pub html: Option<PathBuf>,
    /// Progress display on stderr.
    #[arg(long, value_enum, default_value = "auto")]
    pub progress: ProgressMode,
    /// How often the timeline samples the gateways (RSS, CPU) and the load.
    #[arg(long, default_value = "1s")]
    pub sample_interval: humantime::Duration,
    /// Print the JSON report on stdout instead of the human summary.
    #[arg(long)]
    pub json: bool,
}

impl OutputArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        let every = Duration::from(self.sample_interval);
        ensure!(
            every >= Duration::from_millis(100) && every <= Duration::from_secs(60),
            "--sample-interval must be 100ms–60s"
        );
        Ok(())
    }
}

/// Options every session scenario has.
#[derive(Debug, Clone, clap::Args)]
pub struct Common {
    #[command(flatten)]
    pub target: TargetArgs,
    #[command(flatten)]
    pub load: LoadArgs,
    #[command(flatten)]
    pub output: OutputArgs,
    #[command(flatten)]
    pub publish: PublishArgs,
}

impl Common {
    pub fn validate(&self, allow_zero_sessions: bool) -> anyhow::Result<()> {
        self.load.validate(allow_zero_sessions)?;
        self.output.validate()?;
        self.target.validate()?;
        if self.target.server == ServerKind::Peer {
            ensure!(self.publish.via == Via::Http, "--server peer: broadcasts go over HTTP, drop --publish-via amqp");
        }
        ensure!(self.publish.max_in_flight > 0, "--max-in-flight must be at least 1");
        ensure!(!self.target.urls.is_empty(), "give at least one --url");
        crate::plan::Targets::new(self.target.urls.clone(), self.target.admins.clone(), self.target.mode)?;
        Ok(())
    }
}

/// `soak` (alias `hold`): connect and hold N sessions, with an optional durable stream to random
/// held users and periodic broadcasts.
#[derive(Debug, Clone, clap::Args)]
pub struct SoakArgs {
    #[command(flatten)]
    pub common: Common,
    /// How long to hold the sessions once they are open.
    #[arg(long, default_value = "60s")]
    pub duration: humantime::Duration,
    /// Durable messages per second, each to one random held user (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub durable_rate: f64,
    /// Broadcast to every session this often while holding.
    #[arg(long)]
    pub broadcast_interval: Option<humantime::Duration>,
    /// At most this many broadcasts (2 s apart unless --broadcast-interval).
    #[arg(long)]
    pub broadcasts: Option<usize>,
    /// How long a broadcast may take to reach every session.
    #[arg(long, default_value = "10s")]
    pub delivery_timeout: humantime::Duration,
    /// After the hold, how long to wait for the last durable messages.
    #[arg(long, default_value = "15s")]
    pub drain_timeout: humantime::Duration,
}

impl SoakArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate(false)?;
        ensure!(Duration::from(self.duration) > Duration::ZERO, "--duration must be positive");
        ensure!(self.durable_rate >= 0.0 && self.durable_rate.is_finite(), "--durable-rate must be ≥ 0");
        if self.common.target.server == ServerKind::Peer {
            ensure!(self.durable_rate == 0.0, "--durable-rate: a peer server has no durable messages");
        }
        if let Some(i) = self.broadcast_interval {
            ensure!(Duration::from(i) >= Duration::from_millis(10), "--broadcast-interval is too short");
        }
        Ok(())
    }

    /// Broadcast pause and count, when broadcasting.
    pub fn broadcast_plan(&self) -> Option<(Duration, Option<usize>)> {
        match (self.broadcast_interval, self.broadcasts) {
            (None, None) | (_, Some(0)) => None,
            (Some(i), n) => Some((i.into(), n)),
            (None, Some(n)) => Some((Duration::from_secs(2), Some(n))),
        }
    }
}

/// A fan-out target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum FanoutTarget {
    Broadcast,
    Channel,
    User,
}

/// `fanout`: delivery latency of broadcasts, channel messages and user-targeted messages.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    #[command(flatten)]
    pub common: Common,
    /// Targets to measure, in this order.
    #[arg(long, value_delimiter = ',', default_value = "broadcast,channel,user")]
    pub targets: Vec<FanoutTarget>,
    /// Messages per target.
    #[arg(long, default_value_t = 10)]
    pub messages: usize,
    /// Pause between messages (after the previous one reached everyone).
    #[arg(long, default_value = "1s")]
    pub interval: humantime::Duration,
    /// Channels the sessions subscribe to (session g to channel g mod N); channel messages go to
    /// them in turn.
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// Users each user-targeted message names (1–1000).
    #[arg(long, default_value_t = 1000)]
    pub users_per_message: usize,
    /// User-targeted messages are durable (`persist`); `--user-persist false` for best effort.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub user_persist: bool,
    /// How long a message may take to reach every session.
    #[arg(long, default_value = "10s")]
    pub delivery_timeout: humantime::Duration,
}

impl FanoutArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate(false)?;
        self.common.target.pushgate_only("fanout")?;
        ensure!(!self.targets.is_empty(), "--targets: name at least one");
        ensure!(self.messages > 0, "--messages must be at least 1");
        ensure!(self.channels > 0, "--channels must be at least 1");
        ensure!(
            self.channels <= self.common.load.sessions,
            "--channels {} is more than --sessions {}",
            self.channels,
            self.common.load.sessions
        );
        ensure!((1..=1000).contains(&self.users_per_message), "--users-per-message must be 1–1000");
        Ok(())
    }
}

/// What a publish stream targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum PublishTo {
    Users,
    Channel,
    All,
}

/// Exchange kinds `publish --amqp-declare` can declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum DeclareKind {
    Topic,
    Direct,
    Fanout,
}

/// `publish`: publish load over HTTP or AMQP at a set rate, optionally to held sessions.
#[derive(Debug, Clone, clap::Args)]
pub struct PublishScenarioArgs {
    #[command(flatten)]
    pub common: Common,
    /// Publishes per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// How long to publish.
    #[arg(long, default_value = "30s")]
    pub duration: humantime::Duration,
    /// What each message targets.
    #[arg(long, value_enum, default_value = "users")]
    pub to: PublishTo,
    /// Users per message (--to users).
    #[arg(long, default_value_t = 1)]
    pub users_per_message: usize,
    /// Distinct users to publish to when no sessions are held (--sessions 0).
    #[arg(long, default_value_t = 10_000)]
    pub users: usize,
    /// Channels (--to channel); held sessions subscribe to them (session g to channel g mod N).
    #[arg(long, default_value_t = 1)]
    pub channels: usize,
    /// User messages are durable; `--persist false` for best effort.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub persist: bool,
    /// Padding added to each message's data, in bytes.
    #[arg(long, default_value_t = 0)]
    pub payload_bytes: usize,
    /// Declare --amqp-exchange (durable, of this kind) first: for trying the AMQP publisher on a
    /// broker with no dispatcher. Do not use it on pushgate.publish in a cluster.
    #[arg(long, value_enum)]
    pub amqp_declare: Option<DeclareKind>,
    /// With --amqp-declare: also declare this durable queue, bound with `#`.
    #[arg(long)]
    pub amqp_queue: Option<String>,
    /// After publishing, how long to wait for held sessions to receive the last messages.
    #[arg(long, default_value = "15s")]
    pub drain_timeout: humantime::Duration,
}

impl PublishScenarioArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate(true)?;
        self.common.target.pushgate_only("publish")?;
        ensure!(self.rate > 0.0 && self.rate.is_finite(), "--rate must be positive");
        ensure!(Duration::from(self.duration) > Duration::ZERO, "--duration must be positive");
        ensure!((1..=1000).contains(&self.users_per_message), "--users-per-message must be 1–1000");
        ensure!(self.users > 0, "--users must be at least 1");
        ensure!(self.channels > 0, "--channels must be at least 1");
        ensure!(self.payload_bytes <= 60 * 1024, "--payload-bytes must be at most 61440 (data is limited to 64 KiB)");
        let sessions = self.common.load.sessions;
        if sessions > 0 && self.to == PublishTo::Users {
            ensure!(
                self.users_per_message <= sessions.div_ceil(self.common.target.urls.len()),
                "--users-per-message is more than the sessions of one node"
            );
        }
        if self.amqp_queue.is_some() {
            ensure!(self.amqp_declare.is_some(), "--amqp-queue needs --amqp-declare");
        }
        if self.amqp_declare.is_some() {
            ensure!(self.common.publish.via == crate::publisher::Via::Amqp, "--amqp-declare needs --publish-via amqp");
        }
        Ok(())
    }
}

/// `storm`: take K held sessions down at once and time their return and resume.
#[derive(Debug, Clone, clap::Args)]
pub struct StormArgs {
    #[command(flatten)]
    pub common: Common,
    /// Sessions taken down at once in each storm.
    #[arg(long, default_value_t = 1000)]
    pub storm_sessions: usize,
    /// How: drop (TCP reset, like a network cut), close (Close frame), admin (the gateway
    /// disconnects them, code 4000).
    #[arg(long, value_enum, default_value = "drop")]
    pub method: StormMethod,
    /// Storms, one after the other.
    #[arg(long, default_value_t = 1)]
    pub storms: usize,
    /// Pause after a storm is over before the next.
    #[arg(long, default_value = "5s")]
    pub storm_interval: humantime::Duration,
    /// Durable messages published to each stormed user right after it is taken down: they must
    /// arrive by replay (or live).
    #[arg(long, default_value_t = 1)]
    pub storm_messages: usize,
    /// Sessions reconnect at a random moment within this (0s: all at once).
    #[arg(long, default_value = "0s")]
    pub reconnect_jitter: humantime::Duration,
    /// A storm falls short if its sessions are not all back and resumed within this.
    #[arg(long, default_value = "60s")]
    pub storm_timeout: humantime::Duration,
    /// Durable messages per second to random held users in the background (0: none).
    #[arg(long, default_value_t = 0.0)]
    pub durable_rate: f64,
    /// After the storms, how long to wait for the last durable messages.
    #[arg(long, default_value = "15s")]
    pub drain_timeout: humantime::Duration,
}

impl StormArgs {
    pub fn validate(&self) -> anyhow::Result<()> {
        self.common.validate(false)?;
        self.common.target.pushgate_only("storm")?;
        ensure!(self.storm_sessions > 0, "--storm-sessions must be at least 1");
        ensure!(
            self.storm_sessions <= self.common.load.sessions,
            "--storm-sessions {} is more than --sessions {}",
            self.storm_sessions,
            self.common.load.sessions
        );
        ensure!(self.storms > 0, "--storms must be at least 1");
        ensure!(self.storm_messages <= 100, "--storm-messages must be at most 100");
        ensure!(self.durable_rate >= 0.0 && self.durable_rate.is_finite(), "--durable-rate must be ≥ 0");
        ensure!(
            Duration::from(self.reconnect_jitter) < Duration::from(self.storm_timeout),
            "--reconnect-jitter must be shorter than --storm-timeout"
        );
        if self.common.load.no_reconnect {
            bail!("storm needs sessions that reconnect: drop --no-reconnect");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    enum Cli {
        Soak(SoakArgs),
        Fanout(FanoutArgs),
        Publish(PublishScenarioArgs),
        Storm(StormArgs),
    }

    fn parse(args: &str) -> anyhow::Result<Cli> {
        let cli = Cli::try_parse_from(std::iter::once("t").chain(args.split_whitespace()))?;
        match &cli {
            Cli::Soak(a) => a.validate()?,
            Cli::Fanout(a) => a.validate()?,
            Cli::Publish(a) => a.validate()?,
            Cli::Storm(a) => a.validate()?,
        }
        Ok(cli)
    }

    #[test]
    fn defaults_are_valid() {
        for s in ["soak", "fanout", "publish", "storm"] {
            parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        }
    }

    #[test]
    fn several_nodes_and_pids_parse_as_lists() {
        let Ok(Cli::Soak(a)) = parse(
            "soak --url ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws --admin http://127.0.0.1:3 --admin http://127.0.0.1:4 --gateway-pid 5,6 --sessions 100000 --durable-rate 1000 --broadcast-interval 5s",
        ) else {
            panic!("soak")
        };
        assert_eq!(a.common.target.urls.len(), 2);
        assert_eq!(a.common.target.admins.len(), 2);
        assert_eq!(a.common.target.gateway_pids, vec!["5", "6"]);
        assert_eq!(a.broadcast_plan(), Some((Duration::from_secs(5), None)));
    }

    #[test]
    fn broadcasts_need_a_count_or_an_interval() {
        let plan = |args: &str| match parse(args).unwrap() {
            Cli::Soak(a) => a.broadcast_plan(),
            _ => unreachable!(),
        };
        assert_eq!(plan("soak"), None);
        assert_eq!(plan("soak --broadcasts 5"), Some((Duration::from_secs(2), Some(5))));
        assert_eq!(plan("soak --broadcasts 5 --broadcast-interval 1s"), Some((Duration::from_secs(1), Some(5))));
        assert_eq!(plan("soak --broadcasts 0 --broadcast-interval 1s"), None);
    }

    #[test]
    fn bad_options_are_refused_before_anything_starts() {
        for bad in [
            "soak --sessions 0",
            "soak --sessions 40000 --workers 2",
            "soak --workers 0",
            "soak --ramp-per-s 0",
            "soak --source-ips 10.0.0.9-10.0.0.1",
            "soak --url http://127.0.0.1:1/ws",
            "soak --url ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws",
            "soak --durable-rate -1",
            "soak --duration 0s",
            "soak --sample-interval 10ms",
            "soak --max-in-flight 0",
            "fanout --users-per-message 1001",
            "fanout --channels 0",
            "fanout --sessions 5 --channels 6",
            "fanout --messages 0",
            "fanout --targets",
            "publish --rate 0",
            "publish --payload-bytes 70000",
            "publish --amqp-declare topic",
            "publish --amqp-queue q --publish-via amqp",
            "publish --sessions 10 --users-per-message 11",
            "storm --storm-sessions 2000 --sessions 1000",
            "storm --storms 0",
            "storm --no-reconnect",
            "storm --reconnect-jitter 2m",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
        // A cluster may name one admin API for several nodes.
        parse("soak --mode cluster --url ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws").unwrap();
        parse("publish --sessions 0 --publish-via amqp --amqp-declare topic --amqp-queue q").unwrap();
    }

    #[test]
    fn a_peer_server_needs_its_publish_url_and_only_soaks() {
        let Ok(Cli::Soak(a)) =
            parse("soak --server peer --url ws://127.0.0.1:7/sub --peer-publish http://127.0.0.1:7/pub --broadcasts 5")
        else {
            panic!("soak")
        };
        assert_eq!(a.common.target.server, ServerKind::Peer);
        assert_eq!(a.common.target.peer_publish.as_deref(), Some("http://127.0.0.1:7/pub"));
        let Ok(Cli::Soak(a)) = parse("soak") else { panic!("soak") };
        assert_eq!(a.common.target.server, ServerKind::Pushgate);
        for bad in [
            "soak --server peer",
            "soak --server other --peer-publish http://127.0.0.1:7/pub",
            "soak --peer-publish http://127.0.0.1:7/pub",
            "soak --server peer --peer-publish ws://127.0.0.1:7/pub",
            "soak --server peer --peer-publish http://127.0.0.1:7/pub --url ws://127.0.0.1:1/ws,ws://127.0.0.1:2/ws --mode cluster",
            "soak --server peer --peer-publish http://127.0.0.1:7/pub --durable-rate 10",
            "soak --server peer --peer-publish http://127.0.0.1:7/pub --publish-via amqp",
            "fanout --server peer --peer-publish http://127.0.0.1:7/pub",
            "publish --server peer --peer-publish http://127.0.0.1:7/pub",
            "storm --server peer --peer-publish http://127.0.0.1:7/pub",
        ] {
            assert!(parse(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn the_secret_comes_from_the_option_or_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("jwt_secret");
        std::fs::write(&file, "s3cret\n").unwrap();
        let Ok(Cli::Soak(mut a)) = parse("soak") else { panic!() };
        a.common.target.secret = None;
        assert!(a.common.target.secret().is_err());
        a.common.target.secret_file = Some(file);
        assert_eq!(a.common.target.secret().unwrap(), "s3cret");
        a.common.target.secret = Some("x".into());
        assert_eq!(a.common.target.secret().unwrap(), "x");
    }
}
