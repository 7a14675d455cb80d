//! Faults inside the server: a step that panics, a store that refuses writes. Each is shown to
//! an operator and stops nothing else.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::json;
use wayline::model::{Contact, Event, Millis};
use wayline::store::*;

use crate::server::Server;

/// The real store, with one contact whose reading panics inside a step, and writes that can be
/// made to be refused: a bug and a broken disk, on demand.
struct Faulty {
    store: SledStore,
    refuse_writes: Arc<AtomicBool>,
    bug: Arc<AtomicBool>,
}

impl Store for Faulty {
    fn contact(&self, id: &str) -> Result<Option<Contact>, StoreError> {
        self.store.contact(id)
    }
    fn alias(&self, id: &str) -> Result<Option<String>, StoreError> {
        self.store.alias(id)
    }
    fn contact_exists(&self, id: &str) -> Result<bool, StoreError> {
        self.store.contact_exists(id)
    }
    fn upsert_contact(&self, upsert: ContactUpsert, now: Millis) -> Result<Upserted, StoreError> {
        self.store.upsert_contact(upsert, now)
    }
    fn record_events(&self, events: &[Event]) -> Result<Vec<Recorded>, StoreError> {
        self.store.record_events(events)
    }
    fn event(&self, id: &str) -> Result<Option<Event>, StoreError> {
        self.store.event(id)
    }
    fn contact_events(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<wayline::store::EventPage, StoreError> {
        self.store.contact_events(contact_id, before, limit)
    }
    fn upsert_contacts(
        &self,
        upserts: Vec<wayline::store::ContactUpsert>,
        now: wayline::model::Millis,
    ) -> Result<Vec<Result<wayline::store::Upserted, StoreError>>, StoreError> {
        self.store.upsert_contacts(upserts, now)
    }
    fn search_contacts(
        &self,
        query: &wayline::store::ContactQuery,
    ) -> Result<wayline::store::ContactPage, StoreError> {
        self.store.search_contacts(query)
    }
    fn trees_holding(&self, needle: &[u8]) -> Result<Vec<&'static str>, StoreError> {
        self.store.trees_holding(needle)
    }
    fn flush(&self) -> Result<(), StoreError> {
        self.store.flush()
    }
    fn backup(
        &self,
        out: &mut dyn std::io::Write,
    ) -> Result<wayline::store::BackupSummary, StoreError> {
        self.store.backup(out)
    }
    fn recovery(&self) -> Recovery {
        self.store.recovery()
    }
    fn writable(&self) -> Result<(), StoreError> {
        if self.refuse_writes.load(Ordering::SeqCst) {
            return Err(StoreError::Backend(
                "an earlier write failed part-way; restart the server to finish it".into(),
            ));
        }
        self.store.writable()
    }
    fn plugin_kv_get(&self, namespace: &str, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.plugin_kv_get(namespace, key)
    }
    fn plugin_kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        quota: KvUsage,
    ) -> Result<bool, StoreError> {
        self.store.plugin_kv_set(namespace, key, value, quota)
    }
    fn plugin_kv_delete(&self, namespace: &str, key: &str) -> Result<(), StoreError> {
        self.store.plugin_kv_delete(namespace, key)
    }
    fn plugin_kv_usage(&self, namespace: &str) -> Result<KvUsage, StoreError> {
        self.store.plugin_kv_usage(namespace)
    }
    fn dead_letters(&self, limit: usize) -> Result<Vec<DeadLetter>, StoreError> {
        self.store.dead_letters(limit)
    }
    fn requeue_dead_letter(&self, id: &str, audit: AuditEntry) -> Result<DeadLetter, StoreError> {
        self.store.requeue_dead_letter(id, audit)
    }
    fn delete_dead_letter(&self, id: &str, audit: AuditEntry) -> Result<DeadLetter, StoreError> {
        self.store.delete_dead_letter(id, audit)
    }
    fn audit(&self, query: &AuditQuery) -> Result<AuditPage, StoreError> {
        self.store.audit(query)
    }
}

impl MessageStore for Faulty {
    fn channel(&self, name: &str) -> Result<Option<ChannelRecord>, StoreError> {
        self.store.channel(name)
    }
    fn channels(&self) -> Result<Vec<ChannelRecord>, StoreError> {
        self.store.channels()
    }
    fn put_channel(&self, record: &ChannelRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_channel(record, audit)
    }
    fn template(
        &self,
        name: &str,
        version: Option<u32>,
    ) -> Result<Option<TemplateVersion>, StoreError> {
        self.store.template(name, version)
    }
    fn template_versions(&self, name: &str) -> Result<Vec<TemplateVersion>, StoreError> {
        self.store.template_versions(name)
    }
    fn templates(&self) -> Result<Vec<TemplateVersion>, StoreError> {
        self.store.templates()
    }
    fn add_template_version(
        &self,
        template: TemplateVersion,
        audit: AuditEntry,
    ) -> Result<TemplateVersion, StoreError> {
        self.writable()?;
        self.store.add_template_version(template, audit)
    }
    fn approve_template(
        &self,
        template: &TemplateVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.approve_template(template, audit)
    }
    fn message(&self, id: &str) -> Result<Option<OutboxMessage>, StoreError> {
        self.store.message(id)
    }
    fn due_messages(&self, now: Millis, limit: usize) -> Result<Vec<OutboxMessage>, StoreError> {
        self.store.due_messages(now, limit)
    }
    fn next_delivery_due(&self) -> Result<Option<Millis>, StoreError> {
        self.store.next_delivery_due()
    }
    fn record_deliveries(
        &self,
        updates: &[DeliveryUpdate],
    ) -> Result<DeliveriesRecorded, StoreError> {
        self.writable()?;
        self.store.record_deliveries(updates)
    }
    fn queue_message(&self, message: &OutboxMessage) -> Result<(), StoreError> {
        self.writable()?;
        self.store.queue_message(message)
    }
    fn suppression(&self, channel: &str, address: &str) -> Result<Option<Suppression>, StoreError> {
        self.store.suppression(channel, address)
    }
    fn send_window(&self, channel: &str) -> Result<Option<SavedWindow>, StoreError> {
        self.store.send_window(channel)
    }
    fn save_send_window(&self, channel: &str, window: &SavedWindow) -> Result<(), StoreError> {
        self.writable()?;
        self.store.save_send_window(channel, window)
    }
}

impl AccessStore for Faulty {
    fn tokens(&self) -> Result<Vec<TokenRecord>, StoreError> {
        self.store.tokens()
    }
    fn put_token(&self, record: &TokenRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_token(record, audit)
    }
    fn workspace(&self) -> Result<Workspace, StoreError> {
        self.store.workspace()
    }
    fn put_workspace(&self, workspace: &Workspace, audit: AuditEntry) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_workspace(workspace, audit)
    }
    fn lifecycle_rules(&self) -> Result<Option<serde_json::Value>, StoreError> {
        self.store.lifecycle_rules()
    }
    fn put_lifecycle_rules(
        &self,
        rules: &serde_json::Value,
        sweep: Option<&wayline::store::SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_lifecycle_rules(rules, sweep, audit)
    }
    fn record_audit(&self, audit: AuditEntry) -> Result<(), StoreError> {
        self.writable()?;
        self.store.record_audit(audit)
    }
}

impl PluginStore for Faulty {
    fn plugin_uploads(&self) -> Result<Vec<PluginUpload>, StoreError> {
        self.store.plugin_uploads()
    }
    fn plugin_upload(&self, id: &str) -> Result<Option<PluginUpload>, StoreError> {
        self.store.plugin_upload(id)
    }
    fn plugin_binary(&self, id: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.plugin_binary(id)
    }
    fn put_plugin_upload(
        &self,
        upload: &PluginUpload,
        binary: &[u8],
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_plugin_upload(upload, binary, audit)
    }
    fn delete_plugin_upload(
        &self,
        tombstone: &PluginUpload,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.delete_plugin_upload(tombstone, audit)
    }
}

impl ScoringStore for Faulty {
    fn scoring_models(&self) -> Result<Vec<ScoringModelRecord>, StoreError> {
        self.store.scoring_models()
    }
    fn put_scoring_model(
        &self,
        record: &ScoringModelRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_scoring_model(record, audit)
    }
    fn delete_scoring_model(&self, name: &str, audit: AuditEntry) -> Result<(), StoreError> {
        self.writable()?;
        self.store.delete_scoring_model(name, audit)
    }
    fn score_history(
        &self,
        contact_id: &str,
        before: Option<&str>,
        limit: usize,
    ) -> Result<ScorePage, StoreError> {
        self.store.score_history(contact_id, before, limit)
    }
}

impl AudienceStore for Faulty {
    fn audiences(&self) -> Result<Vec<AudienceRecord>, StoreError> {
        self.store.audiences()
    }
    fn put_audience(
        &self,
        record: &AudienceRecord,
        sweep: &SweepRecord,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.put_audience(record, sweep, audit)
    }
    fn delete_audience(
        &self,
        kind: AudienceKind,
        name: &str,
        sweep: Option<&SweepRecord>,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.writable()?;
        self.store.delete_audience(kind, name, sweep, audit)
    }
    fn segment_members(
        &self,
        segment: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<MemberPage, StoreError> {
        self.store.segment_members(segment, after, limit)
    }
    fn segment_size(&self, segment: &str) -> Result<u64, StoreError> {
        self.store.segment_size(segment)
    }
    fn sweeps(&self) -> Result<Vec<SweepRecord>, StoreError> {
        self.store.sweeps()
    }
    fn start_sweep(&self, sweep: &SweepRecord) -> Result<(), StoreError> {
        self.writable()?;
        self.store.start_sweep(sweep)
    }
    fn sweep_page(&self, sweep: &SweepRecord, limit: usize) -> Result<Vec<String>, StoreError> {
        self.store.sweep_page(sweep, limit)
    }
    fn sweep_step(
        &self,
        sweep: &SweepRecord,
        items: &[WorkItem],
    ) -> Result<Option<Vec<u8>>, StoreError> {
        self.writable()?;
        self.store.sweep_step(sweep, items)
    }
}

impl JourneyStore for Faulty {
    fn journey(&self, id: &str) -> Result<Option<JourneyRecord>, StoreError> {
        self.store.journey(id)
    }
    fn journeys(&self) -> Result<Vec<JourneyRecord>, StoreError> {
        self.store.journeys()
    }
    fn put_journey(&self, record: &JourneyRecord, audit: AuditEntry) -> Result<(), StoreError> {
        self.store.put_journey(record, audit)
    }
    fn publish_journey(
        &self,
        record: &JourneyRecord,
        version: &JourneyVersion,
        audit: AuditEntry,
    ) -> Result<(), StoreError> {
        self.store.publish_journey(record, version, audit)
    }
    fn journey_version(
        &self,
        id: &str,
        version: u32,
    ) -> Result<Option<JourneyVersion>, StoreError> {
        self.store.journey_version(id, version)
    }
    fn enqueue(&self, item: &WorkItem) -> Result<(), StoreError> {
        self.store.enqueue(item)
    }
    fn enqueue_enrollment(&self, item: &WorkItem) -> Result<bool, StoreError> {
        self.store.enqueue_enrollment(item)
    }
    fn pending_work(
        &self,
        partition: u8,
        limit: usize,
        now: Millis,
    ) -> Result<Vec<(WorkKey, WorkItem)>, StoreError> {
        self.store.pending_work(partition, limit, now)
    }
    fn set_aside(&self, key: &WorkKey, error: &str, now: Millis) -> Result<(), StoreError> {
        self.store.set_aside(key, error, now)
    }
    fn split_bundle(&self, key: &WorkKey) -> Result<bool, StoreError> {
        self.store.split_bundle(key)
    }
    fn has_pending_work(&self) -> Result<bool, StoreError> {
        self.store.has_pending_work()
    }
    fn fire_due_timers(&self, now: Millis, limit: usize) -> Result<Vec<u8>, StoreError> {
        self.store.fire_due_timers(now, limit)
    }
    fn next_timer_due(&self) -> Result<Option<Millis>, StoreError> {
        self.store.next_timer_due()
    }
    fn pending_timers(&self) -> Result<usize, StoreError> {
        self.store.pending_timers()
    }
    fn enrollment(&self, id: &str) -> Result<Option<Enrollment>, StoreError> {
        self.store.enrollment(id)
    }
    fn contact_journeys(&self, contact_id: &str) -> Result<Vec<ContactJourney>, StoreError> {
        self.store.contact_journeys(contact_id)
    }
    fn contact_with_journeys(
        &self,
        contact_id: &str,
    ) -> Result<Option<(Contact, Vec<ContactJourney>)>, StoreError> {
        // What a bug in a step looks like to the worker running it.
        if contact_id == "boom"
            && self.bug.load(Ordering::SeqCst)
            && std::thread::current()
                .name()
                .is_some_and(|n| n.starts_with("journey-worker"))
        {
            panic!("a bug met contact `boom`");
        }
        self.store.contact_with_journeys(contact_id)
    }
    fn messages(&self, contact_id: &str) -> Result<Vec<OutboxMessage>, StoreError> {
        self.store.messages(contact_id)
    }
    fn counters(&self, journey_id: &str) -> Result<Vec<(CounterKey, i64)>, StoreError> {
        self.store.counters(journey_id)
    }
    fn commit(&self, commit: Commit) -> Result<Vec<u8>, StoreError> {
        self.store.commit(commit)
    }
}

/// A server on a faulty store, and the switches: writes refused, and the bug.
async fn faulty_server() -> (Server, Arc<AtomicBool>, Arc<AtomicBool>) {
    let refuse_writes = Arc::new(AtomicBool::new(false));
    let bug = Arc::new(AtomicBool::new(true));
    let (flag, bugged) = (refuse_writes.clone(), bug.clone());
    let server = Server::start_wrapped(true, move |store| {
        Arc::new(Faulty {
            store,
            refuse_writes: flag,
            bug: bugged,
        })
    })
    .await;
    (server, refuse_writes, bug)
}

/// A step that panics is set aside with the panic's message; its worker goes on, the other
/// contacts of its partitions go through the journey, and the server stays healthy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_panics_is_set_aside_and_its_worker_goes_on() {
    let (server, _, bug) = faulty_server().await;
    let journey = json!({
        "name": "Tag visitors",
        "reentry": "concurrent",
        "nodes": [
            {"id": "in", "type": "entry", "plugin": "event-trigger", "config": {"event": "visited"}},
            {"id": "tag", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["visitor"]}}
        ],
        "edges": [{"from": "in", "to": "tag"}]
    });
    server.put("/v1/journeys/tags", journey).await;
    let (status, body) = server.act("/v1/journeys/tags/publish").await;
    assert_eq!(status, 201, "{body}");
    let visit = |id: String, contact: String| json!({"id": id, "contact_id": contact, "name": "visited", "timestamp": "2026-11-22T10:00:00Z"});
    let mut events = vec![visit("b1".into(), "boom".into())];
    events.extend((0..40).map(|n| visit(format!("v{n}"), format!("c{n}"))));
    let (status, body) = server.post("/v1/events", json!(events)).await;
    assert_eq!(status, 202, "{body}");
    server.settle().await;

    let (_, letters) = server.get("/v1/dead-letters").await;
    let letters = letters["dead_letters"].as_array().unwrap();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0]["item"]["event_id"], "b1");
    assert!(
        letters[0]["error"]
            .as_str()
            .unwrap()
            .contains("the step panicked: a bug met contact `boom`"),
        "{letters:?}"
    );
    for n in 0..40 {
        let (_, contact) = server.get(&format!("/v1/contacts/c{n}")).await;
        assert_eq!(contact["tags"], json!(["visitor"]), "c{n}: {contact}");
    }
    let (status, health) = server.get("/healthz").await;
    assert_eq!((status, &health["status"]), (200, &json!("ok")), "{health}");
    // The same bug again, after the first: the workers still run.
    let again = json!([
        visit("b2".into(), "boom".into()),
        visit("v99".into(), "c99".into())
    ]);
    server.post("/v1/events", again).await;
    server.settle().await;
    let (_, contact) = server.get("/v1/contacts/c99").await;
    assert_eq!(contact["tags"], json!(["visitor"]));

    // The bug is fixed: the operator puts the first event's work back, and deletes the second.
    bug.store(false, Ordering::SeqCst);
    let (_, letters) = server.get("/v1/dead-letters").await;
    let id = |n: usize| {
        letters["dead_letters"][n]["id"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let (status, body) = server
        .act(&format!("/v1/dead-letters/{}/requeue", id(0)))
        .await;
    assert_eq!(status, 202, "{body}");
    let (status, body) = server
        .act(&format!("/v1/dead-letters/{}/requeue", id(0)))
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (404, &json!("dead_letter_not_found")),
        "{body}"
    );
    let (status, body) = server
        .send(
            reqwest::Method::DELETE,
            &format!("/v1/dead-letters/{}", id(1)),
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    server.settle().await;
    let (_, boom) = server.get("/v1/contacts/boom").await;
    assert_eq!(
        boom["tags"],
        json!(["visitor"]),
        "the requeued work ran: {boom}"
    );
    let (_, letters) = server.get("/v1/dead-letters").await;
    assert_eq!(letters["dead_letters"], json!([]));
    let (_, audit) = server.get("/v1/audit").await;
    let actions: Vec<&str> = audit["audit"]
        .as_array()
        .unwrap()
        .iter()
        .map(|entry| entry["action"].as_str().unwrap())
        .filter(|action| action.starts_with("dead_letter."))
        .collect();
    assert_eq!(
        actions,
        ["dead_letter.delete", "dead_letter.requeue"],
        "{audit}"
    );
}

/// While the store refuses writes, `/healthz` says so, so a load balancer or an operator knows
/// the server cannot do its work.
#[tokio::test]
async fn health_is_503_with_the_reason_while_the_store_refuses_writes() {
    let (server, refuse_writes, _) = faulty_server().await;
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["store"]["recovery"]["intents_replayed"], 0);
    refuse_writes.store(true, Ordering::SeqCst);
    let (status, health) = server.get("/healthz").await;
    assert_eq!(status, 503, "{health}");
    assert_eq!(health["error"]["code"], "unhealthy");
    assert!(
        health["error"]["message"]
            .as_str()
            .unwrap()
            .contains("the store refuses writes"),
        "{health}"
    );
    refuse_writes.store(false, Ordering::SeqCst);
    assert_eq!(server.get("/healthz").await.0, 200);
}
