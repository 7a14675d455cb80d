//! One plugin call: a fresh store with the plugin's limits, instantiate, call, and turn whatever
//! happened into a typed result, the plugin's logs and the time it took.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use serde::Serialize;
use wasmtime::{Store, Trap, UpdateDeadline};

use super::Runtime;
use super::bindings::{v2, wit};
use super::entry::{self, Evaluate, Matches, Run, Score};
use super::error::CallError;
use super::host::{CallContext, HostState, HttpGrant, LogRecord};
use super::load::{Plugin, PluginKind, WitVersion};
use super::lower::{ContactRef, EventRef};
use super::output::{self, OutputSize};
use crate::model::{
    ConfigProblem, Contact, DeliveryOutcome, Effect, Event, Message, PluginInfo, PreparedConfig,
    ProviderEvent, ScoreChange, WebhookRejection, WebhookRequest,
};

/// What one call produced: its result, the plugin's logs, and how long it took.
#[derive(Debug)]
pub struct CallReport<T> {
    pub result: Result<T, CallError>,
    pub logs: Vec<LogRecord>,
    pub elapsed: Duration,
    /// Of `elapsed`, the time spent waiting on the host's HTTP and SMTP for the plugin.
    pub waited: Duration,
}

/// `{"ok": …}` or `{"error": {"code", "message"}}`, with `logs` and `elapsed_us`.
impl<T: Serialize> Serialize for CallReport<T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(3))?;
        match &self.result {
            Ok(value) => map.serialize_entry("ok", value)?,
            Err(error) => map.serialize_entry(
                "error",
                &serde_json::json!({"code": error.code(), "message": error.to_string()}),
            )?,
        }
        map.serialize_entry("logs", &self.logs)?;
        map.serialize_entry("elapsed_us", &(self.elapsed.as_micros() as u64))?;
        map.end()
    }
}

impl<T> CallReport<T> {
    fn wrong_kind(plugin: &Plugin, expected: PluginKind) -> Self {
        CallReport {
            result: Err(CallError::WrongKind {
                expected: expected.as_str(),
                actual: plugin.kind.as_str(),
            }),
            logs: Vec::new(),
            elapsed: Duration::ZERO,
            waited: Duration::ZERO,
        }
    }

    /// The same report with its value transformed.
    pub fn map<U>(self, f: impl FnOnce(T) -> U) -> CallReport<U> {
        CallReport {
            result: self.result.map(f),
            logs: self.logs,
            elapsed: self.elapsed,
            waited: self.waited,
        }
    }
}

/// The plugin's own answer and the WIT result it was wrapped in.
type Outcome<T, E> = wasmtime::Result<Result<T, E>>;

impl Runtime {
    pub(crate) fn store(&self, plugin: &Plugin, http: Option<HttpGrant>) -> Store<HostState> {
        let context = CallContext {
            plugin_id: plugin.id.clone(),
            kv: self.kv.clone(),
            kv_namespace: Arc::from(plugin.info.name.as_str()),
            clock: self.clock.clone(),
            http,
            ticks: self.ticker.ticks.clone(),
            tick_ms: super::engine::TICK.as_millis() as u64,
        };
        let state = HostState::new(context, &plugin.limits);
        let mut store = Store::new(&self.engine, state);
        store.limiter(|state| &mut state.limiter);
        // Check the call's time at the next tick and every tick after, while the guest runs.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|mut context| {
            Ok(match context.data_mut().cpu.check() {
                true => UpdateDeadline::Continue(1),
                false => UpdateDeadline::Interrupt,
            })
        });
        store
    }

    /// Run `call` in a fresh store and classify what happened.
    fn run<T: OutputSize, E: Into<CallError>>(
        &self,
        plugin: &Plugin,
        call: impl FnOnce(&mut Store<HostState>) -> Outcome<T, E>,
    ) -> CallReport<T> {
        let started = Instant::now();
        let mut store = self.store(plugin, None);
        let outcome = call(&mut store);
        finish(plugin, store, Ok(outcome), started)
    }

    /// Like [`Runtime::run`] for async worlds. With outbound HTTP granted, the call is also
    /// bounded by the plugin's wall-clock limit (a tokio timer, so only inside a tokio runtime);
    /// without it the guest cannot wait on anything and its CPU deadline bounds it.
    async fn run_async<T: OutputSize, E: Into<CallError>>(
        &self,
        plugin: &Plugin,
        http: Option<HttpGrant>,
        call: impl AsyncFnOnce(&mut Store<HostState>) -> Outcome<T, E>,
    ) -> CallReport<T> {
        let started = Instant::now();
        let bounded_by_wall_clock = http.is_some();
        let mut store = self.store(plugin, http);
        let outcome = if bounded_by_wall_clock {
            let wall = Duration::from_millis(plugin.limits.wall_ms);
            tokio::time::timeout(wall, call(&mut store))
                .await
                .map_err(|_| CallError::Timeout {
                    wall_ms: plugin.limits.wall_ms,
                })
        } else {
            Ok(call(&mut store).await)
        };
        finish(plugin, store, outcome, started)
    }

    /// `describe` of any plugin.
    pub fn describe(&self, plugin: &Plugin) -> CallReport<PluginInfo> {
        let pre = &plugin.pre;
        let report = if plugin.kind == PluginKind::Channel {
            block_on(self.run_async(plugin, None, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let describe =
                    instance.get_typed_func::<(), (wit::PluginInfo,)>(&mut *s, pre.describe)?;
                Ok(Ok::<_, CallError>(describe.call_async(s, ()).await?.0))
            }))
        } else {
            self.run(plugin, |s| {
                let instance = pre.instance.instantiate(&mut *s)?;
                let describe =
                    instance.get_typed_func::<(), (wit::PluginInfo,)>(&mut *s, pre.describe)?;
                Ok(Ok::<_, CallError>(describe.call(s, ())?.0))
            })
        };
        report.map(PluginInfo::from)
    }

    /// `validate-config` of any plugin: `Ok(Ok(prepared))` when the plugin accepts the JSON
    /// config, `Ok(Err(problems))` when it refuses it.
    ///
    /// The prepared config is what every later call of this plugin takes: keep it with the
    /// journey step. Its bytes are opaque to the host and belong to this plugin binary; after
    /// loading another version, validate the config again. Its size counts against the
    /// plugin's output limit.
    pub fn validate_config(
        &self,
        plugin: &Plugin,
        config: &str,
    ) -> CallReport<Result<PreparedConfig, Vec<ConfigProblem>>> {
        type Verdict = Result<wit::PreparedConfig, Vec<wit::ConfigProblem>>;
        let pre = &plugin.pre;
        let report = if plugin.kind == PluginKind::Channel {
            block_on(self.run_async(plugin, None, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let validate =
                    instance.get_typed_func::<(&str,), (Verdict,)>(&mut *s, pre.validate_config)?;
                Ok(Ok::<_, CallError>(
                    validate.call_async(s, (config,)).await?.0,
                ))
            }))
        } else {
            self.run(plugin, |s| {
                let instance = pre.instance.instantiate(&mut *s)?;
                let validate =
                    instance.get_typed_func::<(&str,), (Verdict,)>(&mut *s, pre.validate_config)?;
                Ok(Ok::<_, CallError>(validate.call(s, (config,))?.0))
            })
        };
        report.map(|verdict| {
            verdict
                .map(PreparedConfig::from)
                .map_err(|problems| problems.into_iter().map(ConfigProblem::from).collect())
        })
    }

    /// Does `event` enroll `contact`? (trigger plugins)
    pub fn matches(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        event: &Event,
        contact: &Contact,
    ) -> CallReport<bool> {
        if plugin.kind != PluginKind::Trigger {
            return CallReport::wrong_kind(plugin, PluginKind::Trigger);
        }
        let (event, contact) = (
            EventRef::from(event),
            ContactRef::new(contact, config.attributes.as_deref()),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let matches = entry::typed::<Matches>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            Ok(
                match matches
                    .call(&mut *s, (config.bytes.as_slice(), &event, &contact))?
                    .0
                {
                    Ok(matched) => Ok(matched),
                    Err(error) => Err(output::plugin_error(&error, s, limit)?),
                },
            )
        })
    }

    /// Which branch does `contact` take? (condition plugins)
    pub fn evaluate(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: Option<&Event>,
    ) -> CallReport<String> {
        if plugin.kind != PluginKind::Condition {
            return CallReport::wrong_kind(plugin, PluginKind::Condition);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            event.map(EventRef::from),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let evaluate = entry::typed::<Evaluate>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = evaluate
                .call(&mut *s, (config.bytes.as_slice(), &contact, event.as_ref()))?
                .0;
            match result {
                Ok(label) => output::text(&label, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
    }

    /// What changes for `contact`? (action plugins)
    pub fn run_action(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: Option<&Event>,
    ) -> CallReport<Vec<Effect>> {
        if plugin.kind != PluginKind::Action {
            return CallReport::wrong_kind(plugin, PluginKind::Action);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            event.map(EventRef::from),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let run = entry::typed::<Run>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = run
                .call(&mut *s, (config.bytes.as_slice(), &contact, event.as_ref()))?
                .0;
            match result {
                Ok(effects) => output::list(&effects, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
        .map(|effects| effects.into_iter().map(Effect::from).collect())
    }

    /// How does `event` change `contact`'s score? (scorer plugins)
    pub fn score(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        contact: &Contact,
        event: &Event,
    ) -> CallReport<Vec<ScoreChange>> {
        if plugin.kind != PluginKind::Scorer {
            return CallReport::wrong_kind(plugin, PluginKind::Scorer);
        }
        let (contact, event) = (
            ContactRef::new(contact, config.attributes.as_deref()),
            EventRef::from(event),
        );
        self.run(plugin, |s| {
            let instance = plugin.pre.instance.instantiate(&mut *s)?;
            let score = entry::typed::<Score>(plugin, &instance, s)?;
            let limit = plugin.limits.output_bytes;
            let result = score
                .call(&mut *s, (config.bytes.as_slice(), &contact, &event))?
                .0;
            match result {
                Ok(changes) => output::list(&changes, s, limit),
                Err(error) => Ok(Err(output::plugin_error(&error, s, limit)?)),
            }
        })
        .map(|changes| changes.into_iter().map(ScoreChange::from).collect())
    }

    /// Deliver `message` with the plugin's own outbound policy (the settings it was loaded
    /// with). (channel plugins; the only calls that may use outbound HTTP)
    pub async fn deliver(
        &self,
        plugin: &Plugin,
        config: &PreparedConfig,
        message: &Message,
    ) -> CallReport<DeliveryOutcome> {
        let egress = plugin.http.clone();
        self.deliver_through(plugin, egress, config, message).await
    }

    /// Deliver `message` with `egress` as the outbound policy: a channel binding's approved
    /// hosts and secrets.
    pub async fn deliver_through(
        &self,
        plugin: &Plugin,
        egress: Option<Arc<super::egress::Egress>>,
        config: &PreparedConfig,
        message: &Message,
    ) -> CallReport<DeliveryOutcome> {
        if plugin.kind != PluginKind::Channel {
            return CallReport::wrong_kind(plugin, PluginKind::Channel);
        }
        type Outcome = (Result<wit::Delivery, wit::DeliveryFailure>,);
        let grant = egress.map(HttpGrant::sending);
        let (pre, entry) = (&plugin.pre, plugin.entry);
        let report = match plugin.wit_version {
            WitVersion::V0_1 => {
                let message = wit::Message::from(message);
                self.run_async(plugin, grant, async |s| {
                    let instance = pre.instance.instantiate_async(&mut *s).await?;
                    let deliver = instance
                        .get_typed_func::<(&[u8], &wit::Message), Outcome>(&mut *s, entry)?;
                    let outcome = deliver.call_async(s, (&config.bytes, &message)).await?.0;
                    // A classified delivery failure is the plugin doing its job, not a call
                    // error.
                    Ok(Ok::<_, CallError>(outcome))
                })
                .await
            }
            WitVersion::V0_2 => {
                let message = v2::types::Message::from(message);
                self.run_async(plugin, grant, async |s| {
                    let instance = pre.instance.instantiate_async(&mut *s).await?;
                    let deliver = instance
                        .get_typed_func::<(&[u8], &v2::types::Message), Outcome>(&mut *s, entry)?;
                    let outcome = deliver.call_async(s, (&config.bytes, &message)).await?.0;
                    Ok(Ok::<_, CallError>(outcome))
                })
                .await
            }
        };
        report.map(DeliveryOutcome::from)
    }

    /// What a provider's webhook request reports, read by the channel plugin (0.2.0 channels;
    /// a 0.1.0 channel has no `parse-webhook`). No outbound HTTP or SMTP.
    pub async fn parse_webhook(
        &self,
        plugin: &Plugin,
        egress: Option<Arc<super::egress::Egress>>,
        config: &PreparedConfig,
        request: &WebhookRequest,
    ) -> CallReport<Result<Vec<ProviderEvent>, WebhookRejection>> {
        let Some(parse) = plugin.pre.parse_webhook else {
            return CallReport {
                result: Err(CallError::WrongKind {
                    expected: "0.2.0 channel (with parse-webhook)",
                    actual: plugin.kind.as_str(),
                }),
                logs: Vec::new(),
                elapsed: Duration::ZERO,
                waited: Duration::ZERO,
            };
        };
        type Parsed = (Result<Vec<v2::types::ProviderEvent>, v2::types::WebhookError>,);
        let request = v2::types::WebhookRequest::from(request);
        // Signatures are checked with the channel's secrets; nothing is sent anywhere.
        let grant = egress.map(HttpGrant::verifying);
        let pre = &plugin.pre;
        let report = self
            .run_async(plugin, grant, async |s| {
                let instance = pre.instance.instantiate_async(&mut *s).await?;
                let parse = instance
                    .get_typed_func::<(&[u8], &v2::types::WebhookRequest), Parsed>(
                        &mut *s, parse,
                    )?;
                let parsed = parse.call_async(s, (&config.bytes, &request)).await?.0;
                Ok(Ok::<_, CallError>(parsed))
            })
            .await;
        report.map(|parsed| {
            parsed
                .map(|events| events.into_iter().map(ProviderEvent::from).collect())
                .map_err(WebhookRejection::from)
        })
    }
}

impl From<String> for CallError {
    fn from(message: String) -> Self {
        CallError::Plugin(message)
    }
}

/// Turn the outcome and the store's record of the call into a report.
fn finish<T: OutputSize, E: Into<CallError>>(
    plugin: &Plugin,
    mut store: Store<HostState>,
    outcome: Result<Outcome<T, E>, CallError>,
    started: Instant,
) -> CallReport<T> {
    let elapsed = started.elapsed();
    let waited = store.data().waited;
    let logs = store.data_mut().take_logs();
    let result = match outcome {
        Err(host_limit) => Err(host_limit),
        Ok(Ok(Ok(value))) => {
            let size = value.output_size();
            if size > plugin.limits.output_bytes {
                Err(CallError::OutputLimit {
                    size,
                    limit: plugin.limits.output_bytes,
                })
            } else {
                Ok(value)
            }
        }
        Ok(Ok(Err(error))) => Err(error.into()),
        Ok(Err(error)) => Err(classify_failure(&error, store.data(), &logs, plugin)),
    }
    .map_err(CallError::bounded);
    if let Err(error) = &result {
        tracing::debug!(plugin = plugin.id(), code = error.code(), %error, "plugin call failed");
    }
    CallReport {
        result,
        logs,
        elapsed,
        waited,
    }
}

/// Name the limit or fault behind a trap, preferring what the host observed over the trap code.
fn classify_failure(
    error: &wasmtime::Error,
    state: &HostState,
    logs: &[LogRecord],
    plugin: &Plugin,
) -> CallError {
    if let Some(refused) = &state.limiter.refused {
        return CallError::MemoryLimit(refused.clone());
    }
    let trap = error.downcast_ref::<Trap>().copied();
    match state.cpu.exceeded {
        Some(super::host::TimeLimit::Wall) => {
            return CallError::Timeout {
                wall_ms: plugin.limits.wall_ms,
            };
        }
        Some(super::host::TimeLimit::Cpu) => {
            return CallError::CpuLimit {
                cpu_ms: plugin.limits.cpu_ms,
            };
        }
        None if trap == Some(Trap::Interrupt) => {
            return CallError::CpuLimit {
                cpu_ms: plugin.limits.cpu_ms,
            };
        }
        None => {}
    }
    match trap {
        Some(Trap::StackOverflow) => CallError::StackOverflow,
        Some(Trap::MemoryOutOfBounds) if ran_past_shadow_stack(error) => CallError::StackOverflow,
        Some(Trap::UnreachableCodeReached) => match logs.last() {
            // The SDK's panic hook logs the message at error level just before aborting.
            Some(last) if last.level == "error" && last.message.starts_with("panic: ") => {
                CallError::Panicked(last.message["panic: ".len()..].to_owned())
            }
            _ => CallError::Trapped(format!("{error:#}")),
        },
        _ => CallError::Trapped(format!("{error:#}")),
    }
}

/// Whether a memory fault is a guest's shadow stack running out. Rust and C guests keep that
/// stack at the bottom of linear memory (below their data), so overflowing it wraps the stack
/// pointer below zero and the fault lands in the top megabyte of the 32-bit address space,
/// which no plugin's memory reaches. wasmtime reports the address only in the error's text.
fn ran_past_shadow_stack(error: &wasmtime::Error) -> bool {
    let text = format!("{error:#}");
    let Some((_, rest)) = text.split_once("memory fault at wasm address 0x") else {
        return false;
    };
    let hex: String = rest.chars().take_while(char::is_ascii_hexdigit).collect();
    u64::from_str_radix(&hex, 16).is_ok_and(|address| (0xFFF0_0000..1 << 32).contains(&address))
}

/// Drive a future that never waits on I/O (HTTP is refused outside deliveries) to completion on
/// the current thread: describe and validate-config of async-world plugins.
fn block_on<F: Future>(future: F) -> F::Output {
    struct ThreadWaker(std::thread::Thread);
    impl Wake for ThreadWaker {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let mut future = std::pin::pin!(future);
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut context = Context::from_waker(&waker);
    loop {
        match future.as_mut().poll(&mut context) {
            Poll::Ready(output) => return output,
            Poll::Pending => std::thread::park(),
        }
    }
}
