//! Publishing load: envelopes (SPEC §5) sent over HTTP (`POST /v1/publish` on a node's admin
//! API, accepted on `202`) or over AMQP (exchange `pushgate.publish`, routing key the target user
//! or channel, `application/json`, persistent, mandatory, accepted on the publisher confirm), at
//! a steady rate with a bounded number in flight. Every publish is timed (send → 202 / confirm)
//! and counted; accepted durable messages are entered in a [`Ledger`] per receiving session, so
//! that the end of a run can tell which ones never arrived. A peer server (`--server peer`) gets
//! no envelope: its broadcasts are the bare payload, POSTed to its publish URL.

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

use anyhow::{Context as _, bail};
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
    options::{
        BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
    },
    types::FieldTable,
};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet, time::Instant};

use crate::stats::{Histogram, Summary};

/// How publishes travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Via {
    /// `POST /v1/publish` on the admin API of a node.
    Http,
    /// The AMQP exchange the cluster dispatcher consumes (`--amqp-url`, `--amqp-exchange`).
    Amqp,
}

#[derive(Debug, Clone, clap::Args)]
pub struct PublishArgs {
    /// How publishes are sent: http (the nodes' admin API) or amqp (the exchange the cluster
    /// dispatcher consumes).
    #[arg(long = "publish-via", value_enum, default_value = "http")]
    pub via: Via,
    /// AMQP broker, for --publish-via amqp.
    #[arg(long, env = "PUSHGATE_AMQP_URL", default_value = "amqp://guest:guest@127.0.0.1:5672/%2f")]
    pub amqp_url: String,
    /// AMQP exchange to publish to.
    #[arg(long, default_value = "pushgate.publish")]
    pub amqp_exchange: String,
    /// Publishes in flight at most (HTTP requests, or AMQP messages waiting for their confirm);
    /// when all are taken the schedule waits and the run reports it fell behind.
    #[arg(long, default_value_t = 256)]
    pub max_in_flight: usize,
    /// A publish not answered (202 or confirm) within this counts as an error.
    #[arg(long, default_value = "10s")]
    pub publish_timeout: humantime::Duration,
}

impl Default for PublishArgs {
    fn default() -> Self {
        Self {
            via: Via::Http,
            amqp_url: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
            amqp_exchange: "pushgate.publish".into(),
            max_in_flight: 256,
            publish_timeout: Duration::from_secs(10).into(),
        }
    }
}

/// The envelope of a durable (or not) message to some users.
pub fn envelope_users(id: &str, users: &[String], data: Value, persist: bool) -> Value {
    json!({"id": id, "to": {"users": users}, "data": data, "persist": persist})
}

/// The envelope of a channel message.
pub fn envelope_channel(id: &str, channel: &str, data: Value) -> Value {
    json!({"id": id, "to": {"channel": channel}, "data": data})
}

/// The envelope of a broadcast.
pub fn envelope_all(id: &str, data: Value) -> Value {
    json!({"id": id, "to": {"all": true}, "data": data})
}

/// The AMQP routing key of an envelope: the (first) target user, the channel, or `all`.
pub fn routing_key(envelope: &Value) -> String {
    let to = &envelope["to"];
    if let Some(user) = to["users"].get(0).and_then(Value::as_str) {
        user.to_owned()
    } else if let Some(channel) = to["channel"].as_str() {
        channel.to_owned()
    } else {
        "all".to_owned()
    }
}

/// AMQP properties of a publish: JSON, persistent (delivery mode 2), the envelope id as the
/// message id.
pub fn amqp_properties(message_id: Option<&str>) -> BasicProperties {
    let properties = BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2);
    match message_id {
        Some(id) => properties.with_message_id(id.into()),
        None => properties,
    }
}

/// One publish.
#[derive(Debug, Clone)]
pub struct Job {
    /// Admin API base (HTTP).
    pub admin: String,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    /// Sessions (global indices) that get it as a durable message.
    pub durable_to: Vec<usize>,
}

impl Job {
    pub fn new(admin: &str, envelope: &Value, durable_to: Vec<usize>) -> Self {
        Self {
            admin: admin.to_owned(),
            routing_key: routing_key(envelope),
            message_id: envelope["id"].as_str().map(str::to_owned),
            body: envelope.to_string().into_bytes(),
            durable_to,
        }
    }

    /// A broadcast to a peer server: the payload alone, with no envelope, admin API or routing
    /// (the peer publisher knows where it goes).
    pub fn peer(payload: &Value) -> Self {
        Self {
            admin: String::new(),
            routing_key: String::new(),
            message_id: None,
            body: payload.to_string().into_bytes(),
            durable_to: Vec::new(),
        }
    }
}

/// What became of one publish.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Accepted {
        us: u64,
        duplicate: bool,
    },
    /// An answer that is not acceptance: HTTP status, or AMQP 312 (unroutable) / 0 (nack).
    Refused {
        code: u16,
        reason: String,
    },
    Error(String),
}

/// An AMQP publisher with publisher confirms on one channel.
pub struct AmqpPublisher {
    connection: Connection,
    channel: Channel,
    exchange: String,
}

impl AmqpPublisher {
    pub async fn connect(url: &str, exchange: &str) -> anyhow::Result<Self> {
        let connection = Connection::connect(url, ConnectionProperties::default())
            .await
            .with_context(|| format!("connecting to AMQP at {}", pushgate_dispatcher::redact(url)))?;
        let channel = connection.create_channel().await.context("opening an AMQP channel")?;
        channel.confirm_select(ConfirmSelectOptions::default()).await.context("enabling publisher confirms")?;
        Ok(Self { connection, channel, exchange: exchange.to_owned() })
    }

    /// Declares the exchange (durable) and, if named, a durable queue bound to it with `#` — to
    /// try the publisher against a broker with no dispatcher. Not for `pushgate.publish` in a
    /// cluster: the dispatcher declares that one.
    pub async fn declare(&self, kind: ExchangeKind, queue: Option<&str>) -> anyhow::Result<()> {
        let durable = ExchangeDeclareOptions { durable: true, ..ExchangeDeclareOptions::default() };
        self.channel
            .exchange_declare(self.exchange.as_str().into(), kind, durable, FieldTable::default())
            .await
            .with_context(|| format!("declaring exchange {}", self.exchange))?;
        if let Some(queue) = queue {
            self.channel
                .queue_declare(queue.into(), QueueDeclareOptions::durable(), FieldTable::default())
                .await
                .with_context(|| format!("declaring queue {queue}"))?;
            self.channel
                .queue_bind(
                    queue.into(),
                    self.exchange.as_str().into(),
                    "#".into(),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .with_context(|| format!("binding queue {queue}"))?;
        }
        Ok(())
    }

    /// Publishes and waits for the broker's confirm.
    pub async fn publish(&self, routing_key: &str, message_id: Option<&str>, body: &[u8]) -> Outcome {
        let options = BasicPublishOptions { mandatory: true, immediate: false };
        let started = Instant::now();
        let confirm = match self
            .channel
            .basic_publish(
                self.exchange.as_str().into(),
                routing_key.into(),
                options,
                body,
                amqp_properties(message_id),
            )
            .await
        {
            Ok(confirm) => confirm,
            Err(e) => return Outcome::Error(format!("amqp publish: {e}")),
        };
        match confirm.await {
            Ok(Confirmation::Ack(None)) => {
                Outcome::Accepted { us: started.elapsed().as_micros() as u64, duplicate: false }
            }
            Ok(Confirmation::Ack(Some(returned)) | Confirmation::Nack(Some(returned))) => Outcome::Refused {
                code: returned.reply_code,
                reason: format!("returned: {}", returned.reply_text.as_str()),
            },
            Ok(Confirmation::Nack(None)) => Outcome::Refused { code: 0, reason: "nack".into() },
            Ok(Confirmation::NotRequested) => Outcome::Error("confirms not enabled".into()),
            Err(e) => Outcome::Error(format!("amqp confirm: {e}")),
        }
    }

    pub async fn close(&self) {
        let _ = self.connection.close(200, "bye".into()).await;
    }
}

enum Transport {
    Http {
        client: reqwest::Client,
        api_key: Option<String>,
    },
    /// Boxed: the AMQP channel and its confirm state dwarf the HTTP client handle.
    Amqp(Box<AmqpPublisher>),
    /// A peer server's publish endpoint: the job's body POSTed to `url`.
    Peer {
        client: reqwest::Client,
        url: String,
    },
}

/// Sends jobs over one transport, at most `max_in_flight` at once, each within the timeout.
pub struct Publisher {
    transport: Transport,
    in_flight: Arc<Semaphore>,
    timeout: Duration,
    pub via: Via,
}

impl Publisher {
    pub async fn new(args: &PublishArgs, api_key: Option<String>) -> anyhow::Result<Self> {
        if args.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        let transport = match args.via {
            Via::Http => Transport::Http { client: http_client(args)?, api_key },
            Via::Amqp => Transport::Amqp(Box::new(AmqpPublisher::connect(&args.amqp_url, &args.amqp_exchange).await?)),
        };
        Ok(Self::over(transport, args, args.via))
    }

    /// Publishes to a peer server: each job's body POSTed to `url`.
    pub fn peer(args: &PublishArgs, url: &str) -> anyhow::Result<Self> {
        if args.max_in_flight == 0 {
            bail!("--max-in-flight must be at least 1");
        }
        let transport = Transport::Peer { client: http_client(args)?, url: url.to_owned() };
        Ok(Self::over(transport, args, Via::Http))
    }

    fn over(transport: Transport, args: &PublishArgs, via: Via) -> Self {
        let timeout = Duration::from(args.publish_timeout);
        Self { transport, in_flight: Arc::new(Semaphore::new(args.max_in_flight)), timeout, via }
    }

    pub fn amqp(&self) -> Option<&AmqpPublisher> {
        match &self.transport {
            Transport::Amqp(a) => Some(a),
            Transport::Http { .. } | Transport::Peer { .. } => None,
        }
    }

    /// Sends one job and waits for its answer (no in-flight limit: see [`paced`]).
    pub async fn send(&self, job: &Job) -> Outcome {
        let started = Instant::now();
        let sent = async {
            match &self.transport {
                Transport::Http { client, api_key } => {
                    let mut request = client.post(format!("{}/v1/publish", job.admin));
                    if let Some(key) = api_key {
                        request = request.bearer_auth(key);
                    }
                    post_json(request, &job.body, started, |status| status == reqwest::StatusCode::ACCEPTED).await
                }
                Transport::Amqp(amqp) => amqp.publish(&job.routing_key, job.message_id.as_deref(), &job.body).await,
                // Peers answer 200, 201 or 202 (Nchan: 201 with subscribers, 202 without).
                Transport::Peer { client, url } => {
                    post_json(client.post(url), &job.body, started, |status| status.is_success()).await
                }
            }
        };
        tokio::time::timeout(self.timeout, sent).await.unwrap_or_else(|_| Outcome::Error("timeout".into()))
    }

    pub async fn close(&self) {
        if let Transport::Amqp(a) = &self.transport {
            a.close().await;
        }
    }
}

fn http_client(args: &PublishArgs) -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .timeout(Duration::from(args.publish_timeout))
        .pool_max_idle_per_host(args.max_in_flight)
        .build()
        .context("building the HTTP client")
}

/// POSTs a JSON body; `accepted` tells which statuses accept it (a JSON answer may say
/// `"duplicate": true`).
async fn post_json(
    request: reqwest::RequestBuilder,
    body: &[u8],
    started: Instant,
    accepted: fn(reqwest::StatusCode) -> bool,
) -> Outcome {
    match request.header("content-type", "application/json").body(body.to_vec()).send().await {
        Ok(response) if accepted(response.status()) => {
            let us = started.elapsed().as_micros() as u64;
            let body: Value = response.json().await.unwrap_or(Value::Null);
            Outcome::Accepted { us, duplicate: body["duplicate"] == true }
        }
        Ok(response) => {
            let code = response.status().as_u16();
            let mut reason = response.text().await.unwrap_or_default();
            reason.truncate(300);
            Outcome::Refused { code, reason }
        }
        Err(e) if e.is_timeout() => Outcome::Error("timeout".into()),
        Err(e) if e.is_connect() => Outcome::Error("connect".into()),
        Err(e) => Outcome::Error(format!("http: {e}")),
    }
}

/// Accepted durable messages per receiving session (global index).
#[derive(Debug)]
pub struct Ledger {
    accepted: Vec<AtomicU64>,
}

impl Ledger {
    pub fn new(sessions: usize) -> Self {
        Self { accepted: (0..sessions).map(|_| AtomicU64::new(0)).collect() }
    }

    pub fn add(&self, session: usize) {
        if let Some(a) = self.accepted.get(session) {
            a.fetch_add(1, Relaxed);
        }
    }

    pub fn get(&self, session: usize) -> u64 {
        self.accepted.get(session).map_or(0, |a| a.load(Relaxed))
    }

    pub fn snapshot(&self) -> Vec<u64> {
        self.accepted.iter().map(|a| a.load(Relaxed)).collect()
    }

    pub fn total(&self) -> u64 {
        self.accepted.iter().map(|a| a.load(Relaxed)).sum()
    }
}

/// Counters of everything published in a run.
#[derive(Debug, Default)]
pub struct PublishStats {
    pub published: AtomicU64,
    pub accepted: AtomicU64,
    pub duplicates: AtomicU64,
    pub refused: AtomicU64,
    pub errors: AtomicU64,
    /// Durable deliveries accepted (a message to k users counts k).
    pub durable_accepted: AtomicU64,
    inner: Mutex<PublishDetail>,
}

#[derive(Debug, Default)]
struct PublishDetail {
    answer_us: Histogram,
    refusals: BTreeMap<String, u64>,
    errors: BTreeMap<String, u64>,
    /// Largest delay of a publish behind its schedule, µs.
    behind_max_us: u64,
}

/// The report form of [`PublishStats`].
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PublishSummary {
    pub via: Option<Via>,
    pub published: u64,
    pub accepted: u64,
    pub duplicates: u64,
    pub refused: u64,
    pub errors: u64,
    pub refusals: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Publish → 202 / confirm.
    pub answer: Summary,
    pub behind_schedule_max_ms: f64,
}

impl PublishStats {
    pub fn record(&self, job: &Job, outcome: &Outcome, ledger: Option<&Ledger>) {
        let mut detail = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        match outcome {
            Outcome::Accepted { us, duplicate } => {
                self.accepted.fetch_add(1, Relaxed);
                detail.answer_us.record(*us);
                if *duplicate {
                    self.duplicates.fetch_add(1, Relaxed);
                } else {
                    self.durable_accepted.fetch_add(job.durable_to.len() as u64, Relaxed);
                    if let Some(ledger) = ledger {
                        for &s in &job.durable_to {
                            ledger.add(s);
                        }
                    }
                }
            }
            Outcome::Refused { code, reason } => {
                self.refused.fetch_add(1, Relaxed);
                let mut key = format!("{code} {reason}");
                key.truncate(120);
                bump(&mut detail.refusals, key);
            }
            Outcome::Error(kind) => {
                self.errors.fetch_add(1, Relaxed);
                let mut key = kind.clone();
                key.truncate(120);
                bump(&mut detail.errors, key);
            }
        }
    }

    fn behind(&self, us: u64) {
        let mut detail = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        detail.behind_max_us = detail.behind_max_us.max(us);
    }

    pub fn answer_histogram(&self) -> Histogram {
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner).answer_us.clone()
    }

    pub fn summary(&self, via: Option<Via>) -> PublishSummary {
        let detail = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        PublishSummary {
            via,
            published: self.published.load(Relaxed),
            accepted: self.accepted.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            refused: self.refused.load(Relaxed),
            errors: self.errors.load(Relaxed),
            refusals: detail.refusals.clone(),
            error_kinds: detail.errors.clone(),
            answer: detail.answer_us.summary(),
            behind_schedule_max_ms: detail.behind_max_us as f64 / 1000.0,
        }
    }
}

/// Counts under `key`, or under `other` once 50 distinct keys are there (bounded memory).
fn bump(map: &mut BTreeMap<String, u64>, key: String) {
    let key = if map.len() >= 50 && !map.contains_key(&key) { "other".to_owned() } else { key };
    *map.entry(key).or_default() += 1;
}

/// Sends one job with an in-flight slot (waiting for one), records it, and returns its outcome.
pub async fn send_one(publisher: &Publisher, job: &Job, stats: &PublishStats, ledger: Option<&Ledger>) -> Outcome {
    let _permit = publisher.in_flight.acquire().await;
    stats.published.fetch_add(1, Relaxed);
    let outcome = publisher.send(job).await;
    stats.record(job, &outcome, ledger);
    outcome
}

/// The schedule of a paced stream.
#[derive(Debug, Clone, Copy)]
pub struct Pace {
    /// Publishes per second.
    pub rate: f64,
    pub duration: Duration,
    /// At most this many.
    pub limit: Option<u64>,
}

/// A paced stream: `rate` publishes per second for `duration` (and at most `limit`), each made by
/// `make(n)`. It waits for the last answers (each bounded by the publish timeout) before it
/// returns the number sent. Stops early when `stop` turns true.
pub async fn paced(
    publisher: Arc<Publisher>,
    pace: Pace,
    mut make: impl FnMut(u64) -> Job,
    stats: Arc<PublishStats>,
    ledger: Option<Arc<Ledger>>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> u64 {
    let Pace { rate, duration, limit } = pace;
    let started = Instant::now();
    let end = started + duration;
    let interval = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let mut tasks = JoinSet::new();
    let mut n = 0u64;
    loop {
        if limit.is_some_and(|l| n >= l) || *stop.borrow() {
            break;
        }
        let due = started + interval.mul_f64(n as f64);
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due).await;
        let Ok(permit) = publisher.in_flight.clone().acquire_owned().await else { break };
        let behind = Instant::now().saturating_duration_since(due);
        if behind > Duration::from_millis(10) {
            stats.behind(behind.as_micros() as u64);
        }
        if Instant::now() >= end {
            break;
        }
        let job = make(n);
        stats.published.fetch_add(1, Relaxed);
        let (publisher, stats, ledger) = (publisher.clone(), stats.clone(), ledger.clone());
        tasks.spawn(async move {
            let outcome = publisher.send(&job).await;
            stats.record(&job, &outcome, ledger.as_deref());
            drop(permit);
        });
        while tasks.try_join_next().is_some() {}
        n += 1;
    }
    while tasks.join_next().await.is_some() {}
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelopes_follow_the_spec_and_route_by_target() {
        let users = envelope_users("m1", &["u1".into(), "u2".into()], json!({"sent_us": 5}), true);
        assert_eq!(users, json!({"id": "m1", "to": {"users": ["u1", "u2"]}, "data": {"sent_us": 5}, "persist": true}));
        assert_eq!(routing_key(&users), "u1");
        let channel = envelope_channel("m2", "news", json!("hello"));
        assert_eq!(channel["to"], json!({"channel": "news"}));
        assert!(channel.get("persist").is_none());
        assert_eq!(routing_key(&channel), "news");
        let all = envelope_all("m3", json!(1));
        assert_eq!(all["to"], json!({"all": true}));
        assert_eq!(routing_key(&all), "all");
        let job = Job::new("http://a", &users, vec![3, 4]);
        assert_eq!((job.routing_key.as_str(), job.message_id.as_deref()), ("u1", Some("m1")));
        assert_eq!(serde_json::from_slice::<Value>(&job.body).unwrap(), users);
        // A peer gets the payload alone.
        let payload = json!({"sent_us": 5, "kind": "broadcast", "track": "b0"});
        let job = Job::peer(&payload);
        assert_eq!(serde_json::from_slice::<Value>(&job.body).unwrap(), payload);
        assert!(job.durable_to.is_empty() && job.message_id.is_none());
    }

    #[test]
    fn amqp_publishes_are_json_persistent_and_carry_the_id() {
        let p = amqp_properties(Some("m1"));
        assert_eq!(p.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
        assert_eq!(*p.delivery_mode(), Some(2));
        assert_eq!(p.message_id().as_ref().map(|s| s.as_str()), Some("m1"));
        assert_eq!(*amqp_properties(None).message_id(), None);
    }

    #[test]
    fn outcomes_are_counted_and_accepted_durable_messages_entered_per_session() {
        let stats = PublishStats::default();
        let ledger = Ledger::new(4);
        let job = Job::new("http://a", &envelope_users("x", &["a".into()], json!(1), true), vec![1, 3]);
        stats.record(&job, &Outcome::Accepted { us: 1500, duplicate: false }, Some(&ledger));
        stats.record(&job, &Outcome::Accepted { us: 2500, duplicate: true }, Some(&ledger));
        stats.record(&job, &Outcome::Refused { code: 503, reason: "down".into() }, Some(&ledger));
        stats.record(&job, &Outcome::Error("timeout".into()), Some(&ledger));
        assert_eq!(ledger.snapshot(), vec![0, 1, 0, 1]);
        assert_eq!((ledger.total(), ledger.get(1), ledger.get(99)), (2, 1, 0));
        let s = stats.summary(Some(Via::Http));
        assert_eq!((s.accepted, s.duplicates, s.refused, s.errors), (2, 1, 1, 1));
        assert_eq!(s.refusals.get("503 down"), Some(&1));
        assert_eq!(s.answer.count, 2);
        assert_eq!(stats.durable_accepted.load(Relaxed), 2);
    }

    /// Against the local RabbitMQ: declares a test exchange and queue, publishes with confirms,
    /// and reads the messages back (`ops/services.sh` starts RabbitMQ before the tests run).
    #[tokio::test]
    async fn amqp_publisher_reaches_a_test_exchange() {
        use futures_util::StreamExt as _;
        use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions};
        let url = std::env::var("PUSHGATE_AMQP_URL").unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".into());
        let exchange = format!("pushgate.loadtest.test.{}", crate::now_us());
        let queue = format!("{exchange}.q");
        let publisher = AmqpPublisher::connect(&url, &exchange).await.unwrap();
        publisher.declare(ExchangeKind::Topic, Some(&queue)).await.unwrap();
        for n in 0..100 {
            let envelope = envelope_users(&format!("t-{n}"), &[format!("user-{n}")], json!({"n": n}), true);
            let job = Job::new("", &envelope, vec![]);
            let outcome = publisher.publish(&job.routing_key, job.message_id.as_deref(), &job.body).await;
            assert!(matches!(outcome, Outcome::Accepted { .. }), "{outcome:?}");
        }
        let channel = publisher.connection.create_channel().await.unwrap();
        let mut consumer = channel
            .basic_consume(queue.as_str().into(), "t".into(), BasicConsumeOptions::default(), FieldTable::default())
            .await
            .unwrap();
        for n in 0..100 {
            let delivery =
                tokio::time::timeout(Duration::from_secs(5), consumer.next()).await.unwrap().unwrap().unwrap();
            assert_eq!(delivery.routing_key.as_str(), format!("user-{n}"));
            assert_eq!(delivery.properties.content_type().as_ref().unwrap().as_str(), "application/json");
            assert_eq!(*delivery.properties.delivery_mode(), Some(2));
            let body: Value = serde_json::from_slice(&delivery.data).unwrap();
            assert_eq!(body["data"]["n"], n);
            delivery.ack(BasicAckOptions::default()).await.unwrap();
        }
        // Unroutable (no binding for this exchange's other name): returned, not lost silently.
        let lonely = AmqpPublisher::connect(&url, &format!("{exchange}.unbound")).await.unwrap();
        lonely.declare(ExchangeKind::Topic, None).await.unwrap();
        let outcome = lonely.publish("nobody", None, b"{}").await;
        assert!(matches!(outcome, Outcome::Refused { code: 312, .. }), "{outcome:?}");
        channel.queue_delete(queue.as_str().into(), QueueDeleteOptions::default()).await.unwrap();
        for e in [exchange.clone(), format!("{exchange}.unbound")] {
            channel.exchange_delete(e.as_str().into(), Default::default()).await.unwrap();
        }
        publisher.close().await;
        lonely.close().await;
    }
}
