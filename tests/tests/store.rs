//! The durable store against real SQLite and real MariaDB, the same scenarios for both:
//! consecutive seqs, idempotency, a thousand receivers, cursors, expiry and purge, concurrent
//! writers, the session log, a batch larger than one statement may be.
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use futures_util::future::join_all;
use pushgate_dispatcher::{
    Message,
    store::{Ack, AnyStore, Cursors, LOOKUP_CHUNK, SessionEvent, SessionEventKind, Store},
};
use pushgate_protocol::{DeviceId, Envelope, EnvelopeLimits, UserId, now_ms};
use pushgate_tests::TestDatabase;
use serde_json::json;

const DAY: Duration = Duration::from_secs(24 * 3600);

/// A store of the given kind, with whatever keeps it alive.
struct Fixture {
    store: AnyStore,
    url: String,
    _db: Option<TestDatabase>,
    _dir: Option<tempfile::TempDir>,
}

async fn fixture(kind: &str) -> Fixture {
    match kind {
        "sqlite" => {
            let dir = tempfile::tempdir().unwrap();
            let url = format!("sqlite://{}", dir.path().join("inbox.db").display());
            Fixture { store: AnyStore::open(&url, 4).await.unwrap(), url, _db: None, _dir: Some(dir) }
        }
        _ => {
            let db = TestDatabase::create().await;
            Fixture { store: AnyStore::open(&db.url, 8).await.unwrap(), url: db.url.clone(), _db: Some(db), _dir: None }
        }
    }
}

/// One session's cursors, looked up alone.
async fn cursors(store: &AnyStore, user: &str, device: Option<&str>) -> Cursors {
    store.cursors(&[(user, device)]).await.unwrap().pop().unwrap()
}

/// A user's whole inbox, read in pages of `page`, as the messages' data; checks that the seqs
/// run 1, 2, 3… with no gap.
async fn whole_inbox(store: &AnyStore, user: &str, page: u32) -> Vec<serde_json::Value> {
    let mut all = Vec::new();
    loop {
        let entries = store.inbox(user, all.len() as u64, None, page, now_ms()).await.unwrap();
        if entries.is_empty() {
            return all;
        }
        for entry in entries {
            assert_eq!(entry.seq, all.len() as u64 + 1);
            all.push(serde_json::from_str(entry.data.get()).unwrap());
        }
    }
}

fn message(envelope: serde_json::Value, ts: u64) -> Message {
    Message::accept(Envelope::decode(envelope.to_string().as_bytes(), &EnvelopeLimits::default()).unwrap(), ts)
}

fn to_user(user: &str, n: u64) -> Message {
    message(json!({"to": {"users": [user]}, "data": {"n": n}}), now_ms())
}

macro_rules! both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name("sqlite").await })*
        }
        mod mariadb {
            $(#[tokio::test] async fn $name() { super::$name("mariadb").await })*
        }
    };
}

both_stores!(
    ten_thousand_messages_get_consecutive_seqs,
    publisher_ids_are_stored_once_within_the_window,
    one_envelope_reaches_a_thousand_inboxes,
    cursors_move_forward_per_device_and_user,
    cursors_of_many_sessions_come_back_in_their_order,
    cursors_of_ids_at_the_contracts_edges_are_found,
    expired_messages_are_never_read_and_are_purged,
    concurrent_writers_never_reuse_or_skip_a_seq,
    the_session_log_records_opens_and_closes,
    a_batch_larger_than_a_statement_may_be_is_stored,
);

/// 400 messages of 60,000 bytes each (24 MB) in one append: more than MariaDB takes in one
/// statement (`max_allowed_packet`, 16 MiB by default), which refused the batch at every retry.
async fn a_batch_larger_than_a_statement_may_be_is_stored(kind: &str) {
    const MESSAGES: u64 = 400;
    let f = fixture(kind).await;
    let big = "x".repeat(60_000);
    let batch: Vec<Message> =
        (1..=MESSAGES).map(|n| message(json!({"to": {"users": ["u1"]}, "data": [n, big]}), now_ms())).collect();
    let appended = f.store.append(&batch, now_ms(), DAY).await.unwrap();
    assert_eq!(appended.len() as u64, MESSAGES);
    let inbox = whole_inbox(&f.store, "u1", 100).await;
    assert_eq!(inbox.len() as u64, MESSAGES);
    for (n, data) in (1..).zip(inbox) {
        assert_eq!(data, json!([n, big]));
    }
}

async fn ten_thousand_messages_get_consecutive_seqs(kind: &str) {
    let f = fixture(kind).await;
    for chunk in (1..=10_000u64).collect::<Vec<_>>().chunks(500) {
        let batch: Vec<Message> = chunk.iter().map(|n| to_user("u1", *n)).collect();
        let appended = f.store.append(&batch, now_ms(), DAY).await.unwrap();
        for (a, n) in appended.iter().zip(chunk) {
            assert_eq!(a.seqs, vec![(UserId::new("u1").unwrap(), *n)]);
        }
    }
    let inbox = whole_inbox(&f.store, "u1", 1000).await;
    assert_eq!(inbox.len(), 10_000);
    for (n, data) in (1u64..).zip(inbox) {
        assert_eq!(data["n"], n);
    }
    // Bounded reads: `before` stops short.
    let page = f.store.inbox("u1", 100, Some(105), 1000, now_ms()).await.unwrap();
    assert_eq!(page.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![101, 102, 103, 104]);
    assert_eq!(cursors(&f.store, "u1", None).await.last_seq, 10_000);
}

async fn publisher_ids_are_stored_once_within_the_window(kind: &str) {
    let f = fixture(kind).await;
    let now = now_ms();
    let keyed = |n: u64| message(json!({"id": "order-42", "to": {"users": ["u"]}, "data": n}), now);
    let first = f.store.append(&[keyed(1), keyed(2)], now, DAY).await.unwrap();
    assert!(!first[0].duplicate && first[1].duplicate, "the second in the same batch is a duplicate");
    let again = f.store.append(&[keyed(3)], now + 1000, DAY).await.unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].seqs, first[0].seqs, "a duplicate carries the first copy's seqs");
    assert_eq!(f.store.inbox("u", 0, None, 10, now).await.unwrap().len(), 1);
    // After the window the id may be used again.
    let later = f.store.append(&[keyed(4)], now + DAY.as_millis() as u64 + 1000, DAY).await.unwrap();
    assert!(!later[0].duplicate);
    assert_eq!(later[0].seqs[0].1, 2);
    // Messages without a publisher id are never duplicates of each other.
    let plain = f.store.append(&[to_user("u", 1), to_user("u", 1)], now, DAY).await.unwrap();
    assert!(plain.iter().all(|a| !a.duplicate));
}

async fn one_envelope_reaches_a_thousand_inboxes(kind: &str) {
    let f = fixture(kind).await;
    let users: Vec<String> = (0..1000).map(|i| format!("user-{i}")).collect();
    let m = message(json!({"to": {"users": users}, "data": "all of you"}), now_ms());
    let appended = f.store.append(&[m.clone(), m], now_ms(), DAY).await.unwrap();
    assert_eq!(appended[0].seqs.len(), 1000);
    assert!(appended[0].seqs.iter().all(|(_, seq)| *seq == 1));
    assert!(appended[1].seqs.iter().all(|(_, seq)| *seq == 2));
    for user in ["user-0", "user-500", "user-999"] {
        let inbox = f.store.inbox(user, 0, None, 10, now_ms()).await.unwrap();
        assert_eq!(inbox.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(inbox[0].data.get(), r#""all of you""#);
    }
}

async fn cursors_move_forward_per_device_and_user(kind: &str) {
    let f = fixture(kind).await;
    let batch: Vec<Message> = (1..=10).map(|n| to_user("u", n)).collect();
    f.store.append(&batch, now_ms(), DAY).await.unwrap();
    let u = UserId::new("u").unwrap();
    let (a, b) = (DeviceId::new("phone").unwrap(), DeviceId::new("laptop").unwrap());
    let acks = vec![
        Ack { user: u.clone(), device: Some(a.clone()), seq: 5 },
        Ack { user: u.clone(), device: Some(b.clone()), seq: 3 },
        Ack { user: u.clone(), device: Some(a.clone()), seq: 4 },
    ];
    f.store.save_acks(&acks, now_ms()).await.unwrap();
    let phone = cursors(&f.store, "u", Some("phone")).await;
    assert_eq!((phone.device, phone.user_acked, phone.last_seq), (Some(5), 5, 10));
    assert_eq!(cursors(&f.store, "u", Some("laptop")).await.device, Some(3));
    // A new device starts after what any device acked.
    let fresh = cursors(&f.store, "u", Some("tablet")).await;
    assert_eq!((fresh.device, fresh.resume_from(None)), (None, 5));
    // Cursors never move back.
    f.store.save_acks(&[Ack { user: u.clone(), device: Some(a), seq: 2 }], now_ms()).await.unwrap();
    assert_eq!(cursors(&f.store, "u", Some("phone")).await.device, Some(5));
    // A session without a device moves the user's cursor only.
    f.store.save_acks(&[Ack { user: u, device: None, seq: 9 }], now_ms()).await.unwrap();
    let c = cursors(&f.store, "u", Some("laptop")).await;
    assert_eq!((c.device, c.user_acked), (Some(3), 9));
    assert_eq!(cursors(&f.store, "nobody", None).await.resume_from(None), 0);
}

async fn cursors_of_many_sessions_come_back_in_their_order(kind: &str) {
    let f = fixture(kind).await;
    // Users 0..40 get n messages each (user-0 none); odd users' phones ack half of theirs.
    let batch: Vec<Message> = (1..40u64).flat_map(|u| (0..u).map(move |n| to_user(&format!("user-{u}"), n))).collect();
    f.store.append(&batch, now_ms(), DAY).await.unwrap();
    let acks: Vec<Ack> = (1..40u64)
        .filter(|u| u % 2 == 1)
        .map(|u| Ack {
            user: UserId::new(&format!("user-{u}")).unwrap(),
            device: Some(DeviceId::new("phone").unwrap()),
            seq: u.div_ceil(2),
        })
        .collect();
    f.store.save_acks(&acks, now_ms()).await.unwrap();
    // More sessions than one query takes, unknown users, repeated users, users with and
    // without devices, a device that never acked: each answer matches its own lookup's.
    let users: Vec<String> = (0..LOOKUP_CHUNK as u64 + 60).map(|i| format!("user-{}", i % 45)).collect();
    let devices = [Some("phone"), None, Some("tablet")];
    let keys: Vec<(&str, Option<&str>)> = users.iter().enumerate().map(|(i, u)| (u.as_str(), devices[i % 3])).collect();
    let found = f.store.cursors(&keys).await.unwrap();
    assert_eq!(found.len(), keys.len());
    for ((user, device), got) in keys.iter().zip(&found) {
        assert_eq!(*got, cursors(&f.store, user, *device).await, "{user} {device:?}");
        let u: u64 = user.trim_start_matches("user-").parse().unwrap();
        let last = if u < 40 { u } else { 0 };
        let acked = if u % 2 == 1 && u < 40 { u.div_ceil(2) } else { 0 };
        let phone = (*device == Some("phone") && u % 2 == 1 && u < 40).then_some(u.div_ceil(2));
        assert_eq!((got.last_seq, got.user_acked, got.device), (last, acked, phone), "{user} {device:?}");
    }
    assert!(f.store.cursors(&[]).await.unwrap().is_empty());
}

/// The lookup passes its keys through JSON (`json_each`, `JSON_TABLE` with a 128-character
/// column): the longest id the contract allows and every punctuation mark it allows come back
/// whole, and ids that differ only in case stay apart.
async fn cursors_of_ids_at_the_contracts_edges_are_found(kind: &str) {
    let f = fixture(kind).await;
    let longest = "u".repeat(127) + "Z";
    let marks = "a_b.c:d@e/f-g";
    let device = "D".repeat(128);
    let users = [longest.as_str(), marks, "Case", "case"];
    for (i, user) in users.iter().enumerate() {
        let batch: Vec<Message> = (0..=i as u64).map(|n| to_user(user, n)).collect();
        f.store.append(&batch, now_ms(), DAY).await.unwrap();
        let ack = Ack { user: UserId::new(user).unwrap(), device: Some(DeviceId::new(&device).unwrap()), seq: 1 };
        f.store.save_acks(&[ack], now_ms()).await.unwrap();
    }
    let keys: Vec<(&str, Option<&str>)> = users.iter().map(|u| (*u, Some(device.as_str()))).collect();
    let found = f.store.cursors(&keys).await.unwrap();
    let seen: Vec<(u64, Option<u64>)> = found.iter().map(|c| (c.last_seq, c.device)).collect();
    assert_eq!(seen, vec![(1, Some(1)), (2, Some(1)), (3, Some(1)), (4, Some(1))]);
}

async fn expired_messages_are_never_read_and_are_purged(kind: &str) {
    let f = fixture(kind).await;
    let now = now_ms();
    let short = message(json!({"to": {"users": ["u"]}, "data": "short", "ttl_s": 1}), now - 5_000);
    let long = message(json!({"to": {"users": ["u"]}, "data": "long", "ttl_s": 3600}), now);
    f.store.append(&[short, long], now, DAY).await.unwrap();
    let inbox = f.store.inbox("u", 0, None, 10, now).await.unwrap();
    assert_eq!(inbox.iter().map(|e| e.seq).collect::<Vec<_>>(), vec![2], "seq 1 expired");
    let purged = f.store.purge(now, 0, 0).await.unwrap();
    assert_eq!((purged.inbox, purged.messages), (1, 1));
    assert_eq!(f.store.inbox("u", 0, None, 10, now).await.unwrap().len(), 1);
    // The head is kept: the next message continues the seq.
    let next = f.store.append(&[to_user("u", 3)], now, DAY).await.unwrap();
    assert_eq!(next[0].seqs[0].1, 3);
}

async fn concurrent_writers_never_reuse_or_skip_a_seq(kind: &str) {
    let f = fixture(kind).await;
    let store = &f.store;
    let results = join_all((0..4).map(|w| async move {
        let mut seqs = Vec::new();
        for i in 0..50 {
            let batch: Vec<Message> = (0..5).map(|j| to_user("shared", w * 1000 + i * 10 + j)).collect();
            let appended = loop {
                match store.append(&batch, now_ms(), DAY).await {
                    Ok(a) => break a,
                    Err(e) if e.is_transient() => continue,
                    Err(e) => panic!("{e}"),
                }
            };
            seqs.extend(appended.iter().map(|a| a.seqs[0].1));
        }
        seqs
    }))
    .await;
    let mut all: Vec<u64> = results.into_iter().flatten().collect();
    all.sort_unstable();
    assert_eq!(all, (1..=1000).collect::<Vec<_>>());
}

async fn the_session_log_records_opens_and_closes(kind: &str) {
    let f = fixture(kind).await;
    // 313 lines: a batch cut into statements of every size (250, 50, 10 and 1 rows), with and
    // without devices, opens and closes, a user id of digits only and a node name with quotes,
    // a backslash and a non-ASCII letter.
    let events: Vec<SessionEvent> = (0..313u64)
        .map(|i| SessionEvent {
            at_ms: now_ms() - 313 + i,
            kind: if i % 3 == 2 {
                SessionEventKind::Close { code: 4000 + (i % 7) as u16 }
            } else {
                SessionEventKind::Open
            },
            session: format!("{i:016x}"),
            node: format!("node \"{}\" \\ é", i % 2),
            user: UserId::new(&if i % 5 == 0 { "42".to_owned() } else { format!("user-{i}") }).unwrap(),
            device: (i % 4 != 0).then(|| DeviceId::new(&format!("dev.{i}")).unwrap()),
        })
        .collect();
    f.store.log_sessions(&events).await.unwrap();
    f.store.log_sessions(&[]).await.unwrap();
    let written = session_log(kind, &f.url).await;
    let expected: Vec<LogLine> = events
        .iter()
        .map(|e| {
            let device = e.device.as_ref().map(|d| d.as_str().to_owned());
            let code = e.kind.code().map(i32::from);
            (
                e.at_ms as i64,
                e.kind.name().to_owned(),
                e.session.clone(),
                e.node.clone(),
                e.user.as_str().to_owned(),
                device,
                code,
            )
        })
        .collect();
    assert_eq!(written.len(), expected.len(), "every line was written once");
    for (i, (line, want)) in written.iter().zip(&expected).enumerate() {
        assert_eq!(line, want, "line {i}, in the batch's order");
    }
    // The purge takes the lines older than its cut-off and keeps the rest.
    let purged = f.store.purge(now_ms(), 0, events[100].at_ms).await.unwrap();
    assert_eq!(purged.session_log, 100, "the lines before the cut-off go");
    assert_eq!(session_log(kind, &f.url).await, expected[100..], "the lines after it stay");
    let purged = f.store.purge(now_ms(), 0, now_ms() + 1).await.unwrap();
    assert_eq!(purged.session_log, 213, "every line is purged once old");
    assert!(session_log(kind, &f.url).await.is_empty());
    // Lines written after a purge that emptied the log are purged the same way.
    f.store.log_sessions(&events[..10]).await.unwrap();
    let purged = f.store.purge(now_ms(), 0, events[5].at_ms).await.unwrap();
    assert_eq!(purged.session_log, 5);
    assert_eq!(session_log(kind, &f.url).await, expected[5..10]);
}

/// One session log line as stored: at, event, session, node, user, device, code.
type LogLine = (i64, String, String, String, String, Option<String>, Option<i32>);

/// The session log, in the order it was written.
async fn session_log(kind: &str, url: &str) -> Vec<LogLine> {
    match kind {
        "sqlite" => {
            let pool = sqlx::SqlitePool::connect(url).await.unwrap();
            sqlx::query_as("SELECT at, event, session_id, node, user_id, device_id, code FROM session_log ORDER BY id")
                .fetch_all(&pool)
                .await
                .unwrap()
        }
        _ => {
            // The test databases' columns come back as binary strings; read them as text.
            let pool = sqlx::MySqlPool::connect(url).await.unwrap();
            let text = |c: &str| format!("CONVERT({c} USING utf8mb4)");
            let columns = ["event", "session_id", "node", "user_id", "device_id"].map(text).join(", ");
            sqlx::query_as(&format!("SELECT at, {columns}, code FROM session_log ORDER BY id"))
                .fetch_all(&pool)
                .await
                .unwrap()
        }
    }
}

/// Gateways and dispatchers of a new cluster start together against an empty database: every one
/// of them must come up, the migrations applied exactly once.
#[tokio::test]
async fn processes_starting_together_on_a_new_database_all_open_it() {
    let db = TestDatabase::create().await;
    let opened = join_all((0..6).map(|_| AnyStore::open(&db.url, 2))).await;
    for (i, store) in opened.into_iter().enumerate() {
        store.unwrap_or_else(|e| panic!("process {i} could not open the new database: {e}"));
    }
    let store = AnyStore::open(&db.url, 2).await.unwrap();
    let appended = store.append(&[to_user("u", 1)], now_ms(), DAY).await.unwrap();
    assert_eq!(appended[0].seqs[0].1, 1, "the schema is whole after the concurrent start");
}

/// A store whose table is gone (a dropped or half-migrated database; a missing grant answers
/// the same SQLSTATE class, 42) refuses every append: the store's fault, not the data's, so the
/// error is worth retrying — the dispatcher waits for the store instead of dead-lettering every
/// envelope as it did — and the append goes through once the table is back.
#[tokio::test]
async fn a_missing_table_is_worth_retrying_and_the_append_passes_once_it_is_back() {
    let f = fixture("mariadb").await;
    let pool = sqlx::MySqlPool::connect(&f.url).await.unwrap();
    sqlx::query("RENAME TABLE messages TO messages_away").execute(&pool).await.unwrap();
    let refused = f.store.append(&[to_user("u", 1)], now_ms(), DAY).await.unwrap_err();
    assert!(refused.to_string().contains("1146"), "{refused}");
    assert!(refused.is_transient(), "{refused}");
    sqlx::query("RENAME TABLE messages_away TO messages").execute(&pool).await.unwrap();
    let appended = f.store.append(&[to_user("u", 1)], now_ms(), DAY).await.unwrap();
    assert_eq!(appended[0].seqs[0].1, 1, "the refused append left nothing behind");
}
