//! A `pushgate-dispatcher` child process with its admin listener on an ephemeral port. Dropping
//! the handle kills the process; if the test is failing, the tail of its log is printed.

use std::{
    path::PathBuf,
    process::{ExitStatus, Stdio},
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

use crate::{WAIT, binary, eventually};

pub struct Dispatcher {
    child: Child,
    pub admin_addr: std::net::SocketAddr,
    pub node_id: String,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dispatcher {
    /// Starts a dispatcher with these `PUSHGATE_*` variables and `--set` settings.
    pub async fn start(env: &[(String, String)], settings: &[(String, String)]) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let log = dir.path().join("dispatcher.log");
        let mut command = Command::new(binary("pushgate-dispatcher"));
        command
            .arg("--admin-listen")
            .arg("127.0.0.1:0")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("PUSHGATE_LOG", "info,pushgate_dispatcher=debug")
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .kill_on_drop(true);
        for (key, value) in settings {
            command.arg("--set").arg(format!("{key}={value}"));
        }
        let mut child = command.spawn().expect("spawn pushgate-dispatcher");
        let mut lines = BufReader::new(child.stdout.take().expect("stdout")).lines();
        let ready = tokio::time::timeout(WAIT, lines.next_line())
            .await
            .expect("dispatcher ready line in time")
            .expect("read stdout")
            .unwrap_or_else(|| {
                panic!("dispatcher exited before it was ready:\n{}", std::fs::read_to_string(&log).unwrap_or_default())
            });
        let field = |name: &str| {
            ready.split_whitespace().find_map(|w| w.strip_prefix(&format!("{name}="))).expect("field").to_owned()
        };
        let dispatcher = Self {
            admin_addr: field("admin").parse().expect("admin addr"),
            node_id: field("node"),
            child,
            log,
            _dir: dir,
        };
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        dispatcher
    }

    /// Waits until `/readyz` answers 200 (store, broker and Redis connected).
    pub async fn wait_ready(&self) {
        let url = format!("http://{}/readyz", self.admin_addr);
        eventually(Duration::from_secs(60), &format!("dispatcher {} ready", self.node_id), || async {
            reqwest::get(&url).await.is_ok_and(|r| r.status() == 200).then_some(())
        })
        .await;
    }

    /// `/metrics` text.
    pub async fn metrics(&self) -> String {
        reqwest::get(format!("http://{}/metrics", self.admin_addr)).await.expect("metrics").text().await.expect("text")
    }

    pub fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("running");
        let status = std::process::Command::new("kill").arg(format!("-{signal}")).arg(pid.to_string()).status();
        assert!(status.map(|s| s.success()).unwrap_or(false), "kill -{signal} {pid}");
    }

    pub async fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        tokio::time::timeout(within, self.child.wait()).await.expect("dispatcher exit in time").expect("wait")
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let lines: Vec<&str> = log.lines().collect();
            eprintln!(
                "--- dispatcher {} log (tail) ---\n{}",
                self.node_id,
                lines[lines.len().saturating_sub(40)..].join("\n")
            );
        }
        let _ = self.child.start_kill();
    }
}
