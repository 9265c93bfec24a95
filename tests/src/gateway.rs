//! A `pushgate-gateway` child process on ephemeral ports, with its own data dir and secret.
//! Dropping the handle kills the process; if the test is failing, the tail of its log is printed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use pushgate_gateway::auth::Auth;
use pushgate_protocol::{ChannelClaims, ChannelName, ChannelPattern, DeviceId, SessionClaims, UserId, now_ms};
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{Client, WAIT, binary, eventually, eventually_observed};

/// Settings for a gateway under test (`--set key=value` pairs).
#[derive(Debug, Clone, Default)]
pub struct GatewayOptions {
    pub settings: Vec<(String, String)>,
    pub env: Vec<(String, String)>,
    /// Reuse this data dir (a restart); a fresh temporary one otherwise.
    pub data_dir: Option<PathBuf>,
}

impl GatewayOptions {
    pub fn set(mut self, key: &str, value: impl ToString) -> Self {
        self.settings.push((key.to_owned(), value.to_string()));
        self
    }

    pub fn env(mut self, key: &str, value: impl ToString) -> Self {
        self.env.push((key.to_owned(), value.to_string()));
        self
    }
}

pub struct Gateway {
    child: Child,
    pub client_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub node_id: String,
    auth: Auth,
    http: reqwest::Client,
    /// Sent as a bearer key on admin requests (cluster gateways require one).
    api_key: Option<String>,
    log: PathBuf,
    _tmp: Option<tempfile::TempDir>,
    pub data_dir: PathBuf,
}

/// The secret every test gateway signs tokens with.
pub const TEST_SECRET: &str = "pushgate-test-secret-0123456789abcdef";

impl Gateway {
    pub async fn start() -> Self {
        Self::start_with(GatewayOptions::default()).await
    }

    pub async fn start_with(options: GatewayOptions) -> Self {
        let (tmp, data_dir) = match &options.data_dir {
            Some(dir) => (None, dir.clone()),
            None => {
                let tmp = tempfile::tempdir().expect("temp dir");
                let dir = tmp.path().to_path_buf();
                (Some(tmp), dir)
            }
        };
        let log = data_dir.join(format!("gateway-{}.log", now_ms()));
        let log_file = std::fs::File::create(&log).expect("log file");
        let mut command = Command::new(binary("pushgate-gateway"));
        command
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&data_dir)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PUSHGATE_JWT_SECRET", TEST_SECRET)
            .env("PUSHGATE_LOG", "info,pushgate_gateway=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .kill_on_drop(true);
        for (key, value) in &options.settings {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        for (key, value) in &options.env {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("spawn pushgate-gateway");
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("gateway did not print its ready line in time")
            .expect("read stdout")
            .unwrap_or_else(|| panic!("gateway exited before it was ready; log:\n{}", read_tail(&log)));
        let field = |name: &str| -> String {
            ready
                .split_whitespace()
                .find_map(|w| w.strip_prefix(&format!("{name}=")))
                .unwrap_or_else(|| panic!("no {name}= in {ready:?}"))
                .to_owned()
        };
        let gateway = Self {
            client_addr: field("client").parse().expect("client addr"),
            admin_addr: field("admin").parse().expect("admin addr"),
            node_id: field("node"),
            child,
            auth: Auth::new(TEST_SECRET.as_bytes(), Duration::ZERO),
            http: reqwest::Client::new(),
            api_key: options.env.iter().find(|(k, _)| k == "PUSHGATE_API_KEY").map(|(_, v)| v.clone()),
            log,
            _tmp: tmp,
            data_dir,
        };
        // Keep the pipe drained so the child never blocks on stdout.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        gateway
    }

    /// `ws://…/ws` of this gateway.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/ws", self.client_addr)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.admin_addr, path)
    }

    /// A session token for `user`, valid for an hour, allowing `channels` patterns.
    pub fn token(&self, user: &str, device: Option<&str>, channels: &[&str]) -> String {
        self.token_expiring(user, device, channels, now_ms() / 1000 + 3600)
    }

    pub fn token_expiring(&self, user: &str, device: Option<&str>, channels: &[&str], exp: u64) -> String {
        self.auth.mint_session(&SessionClaims {
            sub: UserId::new(user).unwrap(),
            exp,
            dev: device.map(|d| DeviceId::new(d).unwrap()),
            chs: channels.iter().map(|c| ChannelPattern::parse(c).unwrap()).collect(),
        })
    }

    pub fn channel_token(&self, user: &str, channel: &str) -> String {
        self.auth.mint_channel(&ChannelClaims {
            sub: UserId::new(user).unwrap(),
            ch: ChannelName::new(channel).unwrap(),
            exp: now_ms() / 1000 + 3600,
        })
    }

    /// Connects as `user` (no device, all channels allowed) and reads the welcome.
    pub async fn connect(&self, user: &str) -> Client {
        self.connect_token(&self.token(user, None, &["*"])).await
    }

    /// Connects with `token` and reads the welcome.
    pub async fn connect_token(&self, token: &str) -> Client {
        let mut client = Client::connect(&format!("{}?token={token}", self.ws_url())).await.expect("connect");
        let welcome = client.next().await;
        assert_eq!(welcome.frame_type(), Some("welcome"), "first frame: {welcome:?}");
        client.welcome = welcome.json().cloned();
        client
    }

    /// `POST /v1/publish`; returns status and JSON body.
    pub async fn publish(&self, envelope: &Value) -> (u16, Value) {
        self.post_json("/v1/publish", envelope.to_string()).await
    }

    fn admin(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => request.bearer_auth(key),
            None => request,
        }
    }

    /// POSTs a JSON body to the admin listener; the whole response.
    pub async fn post(&self, path: &str, body: String) -> reqwest::Response {
        let request = self.http.post(self.admin_url(path)).header("content-type", "application/json").body(body);
        self.admin(request).send().await.expect("admin request")
    }

    pub async fn post_json(&self, path: &str, body: String) -> (u16, Value) {
        let response = self.post(path, body).await;
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    pub async fn get_json(&self, path: &str) -> (u16, Value) {
        let response = self.admin(self.http.get(self.admin_url(path))).send().await.expect("admin request");
        let status = response.status().as_u16();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// The `/metrics` text.
    pub async fn metrics(&self) -> String {
        self.http.get(self.admin_url("/metrics")).send().await.expect("metrics").text().await.expect("metrics text")
    }

    /// A metric's value: the sum over series whose name is `name` and whose labels contain
    /// every `label="value"` given.
    pub async fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        parse_metric(&self.metrics().await, name, labels)
    }

    /// Waits until a metric satisfies `ok`; a timeout's panic says the last value seen.
    pub async fn wait_metric(&self, name: &str, labels: &[(&str, &str)], ok: impl Fn(f64) -> bool) -> f64 {
        eventually_observed(WAIT, &format!("metric {name}{labels:?}"), || async {
            let v = self.metric(name, labels).await;
            if ok(v) { Ok(v) } else { Err(v.to_string()) }
        })
        .await
    }

    /// Sends a signal (`TERM`, `KILL`, …) to the process.
    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("gateway still running");
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{signal} {pid}");
    }

    /// Waits for the process to exit.
    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait()).await.expect("gateway did not exit in time").expect("wait")
    }

    /// The process's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `/readyz` answers 200 (in cluster mode: every backend connected).
    pub async fn wait_ready(&self) {
        eventually(Duration::from_secs(30), &format!("gateway {} ready", self.node_id), || async {
            let ok = self.http.get(self.admin_url("/readyz")).send().await.is_ok_and(|r| r.status() == 200);
            ok.then_some(())
        })
        .await;
    }

    /// The process id (for RSS sampling).
    pub fn pid(&self) -> u32 {
        self.child.id().expect("running")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- gateway {} log (tail) ---\n{}", self.node_id, read_tail(&self.log));
        }
        let _ = self.child.start_kill();
    }
}

fn read_tail(path: &std::path::Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// Parses Prometheus text for `name{labels…} value` lines.
pub fn parse_metric(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let (metric, label_text) = match series.split_once('{') {
                Some((m, rest)) => (m, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            if metric != name {
                return None;
            }
            labels
                .iter()
                .all(|(k, v)| label_text.contains(&format!("{k}=\"{v}\"")))
                .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}
