//! A device that stays connected whatever happens to the nodes: when its session ends it
//! reconnects — to the next node in its list — and resumes from its device cursor, acking what
//! it receives. It records every seq it sees, so a test can check the durable guarantees after a
//! failure: every message, in order, and duplicates only of messages whose ack could not have
//! been recorded yet.

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::{sync::Notify, task::JoinHandle};
use tokio_tungstenite::tungstenite::Message;

/// What the device saw.
#[derive(Debug, Clone, Default)]
pub struct DeviceLog {
    /// Highest seq received, in order.
    pub last: u64,
    /// Seqs that arrived again; each with the highest seq this device had acked at least
    /// `ack_grace` before the disconnect that preceded it.
    pub duplicates: Vec<(u64, u64)>,
    /// Seqs that arrived ahead of a missing one (must stay empty).
    pub gaps: Vec<(u64, u64)>,
    pub connections: usize,
    /// Close codes and errors that ended sessions.
    pub endings: Vec<String>,
    /// Message ids in arrival order (first arrivals only).
    pub ids: Vec<String>,
}

pub struct Device {
    log: Arc<Mutex<DeviceLog>>,
    changed: Arc<Notify>,
    task: JoinHandle<()>,
}

/// An ack sent, and when.
#[derive(Clone, Copy)]
struct Sent {
    seq: u64,
    at: Instant,
}

impl Device {
    /// Starts the device on `urls` (ws URLs of nodes) with `token` (it must name a device, so
    /// that the server keeps its cursor). Acks older than `ack_grace` at a disconnect count as
    /// recorded by the server.
    pub fn start(urls: Vec<String>, token: String, ack_grace: Duration) -> Self {
        let log = Arc::new(Mutex::new(DeviceLog::default()));
        let changed = Arc::new(Notify::new());
        let (task_log, task_changed) = (log.clone(), changed.clone());
        let task = tokio::spawn(async move {
            let mut acks: Vec<Sent> = Vec::new();
            let mut backstop = 0u64;
            for attempt in 0usize.. {
                let url = format!("{}?token={token}", urls[attempt % urls.len()]);
                let Ok(Ok((mut ws, _))) =
                    tokio::time::timeout(Duration::from_secs(5), tokio_tungstenite::connect_async(url.as_str())).await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                task_log.lock().unwrap_or_else(|e| e.into_inner()).connections += 1;
                let ending = loop {
                    let Some(frame) = ws.next().await else { break "ended".to_owned() };
                    let text = match frame {
                        Ok(Message::Text(t)) => t,
                        Ok(Message::Close(c)) => {
                            break format!("close {}", c.map(|c| u16::from(c.code)).unwrap_or(1005));
                        }
                        Ok(_) => continue,
                        Err(e) => break format!("error {e}"),
                    };
                    let Ok(v) = serde_json::from_str::<Value>(text.as_str()) else { continue };
                    let Some(seq) = v["seq"].as_u64().filter(|_| v["type"] == "message") else { continue };
                    {
                        let mut log = task_log.lock().unwrap_or_else(|e| e.into_inner());
                        if seq <= log.last {
                            log.duplicates.push((seq, backstop));
                        } else {
                            if seq != log.last + 1 {
                                let last = log.last;
                                log.gaps.push((last, seq));
                            }
                            log.last = seq;
                            log.ids.push(v["id"].as_str().unwrap_or_default().to_owned());
                        }
                    }
                    task_changed.notify_waiters();
                    if ws.send(Message::text(json!({"type": "ack", "seq": seq}).to_string())).await.is_err() {
                        break "ack failed".to_owned();
                    }
                    acks.push(Sent { seq, at: Instant::now() });
                };
                // What the server must have recorded by now: acks older than the grace.
                let now = Instant::now();
                backstop = acks
                    .iter()
                    .filter(|a| now.duration_since(a.at) >= ack_grace)
                    .map(|a| a.seq)
                    .max()
                    .unwrap_or(backstop)
                    .max(backstop);
                acks.retain(|a| now.duration_since(a.at) < ack_grace);
                task_log.lock().unwrap_or_else(|e| e.into_inner()).endings.push(ending);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        });
        Self { log, changed, task }
    }

    /// A snapshot of what the device saw.
    pub fn log(&self) -> DeviceLog {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Waits until the device has received `seq` (panics after `within`).
    pub async fn wait_for(&self, seq: u64, within: Duration) {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let changed = self.changed.notified();
            if self.log().last >= seq {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                let log = self.log();
                panic!("device reached seq {} of {seq} in {within:?}: {log:?}", log.last);
            }
        }
    }

    /// Checks the guarantees: nothing missing, nothing out of order, and duplicates only above
    /// what the server had surely recorded as acked.
    pub fn assert_guarantees(&self, expected_last: u64) {
        let log = self.log();
        assert_eq!(log.last, expected_last, "{log:?}");
        assert!(log.gaps.is_empty(), "gaps: {:?}", log.gaps);
        for (seq, acked) in &log.duplicates {
            assert!(seq > acked, "seq {seq} arrived again although {acked} was acked long before");
        }
    }
}

impl Drop for Device {
    fn drop(&mut self) {
        self.task.abort();
    }
}
