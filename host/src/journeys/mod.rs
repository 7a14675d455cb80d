//! Journeys: their definitions and versions, publishing (with validation), and running the
//! work the inbox holds — triggers, conditions, actions, waits, splits, goals — one batch per
//! commit. The scheduler decides when work runs; this module decides what it does.
//!
//! Calls plugins through the runtime and writes through the store; knows nothing of HTTP.

mod activation;
mod compiled;
pub mod definition;
mod diff;
mod reports;
mod simulate;
mod step;
mod validate;
pub mod windows;

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, MutexGuard, RwLock};

use thiserror::Error;

pub use activation::Moved;
pub use compiled::CompiledJourney;
pub use definition::Definition;
pub use reports::{JourneyTotals, NodeStats};
pub use simulate::{ScriptStep, Simulation, SimulationRequest};
pub use step::{MAX_ATTEMPTS, TraceStep, split_path};
pub use validate::{Problem, parse};

use crate::clock::SharedClock;
use crate::registry::Registry;
use crate::runtime::Runtime;
use crate::store::{
    AuditEntry, Enrollment, JourneyRecord, JourneyStatus, JourneyVersion, State, Store, StoreError,
    WorkItem, WorkKey,
};

/// Why a journey operation was refused.
#[derive(Debug, Error)]
pub enum JourneyError {
    #[error("no journey `{0}`")]
    NotFound(String),
    #[error("journey `{0}` has no published version {1}")]
    VersionNotFound(String, u32),
    #[error("the journey definition is not valid: {0}")]
    Malformed(String),
    #[error("no enrollment `{0}`")]
    EnrollmentNotFound(String),
    #[error("enrollment `{0}` is not parked; only a parked enrollment is retried by hand")]
    NotParked(String),
    #[error("the simulation cannot run: {0}")]
    BadSimulation(String),
    #[error("the journey cannot be published as it is")]
    Invalid(Vec<Problem>),
    #[error("journey `{0}` is archived")]
    Archived(String),
    /// Content approval is on and these template versions it would send are not approved.
    #[error("it sends content no manager has approved: {}; a manager approves each with POST /v1/templates/NAME/versions/N/approve", .0.join(", "))]
    Unapproved(Vec<String>),
    #[error("journey `{0}` exists already")]
    Exists(String),
    #[error("journey `{0}` is not active: {1}")]
    NotActive(String, &'static str),
    /// A move to a plugin version that is not installed.
    #[error("plugin `{0}` is not loaded; upload it with PUT /v1/admin/plugins/NAME")]
    PluginNotLoaded(String),
    /// A move of a plugin that no published version of the journey runs.
    #[error("no published version of journey `{0}` runs plugin `{1}`")]
    PluginNotUsed(String, String),
    /// A move the new plugin version refuses: it does not accept a config the journey gives it.
    #[error("the journey cannot move to plugin `{0}`: its versions' configs do not pass it")]
    MoveRefused(String, Vec<Problem>),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Published versions made runnable, and which journeys enroll now. A cache of the store.
pub struct Catalog {
    versions: RwLock<HashMap<(String, u32), Arc<CompiledJourney>>>,
    /// Journeys that enroll: their latest version, by journey id.
    active: RwLock<BTreeMap<String, Arc<CompiledJourney>>>,
    archived: RwLock<std::collections::BTreeSet<String>>,
    store: Arc<dyn Store>,
    registry: Arc<Registry>,
    runtime: Arc<Runtime>,
}

impl Catalog {
    fn new(store: Arc<dyn Store>, registry: Arc<Registry>, runtime: Arc<Runtime>) -> Self {
        Catalog {
            versions: RwLock::default(),
            active: RwLock::default(),
            archived: RwLock::default(),
            store,
            registry,
            runtime,
        }
    }

    /// The journeys that enroll contacts now.
    pub fn active(&self) -> Vec<Arc<CompiledJourney>> {
        self.active
            .read()
            .expect("catalog lock")
            .values()
            .cloned()
            .collect()
    }

    pub fn is_archived(&self, journey_id: &str) -> bool {
        self.archived
            .read()
            .expect("catalog lock")
            .contains(journey_id)
    }

    /// A published version, built on first use.
    pub fn version(&self, journey_id: &str, version: u32) -> Result<Arc<CompiledJourney>, String> {
        let key = (journey_id.to_owned(), version);
        if let Some(found) = self.versions.read().expect("catalog lock").get(&key) {
            return Ok(found.clone());
        }
        let stored = self
            .store
            .journey_version(journey_id, version)
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("journey `{journey_id}` has no version {version}"))?;
        let moved = self
            .store
            .journey(journey_id)
            .map_err(|e| e.to_string())?
            .map(|record| record.plugin_versions)
            .unwrap_or_default();
        let built = Arc::new(CompiledJourney::build(
            &stored,
            &moved,
            &self.registry,
            &self.runtime,
        )?);
        // A version installed meanwhile (by a plugin move) is newer than one built from the
        // record read before it: keep it.
        Ok(self
            .versions
            .write()
            .expect("catalog lock")
            .entry(key)
            .or_insert(built)
            .clone())
    }

    /// The active journey with this id.
    pub fn active_journey(&self, journey_id: &str) -> Option<Arc<CompiledJourney>> {
        self.active
            .read()
            .expect("catalog lock")
            .get(journey_id)
            .cloned()
    }

    /// Take a built version into the catalog (publishing writes it first).
    fn install(&self, built: Arc<CompiledJourney>) {
        self.versions
            .write()
            .expect("catalog lock")
            .insert((built.journey_id.clone(), built.version), built);
    }

    /// Bring one journey's entry in the catalog up to date with its record.
    fn refresh(&self, record: &JourneyRecord) -> Result<(), String> {
        let mut archived = self.archived.write().expect("catalog lock");
        if record.status == JourneyStatus::Archived {
            archived.insert(record.id.clone());
        } else {
            archived.remove(&record.id);
        }
        drop(archived);
        if record.status == JourneyStatus::Active {
            let built = self.version(&record.id, record.published_version)?;
            self.active
                .write()
                .expect("catalog lock")
                .insert(record.id.clone(), built);
        } else {
            self.active
                .write()
                .expect("catalog lock")
                .remove(&record.id);
        }
        Ok(())
    }
}

/// The journeys service: everything the API and the scheduler ask of journeys.
pub struct Journeys {
    pub store: Arc<dyn Store>,
    pub runtime: Arc<Runtime>,
    pub registry: Arc<Registry>,
    pub clock: SharedClock,
    pub catalog: Catalog,
    /// The scoring models, run on each event in the event's batch.
    pub scoring: Arc<crate::scoring::Scoring>,
    /// The lifecycle stage rules, applied after each event from outside.
    pub lifecycle: Arc<crate::lifecycle::Lifecycle>,
    /// The segments and tag rules, looked at for every contact a batch touched.
    pub audiences: Arc<crate::audiences::Audiences>,
    /// Inbox items run and committed since the service started.
    committed: AtomicU64,
}

impl Journeys {
    /// The service over `store`, with every stored journey's state loaded.
    pub fn new(
        store: Arc<dyn Store>,
        runtime: Arc<Runtime>,
        registry: Arc<Registry>,
        clock: SharedClock,
    ) -> Result<Self, StoreError> {
        let scoring = crate::scoring::Scoring::load(
            store.clone(),
            registry.clone(),
            runtime.clone(),
            clock.clone(),
        )?;
        let journeys = Journeys {
            catalog: Catalog::new(store.clone(), registry.clone(), runtime.clone()),
            scoring: Arc::new(scoring),
            lifecycle: Arc::new(crate::lifecycle::Lifecycle::load(
                store.clone(),
                clock.clone(),
            )?),
            audiences: Arc::new(crate::audiences::Audiences::load(
                store.clone(),
                clock.clone(),
            )?),
            store,
            runtime,
            registry,
            clock,
            committed: AtomicU64::new(0),
        };
        for record in journeys.store.journeys()? {
            if let Err(error) = journeys.catalog.refresh(&record) {
                tracing::error!(journey = %record.id, %error, "journey cannot run; it enrolls no one until fixed");
            }
            journeys.start_backfill(&record)?;
        }
        Ok(journeys)
    }

    /// Held by every change to a journey's record (create, draft, publish, status, plugin
    /// move), from its read to its write and the catalog's update, so none is lost or undone
    /// by another; it is the registry's pinning lock, so a plugin version a change pins cannot
    /// be deleted meanwhile.
    fn changing(&self) -> MutexGuard<'_, ()> {
        self.registry.pinning()
    }

    /// Create a journey with a draft. `id` defaults to a new one.
    pub fn create(
        &self,
        id: Option<String>,
        draft: serde_json::Value,
        actor: &str,
    ) -> Result<JourneyRecord, JourneyError> {
        let _changing = self.changing();
        self.create_locked(id, draft, actor)
    }

    fn create_locked(
        &self,
        id: Option<String>,
        draft: serde_json::Value,
        actor: &str,
    ) -> Result<JourneyRecord, JourneyError> {
        parse(&draft)?;
        let id = match id {
            Some(id) => check_id(id)?,
            None => new_journey_id(),
        };
        if self.store.journey(&id)?.is_some() {
            return Err(JourneyError::Exists(id));
        }
        let now = self.clock.now();
        let record = JourneyRecord {
            id,
            status: JourneyStatus::Draft,
            draft,
            published_version: 0,
            plugin_versions: Default::default(),
            created_at: now,
            updated_at: now,
        };
        let detail = serde_json::json!({"after": {"draft": record.draft}});
        let audit = AuditEntry::new(now, actor, "journey.create", &record.id, detail);
        self.store.put_journey(&record, audit)?;
        Ok(record)
    }

    /// Replace the draft (creating the journey if it is new). Published versions stay as they
    /// were; the change reaches contacts when the draft is published.
    pub fn save_draft(
        &self,
        id: String,
        draft: serde_json::Value,
        actor: &str,
    ) -> Result<(JourneyRecord, bool), JourneyError> {
        parse(&draft)?;
        let id = check_id(id)?;
        let _changing = self.changing();
        match self.store.journey(&id)? {
            None => self
                .create_locked(Some(id), draft, actor)
                .map(|r| (r, true)),
            Some(record) if record.status == JourneyStatus::Archived => {
                Err(JourneyError::Archived(id))
            }
            Some(mut record) => {
                let before = std::mem::replace(&mut record.draft, draft);
                record.updated_at = self.clock.now();
                let detail = serde_json::json!({"before": {"draft": before}, "after": {"draft": record.draft}});
                let audit = AuditEntry::new(record.updated_at, actor, "journey.draft", &id, detail);
                self.store.put_journey(&record, audit)?;
                Ok((record, false))
            }
        }
    }

    pub fn get(&self, id: &str) -> Result<JourneyRecord, JourneyError> {
        self.store
            .journey(id)?
            .ok_or_else(|| JourneyError::NotFound(id.to_owned()))
    }

    pub fn list(&self) -> Result<Vec<JourneyRecord>, JourneyError> {
        Ok(self.store.journeys()?)
    }

    pub fn version(&self, id: &str, version: u32) -> Result<JourneyVersion, JourneyError> {
        self.store
            .journey_version(id, version)?
            .ok_or(JourneyError::VersionNotFound(id.to_owned(), version))
    }

    /// Check the draft (graph, plugins, the journeys it feeds) and publish it as the next
    /// version, which new enrollments use from now on; what deserves a look comes back as
    /// warnings. Contacts already in the journey stay on their version. All or nothing: the
    /// version is built (each plugin preparing its config) before anything is written.
    pub fn publish(
        &self,
        id: &str,
        actor: &str,
    ) -> Result<(JourneyVersion, Vec<Problem>), JourneyError> {
        let _changing = self.changing();
        let mut record = self.get(id)?;
        if record.status == JourneyStatus::Archived {
            return Err(JourneyError::Archived(id.to_owned()));
        }
        let definition = parse(&record.draft)?;
        let checked = validate::validate(
            id,
            &definition,
            &record.plugin_versions,
            &self.catalog.active(),
            &self.registry,
            &self.runtime,
        )
        .map_err(JourneyError::Invalid)?;
        let now = self.clock.now();
        // What it sends must exist: a bound channel and a template, pinned at its newest
        // version now.
        let mut templates = std::collections::BTreeMap::new();
        let mut problems = Vec::new();
        let mut unguarded = Vec::new();
        let approval = self.store.workspace()?.content_approval;
        let mut unapproved = Vec::new();
        let models = self.scoring.names();
        for (node, channel, name) in validate::sends_of(&checked.definition) {
            if self.store.channel(&channel)?.is_none() {
                problems.push(Problem::at(
                    &node,
                    format!("it sends through channel `{channel}`, which is not bound; bind it with PUT /v1/channels/{channel}"),
                ));
            }
            match self.store.template(&name, None)? {
                Some(template) if approval && template.approved_by.is_none() => {
                    let named = format!("{name} v{}", template.version);
                    if !unapproved.contains(&named) {
                        unapproved.push(named);
                    }
                }
                Some(template) => {
                    for variable in crate::messaging::templates::unguarded(&template, &models) {
                        unguarded.push(Problem::at(
                            &node,
                            format!("template `{name}` v{} prints `{variable}` without a fallback: a message to a contact without it fails", template.version),
                        ));
                    }
                    templates.insert(name, template.version);
                }
                None => problems.push(Problem::at(
                    &node,
                    format!("it sends template `{name}`, which does not exist; create it with PUT /v1/templates/{name}"),
                )),
            }
        }
        let mut plugins: Vec<_> = checked.plugins.iter().collect();
        plugins.sort_by_key(|(node, _)| *node);
        for (node, plugin) in plugins {
            for name in plugin.config.attributes.iter().flatten() {
                if let Some(model) = name.strip_prefix(crate::standing::SCORES)
                    && !models.iter().any(|m| m == model)
                {
                    unguarded.push(Problem::at(
                        node,
                        format!("it reads `{name}`, but there is no scoring model `{model}`: the plugin finds no such value until one is defined with PUT /v1/scoring/models/{model}"),
                    ));
                }
            }
        }
        if let Some(backfill) = &checked.definition.backfill {
            let segment = crate::store::AudienceKind::Segment;
            if self.audiences.get(segment, &backfill.segment).is_none() {
                problems.push(Problem::at(
                    "backfill",
                    format!("it backfills segment `{}`, which does not exist; define it with PUT /v1/segments/{}", backfill.segment, backfill.segment),
                ));
            }
            if !(1..=definition::Backfill::MAX_RATE).contains(&backfill.per_second) {
                problems.push(Problem::at(
                    "backfill",
                    format!("per_second is from 1 to {}", definition::Backfill::MAX_RATE),
                ));
            }
        }
        if !problems.is_empty() {
            return Err(JourneyError::Invalid(problems));
        }
        if !unapproved.is_empty() {
            return Err(JourneyError::Unapproved(unapproved));
        }
        let version = JourneyVersion {
            journey_id: id.to_owned(),
            version: record.published_version + 1,
            definition: serde_json::to_value(&checked.definition).expect("definitions serialize"),
            published_at: now,
            templates: templates.clone(),
        };
        let built = CompiledJourney::new(
            id,
            version.version,
            checked.definition,
            checked.plugins,
            templates,
        )
        .map(Arc::new)
        .map_err(JourneyError::Malformed)?;
        let before = record.status;
        record.published_version = version.version;
        if record.status == JourneyStatus::Draft {
            record.status = JourneyStatus::Active;
        }
        record.updated_at = now;
        let detail = serde_json::json!({
            "version": version.version,
            "before": {"status": before},
            "after": {"status": record.status},
            "templates": version.templates,
        });
        let audit = AuditEntry::new(now, actor, "journey.publish", id, detail);
        self.store.publish_journey(&record, &version, audit)?;
        self.catalog.install(built);
        self.catalog
            .refresh(&record)
            .expect("the version just built is in the catalog");
        self.start_backfill(&record)?;
        let mut warnings = checked.warnings;
        warnings.extend(unguarded);
        Ok((version, warnings))
    }

    /// Start the backfill of the journey's published version, if it has one and it was not
    /// started yet: after publishing, and at start-up for a publish a crash cut short.
    fn start_backfill(&self, record: &JourneyRecord) -> Result<(), StoreError> {
        let Some(journey) = self.catalog.active_journey(&record.id) else {
            return Ok(());
        };
        let Some(backfill) = &journey.definition.backfill else {
            return Ok(());
        };
        let id = format!("backfill:{}:v{}", record.id, journey.version);
        if self.store.sweeps()?.iter().any(|sweep| sweep.id == id) {
            return Ok(());
        }
        self.store.start_sweep(&crate::store::SweepRecord {
            id,
            work: crate::store::SweepWork::Enroll {
                journey_id: record.id.clone(),
                version: journey.version,
            },
            segment: Some(backfill.segment.clone()),
            after: None,
            queued: 0,
            per_second: backfill.per_second,
            started_at: self.clock.now(),
            finished_at: None,
        })
    }

    /// Stop enrolling (`Paused`), enroll again (`Active`), or retire for good (`Archived`).
    pub fn set_status(
        &self,
        id: &str,
        status: JourneyStatus,
        actor: &str,
    ) -> Result<JourneyRecord, JourneyError> {
        let _changing = self.changing();
        let mut record = self.get(id)?;
        if record.status == JourneyStatus::Archived {
            return Err(JourneyError::Archived(id.to_owned()));
        }
        if status != JourneyStatus::Archived && record.published_version == 0 {
            return Err(JourneyError::NotActive(id.to_owned(), "publish it first"));
        }
        let before = std::mem::replace(&mut record.status, status);
        record.updated_at = self.clock.now();
        // Resuming enrolls on the latest version again: it must still build.
        if status == JourneyStatus::Active {
            self.catalog
                .version(id, record.published_version)
                .map_err(JourneyError::Malformed)?;
        }
        let action = match status {
            JourneyStatus::Active => "journey.resume",
            JourneyStatus::Paused => "journey.pause",
            JourneyStatus::Archived => "journey.archive",
            JourneyStatus::Draft => "journey.status",
        };
        let detail = serde_json::json!({"before": {"status": before}, "after": {"status": status}});
        let audit = AuditEntry::new(record.updated_at, actor, action, id, detail);
        self.store.put_journey(&record, audit)?;
        self.catalog
            .refresh(&record)
            .map_err(JourneyError::Malformed)?;
        Ok(record)
    }

    /// Queue "enroll this contact now"; `Ok(false)` when `request_id` was used before.
    pub fn request_enrollment(
        &self,
        journey_id: &str,
        contact_id: &str,
        request_id: String,
    ) -> Result<bool, JourneyError> {
        let record = self.get(journey_id)?;
        match record.status {
            JourneyStatus::Active => {}
            JourneyStatus::Archived => return Err(JourneyError::Archived(journey_id.to_owned())),
            JourneyStatus::Paused => {
                return Err(JourneyError::NotActive(
                    journey_id.to_owned(),
                    "it is paused",
                ));
            }
            JourneyStatus::Draft => {
                return Err(JourneyError::NotActive(
                    journey_id.to_owned(),
                    "it has never been published",
                ));
            }
        }
        Ok(self.store.enqueue_enrollment(&WorkItem::Enroll {
            contact_id: contact_id.to_owned(),
            journey_id: journey_id.to_owned(),
            request_id,
        })?)
    }

    /// Queue a parked enrollment to run its node again; the enrollment as it stands now.
    pub fn retry(&self, enrollment_id: &str) -> Result<Enrollment, JourneyError> {
        let enrollment = self
            .store
            .enrollment(enrollment_id)?
            .ok_or_else(|| JourneyError::EnrollmentNotFound(enrollment_id.to_owned()))?;
        if !matches!(enrollment.state, State::Parked { .. }) {
            return Err(JourneyError::NotParked(enrollment_id.to_owned()));
        }
        self.store.enqueue(&WorkItem::Retry {
            contact_id: enrollment.contact_id.clone(),
            enrollment_id: enrollment_id.to_owned(),
        })?;
        Ok(enrollment)
    }

    /// Run a batch of inbox items and commit what they did; the partitions that got new work
    /// from it. The caller must own the items' partitions: no other batch may be running for
    /// the same contacts.
    /// An erasure is a batch of its own: what came before it is committed first, so it finds
    /// everything of the contact on disk (events listed, enrollments and counts as they are).
    pub fn process(&self, items: &[(WorkKey, WorkItem)]) -> Result<Vec<u8>, StoreError> {
        let mut partitions = Vec::new();
        let mut rest = items;
        while !rest.is_empty() {
            let erasure = rest
                .iter()
                .position(|(_, item)| matches!(item, WorkItem::Erase { .. }));
            let length = match erasure {
                Some(0) => 1,
                Some(at) => at,
                None => rest.len(),
            };
            let (now, later) = rest.split_at(length);
            partitions.extend(self.process_one(now)?);
            rest = later;
        }
        partitions.sort_unstable();
        partitions.dedup();
        Ok(partitions)
    }

    fn process_one(&self, items: &[(WorkKey, WorkItem)]) -> Result<Vec<u8>, StoreError> {
        let mut batch = step::Batch::new(self, false);
        for (key, item) in items {
            batch.handle(key, item)?;
        }
        let (commit, _) = batch.into_commit()?;
        let partitions = self.store.commit(commit)?;
        self.committed
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(partitions)
    }

    /// How many inbox items have run and been committed since the service started: a gauge
    /// of progress that, unlike the stored counters, can be read without touching the store.
    pub fn items_committed(&self) -> u64 {
        self.committed.load(Ordering::Relaxed)
    }

    /// Like [`Journeys::process`], also returning what each node saw and did.
    pub fn process_traced(
        &self,
        items: &[(WorkKey, WorkItem)],
    ) -> Result<Vec<TraceStep>, StoreError> {
        let mut batch = step::Batch::new(self, true);
        for (key, item) in items {
            batch.handle(key, item)?;
        }
        let (commit, trace) = batch.into_commit()?;
        self.store.commit(commit)?;
        self.committed
            .fetch_add(items.len() as u64, Ordering::Relaxed);
        Ok(trace.unwrap_or_default())
    }
}

fn check_id(id: String) -> Result<String, JourneyError> {
    let fine = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if fine {
        Ok(id)
    } else {
        Err(JourneyError::Malformed(format!(
            "journey id `{id}`: use 1 to 128 letters, digits, `-`, `_` or `.`"
        )))
    }
}

fn new_journey_id() -> String {
    let mut bytes = [0u8; 8];
    getrandom::fill(&mut bytes).expect("the OS provides randomness");
    format!("j_{}", hex::encode(bytes))
}
