//! Cluster mode on the real services: 3 gateway nodes and 1 or 2 dispatchers on loopback, with
//! RabbitMQ, Redis and MariaDB — several nodes behaving as one pushgate.
#![allow(clippy::unwrap_used)]

use std::{collections::HashMap, time::Duration};

use futures_util::{StreamExt, future::join_all};
use lapin::{
    BasicProperties,
    options::{BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions},
    types::{AMQPValue, FieldTable},
};
use pushgate_protocol::{ChannelName, cluster::BusMessage};
use pushgate_tests::{Client, Received, TestCluster, WAIT, eventually, gateway::parse_metric};
use serde_json::{Value, json, value::RawValue};

async fn publish(cluster: &TestCluster, via: usize, envelope: Value) -> Value {
    let (status, body) = cluster.gateways[via].publish(&envelope).await;
    assert_eq!(status, 202, "{envelope} → {body}");
    body
}

/// The next message after `marker` is published to `user` is the marker: nothing else was
/// queued for this client.
async fn assert_nothing_before_marker(cluster: &TestCluster, client: &mut Client, user: &str) {
    publish(cluster, 0, json!({"to": {"users": [user]}, "data": "marker", "persist": false})).await;
    let m = client.next_of_type("message").await;
    assert_eq!(m["data"], "marker", "{user} got {m}");
}

/// Reads `n` dead letters from `pushgate.dead`: each body, its `x-pushgate-error` reason and its
/// headers.
async fn read_dead_letters(channel: &lapin::Channel, n: usize) -> Vec<(Vec<u8>, String, FieldTable)> {
    let mut dead = channel
        .basic_consume("pushgate.dead".into(), "".into(), BasicConsumeOptions::default(), FieldTable::default())
        .await
        .unwrap();
    let mut letters = Vec::new();
    for _ in 0..n {
        let d = tokio::time::timeout(WAIT, dead.next()).await.unwrap().unwrap().unwrap();
        let headers = d.properties.headers().clone().unwrap_or_default();
        let reason = match headers.inner().get("x-pushgate-error") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("no reason header: {other:?}"),
        };
        letters.push((d.data, reason, headers));
    }
    letters
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_with_devices_on_two_nodes_gets_every_message_on_both() {
    let cluster = TestCluster::start(3, 1).await;
    let (g0, g1) = (&cluster.gateways[0], &cluster.gateways[1]);
    let mut phone = g0.connect_token(&g0.token("roamer", Some("phone"), &[])).await;
    let mut laptop = g1.connect_token(&g1.token("roamer", Some("laptop"), &[])).await;
    for n in 0..50 {
        publish(&cluster, 2, json!({"to": {"users": ["roamer"]}, "data": {"n": n}})).await;
    }
    for device in [&mut phone, &mut laptop] {
        for n in 0..50u64 {
            let m = device.next_of_type("message").await;
            assert_eq!((m["seq"].as_u64(), m["data"]["n"].as_u64()), (Some(n + 1), Some(n)));
        }
    }
    // Presence, asked of the third node, shows both sessions on their nodes.
    let (status, presence) = cluster.gateways[2].get_json("/v1/users/roamer/presence").await;
    assert_eq!(status, 200);
    let mut nodes: Vec<(String, String)> = presence["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["device"].as_str().unwrap().to_owned(), s["node"].as_str().unwrap().to_owned()))
        .collect();
    nodes.sort();
    assert_eq!(nodes, vec![("laptop".into(), g1.node_id.clone()), ("phone".into(), g0.node_id.clone())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_subscribers_on_three_nodes_each_get_a_message_once() {
    let cluster = TestCluster::start(3, 1).await;
    let mut subscribers = Vec::new();
    let mut others = Vec::new();
    for (i, gw) in cluster.gateways.iter().enumerate() {
        for j in 0..3 {
            let user = format!("sub-{i}-{j}");
            let mut c = gw.connect(&user).await;
            assert_eq!(c.subscribe("room", None).await["type"], "subscribed");
            subscribers.push((user, c));
        }
        let user = format!("other-{i}");
        others.push((user.clone(), gw.connect(&user).await));
    }
    // `subscribed` is answered once each node hears the channel on the bus.
    publish(&cluster, 1, json!({"to": {"channel": "room"}, "data": "probe"})).await;
    for (user, c) in subscribers.iter_mut() {
        let m = c.next_of_type("message").await;
        assert_eq!((m["channel"].as_str(), m["data"].as_str()), (Some("room"), Some("probe")), "{user}");
        assert_nothing_before_marker(&cluster, c, user).await;
    }
    for (user, c) in others.iter_mut() {
        assert_nothing_before_marker(&cluster, c, user).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broadcast_reaches_every_session_on_every_node_past_a_malformed_bus_message() {
    let cluster = TestCluster::start(3, 1).await;
    let mut clients = Vec::new();
    for (i, gw) in cluster.gateways.iter().enumerate() {
        for j in 0..20 {
            let user = format!("b-{i}-{j}");
            clients.push((user.clone(), gw.connect(&user).await));
        }
    }
    // Something that is not a pushgate message on the broadcast topic: every node counts it
    // and drops it, and what follows is delivered.
    let out = std::process::Command::new("redis-cli")
        .args(["-p", "6379", "publish", &format!("{}:all", cluster.name), "{not a bus message"])
        .output()
        .expect("redis-cli");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "3", "three nodes listen on the broadcast topic");
    for gw in &cluster.gateways {
        gw.wait_metric("pushgate_bus_malformed_total", &[], |v| v == 1.0).await;
    }
    publish(&cluster, 0, json!({"to": {"all": true}, "data": "everyone"})).await;
    join_all(clients.iter_mut().map(|(user, c)| {
        let cluster = &cluster;
        async move {
            assert_eq!(c.next_of_type("message").await["data"], "everyone", "{user}");
            assert_nothing_before_marker(cluster, c, user).await;
        }
    }))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_publishing_over_amqp_with_confirms_reaches_the_client() {
    let cluster = TestCluster::start(3, 1).await;
    let mut c = cluster.gateways[1].connect("backend-user").await;
    let connection = cluster.vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let envelope = json!({"id": "amqp-1", "to": {"users": ["backend-user"]}, "data": {"from": "amqp"}});
    let confirm = channel
        .basic_publish(
            "pushgate.publish".into(),
            "backend-user".into(),
            BasicPublishOptions::default(),
            envelope.to_string().as_bytes(),
            BasicProperties::default().with_content_type("application/json".into()).with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, lapin::Confirmation::Ack(None)), "{confirm:?}");
    let m = c.next_of_type("message").await;
    assert_eq!(
        (m["id"].as_str(), m["seq"].as_u64(), m["data"]["from"].as_str()),
        (Some("amqp-1"), Some(1), Some("amqp"))
    );
    // A channel message over AMQP too.
    c.subscribe("feed", None).await;
    let confirm = channel
        .basic_publish(
            "pushgate.publish".into(),
            "feed".into(),
            BasicPublishOptions::default(),
            json!({"to": {"channel": "feed"}, "data": 9}).to_string().as_bytes(),
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    assert!(matches!(confirm, lapin::Confirmation::Ack(None)));
    let m = c.next_of_type("message").await;
    assert_eq!((m["channel"].as_str(), m["data"].as_i64()), (Some("feed"), Some(9)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_lands_in_the_dead_letter_queue_and_the_next_still_flows() {
    let cluster = TestCluster::start(3, 1).await;
    let mut c = cluster.gateways[0].connect("after-poison").await;
    let connection = cluster.vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let mut headers = FieldTable::default();
    headers.insert("trace".into(), AMQPValue::LongString("t-1".into()));
    // Headers just under what one AMQP frame holds (131,064 bytes): with the reason added they
    // would not fit, so the dead letter leaves them out rather than failing to publish again and
    // again (which stalled the dispatcher) — on the same partition as the good message after it.
    let mut huge_headers = FieldTable::default();
    huge_headers.insert("padding".into(), AMQPValue::LongString("p".repeat(131_000).into()));
    let deep = format!(r#"{{"to":{{"users":["x"]}},"data":{}{}}}"#, "[".repeat(1000), "]".repeat(1000));
    for (key, body, headers) in [
        ("x", b"{not json".to_vec(), &headers),
        ("x", br#"{"to":{"users":["bad id"]},"data":1}"#.to_vec(), &headers),
        ("x", br#"{"to":{"all":true},"to":{"users":["x"]},"data":1}"#.to_vec(), &headers),
        ("x", deep.as_bytes().to_vec(), &headers),
        ("after-poison", b"{not json, padded".to_vec(), &huge_headers),
        ("after-poison", br#"{"to":{"users":["after-poison"]},"data":"fine"}"#.to_vec(), &headers),
    ] {
        channel
            .basic_publish(
                "pushgate.publish".into(),
                key.into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_headers(headers.clone()).with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let m = c.next_of_type("message").await;
    assert_eq!(m["data"], "fine");
    let dead_letters: HashMap<String, (String, FieldTable)> = read_dead_letters(&channel, 5)
        .await
        .into_iter()
        .map(|(body, reason, headers)| (String::from_utf8_lossy(&body).to_string(), (reason, headers)))
        .collect();
    let (reason, headers) = &dead_letters["{not json"];
    assert!(reason.starts_with("not_json"), "{reason}");
    assert!(matches!(headers.inner().get("trace"), Some(AMQPValue::LongString(_))), "original headers kept");
    let (reason, headers) = &dead_letters[r#"{"to":{"users":["bad id"]},"data":1}"#];
    assert!(reason.starts_with("bad_field: to.users"), "{reason}");
    assert!(matches!(headers.inner().get("trace"), Some(AMQPValue::LongString(_))), "original headers kept");
    let (reason, _) = &dead_letters[r#"{"to":{"all":true},"to":{"users":["x"]},"data":1}"#];
    assert_eq!(reason, r#"duplicate_field: field "to" appears more than once"#);
    let (reason, _) = &dead_letters[&deep];
    assert_eq!(reason, "too_deep: data nests arrays and objects more than 64 deep");
    let (reason, headers) = &dead_letters["{not json, padded"];
    assert!(reason.starts_with("not_json"), "{reason}");
    assert!(!headers.contains_key("padding"), "headers too large to keep are left out");
    assert_eq!(headers.inner().get("x-pushgate-headers-dropped"), Some(&AMQPValue::Boolean(true)));
    // Counted by kind: the label is the refusing code's, never text from the message.
    let metrics = cluster.dispatchers[0].metrics().await;
    let mut dead: Vec<&str> = metrics.lines().filter(|l| l.starts_with("pushgate_dead_letters_total{")).collect();
    dead.sort_unstable();
    assert_eq!(
        dead,
        [
            r#"pushgate_dead_letters_total{reason="bad_field"} 1"#,
            r#"pushgate_dead_letters_total{reason="duplicate_field"} 1"#,
            r#"pushgate_dead_letters_total{reason="not_json"} 2"#,
            r#"pushgate_dead_letters_total{reason="too_deep"} 1"#
        ],
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_user_order_holds_with_two_dispatchers_under_load() {
    let cluster = TestCluster::start(3, 2).await;
    const USERS: usize = 8;
    const PER_PUBLISHER: u64 = 150;
    let mut clients: Vec<Client> = Vec::new();
    for u in 0..USERS {
        let gw = &cluster.gateways[u % 3];
        clients.push(gw.connect_token(&gw.token(&format!("ordered-{u}"), Some("d"), &[])).await);
    }
    // Four AMQP publishers, each sending its own numbered stream to every user.
    let publishers = join_all((0..4u64).map(|p| {
        let cluster = &cluster;
        async move {
            let connection = cluster.vhost.connect().await;
            let channel = connection.create_channel().await.unwrap();
            channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
            let mut confirms = Vec::new();
            for n in 0..PER_PUBLISHER {
                for u in 0..USERS {
                    let user = format!("ordered-{u}");
                    let body = json!({"to": {"users": [user]}, "data": {"p": p, "n": n}}).to_string();
                    confirms.push(
                        channel
                            .basic_publish(
                                "pushgate.publish".into(),
                                user.as_str().into(),
                                BasicPublishOptions::default(),
                                body.as_bytes(),
                                BasicProperties::default().with_delivery_mode(2),
                            )
                            .await
                            .unwrap(),
                    );
                }
            }
            for confirm in confirms {
                assert!(matches!(confirm.await.unwrap(), lapin::Confirmation::Ack(None)));
            }
            connection
        }
    }));
    let readers = join_all(clients.iter_mut().map(|c| async move {
        let mut last: HashMap<u64, u64> = HashMap::new();
        for seq in 1..=4 * PER_PUBLISHER {
            let m = c.next_of_type("message").await;
            assert_eq!(m["seq"].as_u64(), Some(seq));
            let (p, n) = (m["data"]["p"].as_u64().unwrap(), m["data"]["n"].as_u64().unwrap());
            if let Some(prev) = last.insert(p, n) {
                assert!(n > prev, "publisher {p}: {n} after {prev}");
            }
        }
    }));
    let (_, _) = tokio::join!(publishers, readers);
    // Both dispatchers stayed up; ingest partitions are split between them or held by one.
    for d in &cluster.dispatchers {
        assert!(d.metrics().await.contains("pushgate_backend_up"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_disconnects_a_user_on_every_node() {
    let cluster = TestCluster::start(3, 1).await;
    let mut a = cluster.gateways[0].connect_token(&cluster.gateways[0].token("target", Some("a"), &[])).await;
    let mut b = cluster.gateways[2].connect_token(&cluster.gateways[2].token("target", Some("b"), &[])).await;
    let (status, body) = cluster.gateways[1].post_json("/v1/users/target/disconnect", String::new()).await;
    assert_eq!((status, body["sessions"].as_u64()), (202, Some(2)));
    assert_eq!(a.expect_close().await, 4000);
    assert_eq!(b.expect_close().await, 4000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_reach_mysql_through_the_dispatcher_and_lifecycle_events_reach_backends_past_a_malformed_event() {
    let cluster = TestCluster::start(3, 1).await;
    // A backend listens to session lifecycle events.
    let connection = cluster.vhost.connect().await;
    let channel = connection.create_channel().await.unwrap();
    let queue = channel
        .queue_declare(
            "".into(),
            lapin::options::QueueDeclareOptions { exclusive: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    channel
        .queue_bind(
            queue.name().clone(),
            "pushgate.lifecycle".into(),
            "session.*".into(),
            Default::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut lifecycle = channel
        .basic_consume(
            queue.name().clone(),
            "".into(),
            BasicConsumeOptions { no_ack: true, ..Default::default() },
            FieldTable::default(),
        )
        .await
        .unwrap();
    // Event messages no gateway wrote come first: they are dead-lettered, the rest still flows.
    // The second one's decode error quotes a 200 KB string, more than an AMQP header may hold:
    // its reason is cut short rather than failing to publish again and again.
    channel.confirm_select(ConfirmSelectOptions::default()).await.unwrap();
    let huge = format!(r#"{{"acks":"{}"}}"#, "é".repeat(100_000));
    for body in [br#"{"acks":"nope"}"#.to_vec(), huge.clone().into_bytes()] {
        channel
            .basic_publish(
                "pushgate.events".into(),
                "events".into(),
                BasicPublishOptions::default(),
                &body,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let g0 = &cluster.gateways[0];
    let mut c = g0.connect_token(&g0.token("acker", Some("phone"), &[])).await;
    for n in 0..5 {
        publish(&cluster, 1, json!({"to": {"users": ["acker"]}, "data": n})).await;
    }
    for _ in 0..5 {
        c.next_of_type("message").await;
    }
    c.send_json(&json!({"type": "ack", "seq": 4})).await;
    c.close().await;
    // Reconnecting on another node resumes after the ack.
    let g2 = &cluster.gateways[2];
    let mut again = eventually(WAIT, "the ack in the device cursor", || async {
        let c = g2.connect_token(&g2.token("acker", Some("phone"), &[])).await;
        (c.welcome.as_ref().unwrap()["last_seq"] == 4).then_some(c)
    })
    .await;
    assert_eq!(again.next_of_type("message").await["seq"], 5);
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let d = tokio::time::timeout(WAIT, lifecycle.next()).await.unwrap().unwrap().unwrap();
        let event: Value = serde_json::from_slice(&d.data).unwrap();
        if event["user"] == "acker" {
            kinds.push((d.routing_key.to_string(), event["event"].as_str().unwrap().to_owned()));
        }
    }
    assert_eq!(kinds[0], ("session.open".to_owned(), "open".to_owned()));
    assert_eq!(kinds[1].0, "session.close");
    let mut dead_letters = read_dead_letters(&channel, 2).await;
    dead_letters.sort_by_key(|(body, ..)| body.len());
    assert_eq!(dead_letters[0].0, br#"{"acks":"nope"}"#, "the body is kept as it was");
    assert!(dead_letters[0].1.starts_with("bad_event: "), "{}", dead_letters[0].1);
    assert_eq!(dead_letters[1].0, huge.as_bytes(), "the body is kept as it was");
    let (cut, full) = (&dead_letters[1].1, dead_letters[1].0.len());
    assert!(cut.starts_with("bad_event: ") && cut.ends_with('…') && cut.len() < 1100, "{} bytes of {full}", cut.len());
    let metrics = cluster.dispatchers[0].metrics().await;
    assert!(metrics.contains(r#"pushgate_dead_letters_total{reason="bad_event"} 2"#), "{metrics}");
}

/// Reads `client`'s frames until it has the message `last` on channel `busy`: the `gap` frames
/// (channel or `all` → dropped) and how many messages it got with data `missed`.
async fn gaps_and_missed_until(client: &mut Client, last: &str) -> (HashMap<String, u64>, usize) {
    let (mut gaps, mut missed) = (HashMap::new(), 0);
    loop {
        let frame = client.next().await;
        let frame = frame.json().unwrap_or_else(|| panic!("expected frames, got {frame:?}")).clone();
        match frame["type"].as_str() {
            Some("gap") => {
                let topic = frame["channel"].as_str().unwrap_or("all").to_owned();
                assert!(gaps.insert(topic, frame["dropped"].as_u64().unwrap()).is_none(), "one gap per topic: {frame}");
            }
            Some("message") if frame["data"] == "missed" => missed += 1,
            Some("message") if frame["data"] == last && frame["channel"] == "busy" => return (gaps, missed),
            _ => panic!("unexpected {frame}"),
        }
    }
}

/// Channel and broadcast messages Redis publishes while a node's pub/sub connection is cut never
/// reach it; the node counts them and tells its sessions in `gap` frames, one per topic, exact.
/// `quiet` gets nothing after the cut (counted by the checkpoint the node asks for after it
/// subscribes again) and its count begins again (a new epoch); `busy` goes on (counted by the
/// number of its next message, or the checkpoint, whichever comes first). A node that was not cut
/// gets every message and no gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_bus_connection_is_cut_tells_its_sessions_how_many_messages_they_missed() {
    let cluster = TestCluster::start(2, 1).await;
    let mut cut = cluster.gateways[0].connect("cut-off").await;
    let mut kept = cluster.gateways[1].connect("kept").await;
    for client in [&mut cut, &mut kept] {
        for channel in ["busy", "quiet"] {
            assert_eq!(client.subscribe(channel, None).await["type"], "subscribed");
        }
    }
    // A first message on each topic: where each node's count of the topic starts.
    for to in [json!({"channel": "busy"}), json!({"channel": "quiet"}), json!({"all": true})] {
        publish(&cluster, 1, json!({"to": to, "data": "first"})).await;
    }
    for client in [&mut cut, &mut kept] {
        for _ in 0..3 {
            assert_eq!(client.next_of_type("message").await["data"], "first");
        }
    }

    // Node 0 loses its bus connection while 3 messages go to `busy`, 4 to `quiet`, 2 to all;
    // Redis loses the count of `quiet` meanwhile (as in a restart), so its numbering begins again.
    let on = |channel: Option<&'static str>, n: usize| {
        (0..n).map(move |i| BusMessage {
            id: format!("missed-{}-{i}", channel.unwrap_or("all")),
            ts: 1,
            data: RawValue::from_string(r#""missed""#.into()).unwrap(),
            channel: channel.map(|c| ChannelName::new(c).unwrap()),
            topic_seq: None,
            topic_epoch: None,
        })
    };
    let messages: Vec<BusMessage> = on(Some("busy"), 3).chain(on(Some("quiet"), 4)).chain(on(None, 2)).collect();
    assert_eq!(cluster.cut_bus_and_publish(0, &["quiet"], &messages).await, 1, "node 0 has one bus connection");
    // Node 0 subscribes again by itself; `quiet` stays quiet, `busy` goes on.
    eventually(WAIT, "node 0 back on the bus", || async {
        (cluster.gateways[0].log().matches("subscribed to the Redis bus").count() >= 2).then_some(())
    })
    .await;
    publish(&cluster, 1, json!({"to": {"channel": "busy"}, "data": "after"})).await;

    // Node 0's session is told what it missed on each topic, once, and nothing more.
    let (mut gaps, missed) = gaps_and_missed_until(&mut cut, "after").await;
    while gaps.len() < 3 {
        let frame = cut.expect("gap").await;
        gaps.insert(frame["channel"].as_str().unwrap_or("all").to_owned(), frame["dropped"].as_u64().unwrap());
    }
    assert_eq!(missed, 0);
    let expected: HashMap<String, u64> = [("busy".into(), 3), ("quiet".into(), 4), ("all".into(), 2)].into();
    assert_eq!(gaps, expected);
    // The very next frame is a marker: no gap or message beyond these.
    publish(&cluster, 1, json!({"to": {"users": ["cut-off"]}, "data": "marker", "persist": false})).await;
    assert_eq!(cut.expect("message").await["data"], "marker");
    let g0 = &cluster.gateways[0];
    assert_eq!(g0.metric("pushgate_bus_missed_total", &[("target", "channel")]).await, 7.0);
    assert_eq!(g0.metric("pushgate_bus_missed_total", &[("target", "all")]).await, 2.0);
    assert!(g0.log().contains("this node's connection was cut"), "{}", g0.log());

    // Node 1 was not cut: every message and no gap.
    let (gaps, missed) = gaps_and_missed_until(&mut kept, "after").await;
    assert_eq!((gaps, missed), (HashMap::new(), 9));
    publish(&cluster, 1, json!({"to": {"users": ["kept"]}, "data": "marker", "persist": false})).await;
    assert_eq!(kept.expect("message").await["data"], "marker");
    assert_eq!(cluster.gateways[1].metric("pushgate_bus_missed_total", &[("target", "channel")]).await, 0.0);
}

/// The store refuses the dispatcher's statements (the messages table is gone) while it still
/// answers its health check: the dispatcher counts each refusal as transient in
/// `pushgate_store_errors_total` and retries, and the durable message published meanwhile is
/// stored and delivered once the table is back — not dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_counts_the_statements_the_store_refuses_and_delivers_once_it_takes_them() {
    let cluster = TestCluster::start(1, 1).await;
    let mut client = cluster.gateways[0].connect("patient").await;
    let pool = sqlx::MySqlPool::connect(&cluster.db.url).await.unwrap();
    sqlx::query("RENAME TABLE messages TO messages_away").execute(&pool).await.unwrap();
    publish(&cluster, 0, json!({"to": {"users": ["patient"]}, "data": "waited"})).await;
    let refused = |metrics: &str, transient: &str| {
        parse_metric(metrics, "pushgate_store_errors_total", &[("transient", transient)])
    };
    eventually(WAIT, "the dispatcher counts refusals", || async {
        (refused(&cluster.dispatchers[0].metrics().await, "true") >= 2.0).then_some(())
    })
    .await;
    assert_eq!(client.next_within(Duration::from_millis(200)).await, Received::Timeout, "nothing before it is stored");
    sqlx::query("RENAME TABLE messages_away TO messages").execute(&pool).await.unwrap();
    let m = client.next_of_type("message").await;
    assert_eq!((m["data"].as_str(), m["seq"].as_u64()), (Some("waited"), Some(1)));
    let metrics = cluster.dispatchers[0].metrics().await;
    assert_eq!(refused(&metrics, "false"), 0.0, "a missing table is not the data's fault");
    assert_eq!(parse_metric(&metrics, "pushgate_dead_letters_total", &[]), 0.0);
    assert!(cluster.dispatchers[0].log().contains("1146"), "the log carries the database's error");
}
