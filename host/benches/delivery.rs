//! Outbox delivery: messages queued in the outbox, delivered by the real worker through the
//! webhook channel plugin to a local HTTP sink (or, with `WAYLINE_DELIVERY_CHANNEL=smtp`,
//! through email-smtp and the host's pooled SMTP to a local SMTP sink), every state recorded in
//! real sled. Each run also splits the worker's time per message into deciding and rendering,
//! the plugin's own work, its waits on the network, and the store.
//!
//! Run with `cargo xtask plugins && cargo bench -p wayline --bench delivery`. Prints a Markdown
//! section for BENCHMARKS.md. `WAYLINE_DELIVERY_MESSAGES` scales it.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use wayline::api::AppState;
use wayline::clock::{SharedClock, SystemClock};
use wayline::messaging::{ChannelRequest, MessagingConfig, SealingKey, TemplateDraft};
use wayline::model::ConsentState;
use wayline::plugin_kv::StoredKv;
use wayline::registry::Registry;
use wayline::runtime::{Runtime, RuntimeConfig};
use wayline::store::{
    ContactUpsert, DeliveryStatus, DeliveryStep, OutboxMessage, SledStore, Store,
};

/// A minimal SMTP server on 127.0.0.1 that accepts every message at once, counting them: the
/// other end of the wire, so the cost measured is the client's. Every command gets `250`, DATA
/// a `354` and, after the terminating dot, `250 queued`.
async fn smtp_sink() -> (String, Arc<AtomicUsize>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
    let count = Arc::new(AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let relay = format!("smtp+insecure://{}", listener.local_addr().unwrap());
    let counted = count.clone();
    tokio::spawn(async move {
        loop {
            let (socket, _) = listener.accept().await.unwrap();
            let counted = counted.clone();
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read);
                write.write_all(b"220 sink ESMTP\r\n").await.ok()?;
                let mut line = String::new();
                loop {
                    line.clear();
                    if lines.read_line(&mut line).await.ok()? == 0 {
                        return Some(());
                    }
                    let command = line.trim_end().to_ascii_uppercase();
                    if command == "DATA" {
                        write.write_all(b"354 go on\r\n").await.ok()?;
                        loop {
                            line.clear();
                            if lines.read_line(&mut line).await.ok()? == 0 {
                                return Some(());
                            }
                            if line == ".\r\n" {
                                break;
                            }
                        }
                        let n = counted.fetch_add(1, Ordering::Relaxed);
                        let reply = format!("250 2.0.0 Ok: queued as S{n}\r\n");
                        write.write_all(reply.as_bytes()).await.ok()?;
                    } else if command == "QUIT" {
                        write.write_all(b"221 bye\r\n").await.ok()?;
                        return Some(());
                    } else {
                        write.write_all(b"250 OK\r\n").await.ok()?;
                    }
                }
            });
        }
    });
    (relay, count)
}

async fn run(runtime: &Arc<Runtime>, registry: &Arc<Registry>, total: usize, smtp: bool) {
    let data = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = Arc::new(SledStore::open(&data.path().join("store")).unwrap());
    let clock: SharedClock = Arc::new(SystemClock);
    let runtime = Arc::new(runtime.with_env(clock.clone(), Arc::new(StoredKv(store.clone()))));
    let (base, delivered) = if smtp {
        smtp_sink().await
    } else {
        common::http_sink().await
    };
    // Contacts first, before the worker has anything to do.
    let now = clock.now();
    for i in 0..total {
        let mut upsert = ContactUpsert {
            id: Some(format!("c{i}")),
            ..ContactUpsert::default()
        };
        upsert.attributes.insert(
            "email".into(),
            wayline::model::Value::Text(format!("c{i}@example.com")),
        );
        upsert.consents.insert("hook".into(), ConsentState::Granted);
        store.upsert_contact(upsert, now).unwrap();
    }
    let state = AppState::start(
        runtime,
        registry.clone(),
        store.clone(),
        clock.clone(),
        "delivery-bench-token-0123",
        "write-key-0123456789",
        2,
        MessagingConfig {
            sealing_key: SealingKey::from_hex(&"00".repeat(32)).unwrap(),
            public_url: "http://127.0.0.1:8080".into(),
            delivery: Default::default(),
        },
    )
    .unwrap();
    let binding = if smtp {
        serde_json::json!({
            "plugin": "email-smtp", "config": {"relay": base, "from": "Bench <bench@shop.example>"},
            "recipient": "email", "approved_hosts": [base]})
    } else {
        serde_json::json!({
            "plugin": "webhook-channel", "config": {"url": format!("{base}/hook")},
            "recipient": "email", "approved_hosts": [base]})
    };
    let request: ChannelRequest = serde_json::from_value(binding).unwrap();
    state
        .messaging
        .put_channel("hook", request, "bench")
        .unwrap();
    let draft: TemplateDraft = serde_json::from_value(serde_json::json!({
        "channel": "hook", "subject": "Hello {{ first_name | default(\"there\") }}",
        "text": "Your code is {{ code | default(\"1234\") }}.", "transactional": true}))
    .unwrap();
    state.messaging.put_template("t", draft, "bench").unwrap();
    // The server's own worker stops (with nothing to do yet); everything is queued, then a
    // fresh worker is timed from its start.
    state.messaging.shutdown().await;
    let now = clock.now();
    for i in 0..total {
        store
            .queue_message(&OutboxMessage {
                id: format!("m{i}"),
                contact_id: format!("c{i}"),
                channel: "hook".into(),
                template: "t".into(),
                variables: Default::default(),
                journey_id: "bench".into(),
                version: 1,
                node: "send".into(),
                enrollment_id: format!("e{i}"),
                created_at: now,
                status: DeliveryStatus::Queued,
                template_version: Some(1),
                attempts: 0,
                due_at: Some(now),
                recipient: None,
                provider_id: None,
                history: vec![DeliveryStep {
                    at: now,
                    status: DeliveryStatus::Queued,
                    detail: String::new(),
                }],
                // As test sends (no consent or cap checks, no event on the contact), to see
                // what those cost.
                test: std::env::var_os("WAYLINE_DELIVERY_AS_TESTS").is_some(),
            })
            .unwrap();
    }
    store.flush().unwrap();
    let messaging = wayline::messaging::Messaging::new(
        store.clone(),
        registry.clone(),
        state.runtime.clone(),
        clock.clone(),
        state.scheduler.clone(),
        MessagingConfig {
            sealing_key: SealingKey::from_hex(&"00".repeat(32)).unwrap(),
            public_url: "http://127.0.0.1:8080".into(),
            delivery: Default::default(),
        },
    );
    let (cpu, started) = (common::cpu_seconds(), Instant::now());
    messaging.start();
    while store.next_delivery_due().unwrap().is_some() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = common::cpu_seconds() - cpu;
    let costs = messaging.delivery_costs();
    messaging.shutdown().await;
    state.scheduler.stop();
    let sent = (0..total)
        .filter(|i| {
            store
                .message(&format!("m{i}"))
                .unwrap()
                .is_some_and(|m| m.status == DeliveryStatus::Sent)
        })
        .count();
    let per = |us: u64| us as f64 / costs.messages.max(1) as f64;
    println!(
        "| {total} messages, {} | **{:.0} messages/s** ({elapsed:.2} s; {sent} sent, {} at the sink) | {:.0} µs CPU per message | {:.0} · {:.0} · {:.0} · {:.0} · {:.0} |",
        if smtp {
            "email-smtp → local SMTP sink"
        } else {
            "webhook plugin → local HTTP sink"
        },
        total as f64 / elapsed,
        delivered.load(Ordering::Relaxed),
        cpu * 1e6 / total as f64,
        per(costs.prepare_us),
        per(costs.plugin_us),
        per(costs.network_us),
        per(costs.record_us),
        per(costs.flush_us),
    );
}

fn main() {
    let machine = common::machine();
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "## Outbox delivery ({})\n",
        jiff::Timestamp::now().strftime("%Y-%m-%d")
    );
    println!(
        "Machine: {machine}, {cores} cores; server, sink and sled on the same machine. Command: `cargo xtask plugins && cargo bench -p wayline --bench delivery`.\n"
    );
    println!(
        "| load | result | cost | µs per message: decide+render · plugin · network · record · flush |"
    );
    println!("|---|---|---|---|");
    let runtime = Arc::new(Runtime::new(RuntimeConfig::default()).unwrap());
    let registry = Arc::new(Registry::default());
    registry.load_dir(&runtime, &common::plugin_dir()).unwrap();
    let tokio = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let total = common::env_number("WAYLINE_DELIVERY_MESSAGES", 20_000);
    let smtp = std::env::var("WAYLINE_DELIVERY_CHANNEL").is_ok_and(|c| c == "smtp");
    for _ in 0..common::env_number("WAYLINE_DELIVERY_RUNS", 3) {
        tokio.block_on(run(&runtime, &registry, total, smtp));
    }
}
