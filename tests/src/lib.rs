//! The end-to-end test harness: starts the real `pushgate-gateway` binary on ephemeral ports with
//! its own data dir, and talks to it the way clients (WebSocket), backends (HTTP publish) and
//! operators (admin API, signals) do. Handles clean up on drop; waits are on events with a
//! deadline, never fixed sleeps.
#![allow(clippy::unwrap_used)]

pub mod client;
pub mod cluster;
pub mod dispatcher;
pub mod gateway;
pub mod mysql;
pub mod rabbit;
pub mod raw;
pub mod resilient;
pub mod services;

pub use client::{Client, Received};
pub use cluster::TestCluster;
pub use dispatcher::Dispatcher;
pub use gateway::{Gateway, GatewayOptions};
pub use mysql::TestDatabase;
pub use rabbit::TestVhost;
pub use raw::{RawClient, RawFrame};
pub use resilient::Device;

use std::{future::Future, time::Duration};

/// How long a test waits for something that should happen promptly.
pub const WAIT: Duration = Duration::from_secs(10);

/// Polls `check` until it returns `Some`, or panics with `what` after `within`.
pub async fn eventually<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    eventually_observed(within, what, || {
        let checked = check();
        async move { checked.await.ok_or_else(String::new) }
    })
    .await
}

/// Polls `check` until it returns `Ok`, or panics after `within` with `what` and what the last
/// check saw instead (its `Err`, when not empty).
pub async fn eventually_observed<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut pause = Duration::from_millis(5);
    loop {
        let seen = match check().await {
            Ok(value) => return value,
            Err(seen) => seen,
        };
        if tokio::time::Instant::now() >= deadline {
            let last = if seen.is_empty() { String::new() } else { format!("; the last check saw {seen}") };
            panic!("timed out after {within:?} waiting for {what}{last}");
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(100));
    }
}

/// The directory of the workspace's built binaries (beside the test executable's `deps/`).
pub fn bin_dir() -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("deps dir");
    deps.parent().expect("profile dir").to_path_buf()
}

/// Path of a workspace binary; `PUSHGATE_BIN_DIR` overrides where to look.
pub fn binary(name: &str) -> std::path::PathBuf {
    let dir = std::env::var_os("PUSHGATE_BIN_DIR").map(Into::into).unwrap_or_else(bin_dir);
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: build the workspace binaries first (`cargo build --bins`, or run ./ops/test)",
        path.display()
    );
    path
}
