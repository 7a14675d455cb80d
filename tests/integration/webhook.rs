//! Channel plugins reach the network only through the host: approved hosts only, secrets
//! written in by the host and redacted from what the plugin sees, bounded in time and size.
//! Every test talks to a real HTTP server on 127.0.0.1.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use serde_json::json;
use wayline::model::{DeliveryOutcome, FailureKind, Message, MessageClass};
use wayline::runtime::egress::{SecretSetting, SecretValue};
use wayline::runtime::{CallError, Limits, PluginSettings, WitVersion};

use crate::support;

const SECRET: &str = "tok-5f3a9c0e7d";

#[derive(Debug, Clone)]
struct Received {
    path: String,
    headers: HeaderMap,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Received>>>;

/// A provider on 127.0.0.1 with a route per behaviour a real CRM or webhook receiver shows.
async fn provider() -> (String, Log) {
    let log: Log = Arc::default();
    let app = Router::new()
        .route(
            "/hooks/ok",
            post(
                |State(log): State<Log>, headers: HeaderMap, body: Bytes| async move {
                    log.lock().unwrap().push(Received {
                        path: "/hooks/ok".into(),
                        headers,
                        body,
                    });
                    (StatusCode::CREATED, axum::Json(json!({"id": "crm-42"})))
                },
            ),
        )
        .route(
            "/hooks/busy",
            post(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [("retry-after", "30")],
                    "slow down",
                )
            }),
        )
        .route(
            "/hooks/gone",
            post(|| async { (StatusCode::NOT_FOUND, "no such recipient") }),
        )
        .route(
            "/echo",
            post(|headers: HeaderMap, body: Bytes| async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                (
                    StatusCode::OK,
                    [("x-echo", auth.clone())],
                    format!("auth={auth} body={}", String::from_utf8_lossy(&body)),
                )
            }),
        )
        .route(
            "/redirect",
            post(|| async {
                (
                    StatusCode::FOUND,
                    [("location", "http://127.0.0.2:9/stolen")],
                )
            }),
        )
        .route("/huge", post(|| async { vec![b'x'; 2 << 20] }))
        // A slow provider: the handler's delay stands for network and provider latency.
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_millis(400)).await;
                "done"
            }),
        )
        .route("/never", post(std::future::pending::<&'static str>))
        .route(
            "/echo-gzip",
            post(|headers: HeaderMap, body: Bytes| async move {
                use std::io::Write;
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_owned())
                    .unwrap_or_default();
                let text = format!("auth={auth} body={}", String::from_utf8_lossy(&body));
                let mut gzip =
                    flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                gzip.write_all(text.as_bytes()).unwrap();
                (
                    StatusCode::OK,
                    [("content-encoding", "gzip")],
                    gzip.finish().unwrap(),
                )
            }),
        )
        .route(
            "/echo-br",
            post(|body: Bytes| async move { (StatusCode::OK, [("content-encoding", "br")], body) }),
        )
        .route("/healthz", get(|| async { "ok" }))
        // Every request is seen, whatever its route: a refusal is only a refusal if nothing
        // arrived. (`/hooks/ok` records its own, with the body.)
        .layer(axum::middleware::from_fn_with_state(
            log.clone(),
            |State(log): State<Log>,
             request: axum::extract::Request,
             next: axum::middleware::Next| async move {
                if request.uri().path() != "/hooks/ok" {
                    log.lock().unwrap().push(Received {
                        path: request.uri().path().to_owned(),
                        headers: request.headers().clone(),
                        body: Bytes::new(),
                    });
                }
                next.run(request).await
            },
        ))
        .with_state(log.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{address}"), log)
}

fn message() -> Message {
    Message {
        id: "msg-0001".into(),
        contact_id: "c-1001".into(),
        recipient: "sales@example.com".into(),
        class: MessageClass::Transactional,
        test: false,
        subject: Some("Hot lead".into()),
        text: Some("Li Wei is asking about pricing; contact them now".into()),
        html: None,
        headers: vec![],
        metadata: BTreeMap::from([("journey".to_owned(), "score-alert".to_owned())]),
    }
}

/// Settings approving `approved`, with the secret `crm_token` bound to the first of them.
fn settings(approved: &[&str]) -> PluginSettings {
    PluginSettings {
        approved_hosts: approved.iter().map(|s| s.to_string()).collect(),
        secrets: BTreeMap::from([(
            "crm_token".to_owned(),
            SecretSetting {
                value: SecretValue(SECRET.to_owned()),
                hosts: vec![approved[0].to_owned()],
                verifies_webhooks: false,
            },
        )]),
        ..PluginSettings::default()
    }
}

async fn deliver(
    plugin_name: &str,
    settings: &PluginSettings,
    config: serde_json::Value,
) -> Result<DeliveryOutcome, CallError> {
    let (runtime, _clock) = support::runtime();
    let bytes = if plugin_name == "probe-channel" {
        support::fixture_bytes(plugin_name)
    } else {
        support::plugin_bytes(plugin_name)
    };
    let plugin = runtime.load(&bytes, settings).unwrap();
    let config = support::prepare(&runtime, &plugin, &config.to_string());
    runtime.deliver(&plugin, &config, &message()).await.result
}

#[tokio::test]
async fn a_webhook_is_delivered_with_the_secret_written_in_by_the_host() {
    let (base, log) = provider().await;
    let config = json!({"url": format!("{base}/hooks/ok"), "headers": {"Authorization": "Bearer {{secret:crm_token}}"}});
    let outcome = deliver("webhook-channel", &settings(&[&base]), config)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        DeliveryOutcome::Delivered {
            provider_id: "crm-42".into()
        }
    );
    let received = log.lock().unwrap().clone();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].path, "/hooks/ok");
    assert_eq!(
        received[0].headers["authorization"],
        format!("Bearer {SECRET}")
    );
    assert_eq!(received[0].headers["idempotency-key"], "msg-0001");
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["recipient"], "sales@example.com");
    assert_eq!(body["metadata"]["journey"], "score-alert");
}

#[tokio::test]
async fn provider_failures_are_classified_for_retry() {
    let (base, _log) = provider().await;
    let busy = deliver(
        "webhook-channel",
        &settings(&[&base]),
        json!({"url": format!("{base}/hooks/busy")}),
    )
    .await
    .unwrap();
    assert!(
        matches!(busy, DeliveryOutcome::Failed { kind: FailureKind::Retryable, retry_after_ms: Some(30_000), ref message } if message.contains("429")),
        "{busy:?}"
    );
    let gone = deliver(
        "webhook-channel",
        &settings(&[&base]),
        json!({"url": format!("{base}/hooks/gone")}),
    )
    .await
    .unwrap();
    assert!(
        matches!(
            gone,
            DeliveryOutcome::Failed {
                kind: FailureKind::InvalidRecipient,
                ..
            }
        ),
        "{gone:?}"
    );
}

#[tokio::test]
async fn a_host_the_operator_did_not_approve_is_never_contacted() {
    let (base, log) = provider().await;
    let outcome = deliver(
        "webhook-channel",
        &settings(&["https://crm.example.com"]),
        json!({"url": format!("{base}/hooks/ok")}),
    )
    .await
    .unwrap();
    assert!(
        matches!(&outcome, DeliveryOutcome::Failed { kind: FailureKind::Permanent, message, .. } if message.contains("not approved")),
        "{outcome:?}"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "the provider received nothing"
    );
}

#[tokio::test]
async fn an_unknown_secret_fails_permanently_without_sending() {
    let (base, log) = provider().await;
    let config = json!({"url": format!("{base}/hooks/ok"), "headers": {"Authorization": "Bearer {{secret:missing}}"}});
    let outcome = deliver("webhook-channel", &settings(&[&base]), config)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, DeliveryOutcome::Failed { kind: FailureKind::Permanent, message, .. } if message.contains("`missing`")),
        "{outcome:?}"
    );
    assert!(log.lock().unwrap().is_empty());
}

fn probe_report(outcome: DeliveryOutcome) -> serde_json::Value {
    match outcome {
        DeliveryOutcome::Delivered { provider_id } => serde_json::from_str(&provider_id).unwrap(),
        failed => panic!("probe failed: {failed:?}"),
    }
}

#[tokio::test]
async fn secrets_are_redacted_from_everything_the_plugin_reads_back() {
    let (base, _log) = provider().await;
    let config = json!({"url": format!("{base}/echo"), "headers": {"authorization": "Bearer {{secret:crm_token}}"}, "body": "token={{secret:crm_token}}"});
    let report = probe_report(
        deliver("probe-channel", &settings(&[&base]), config)
            .await
            .unwrap(),
    );
    let text = report.to_string();
    assert!(
        !text.contains(SECRET),
        "the secret leaked back to the plugin: {text}"
    );
    assert_eq!(
        report["body"],
        "auth=Bearer [redacted] body=token=[redacted]"
    );
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (base, _log) = provider().await;
    let report = probe_report(
        deliver(
            "probe-channel",
            &settings(&[&base]),
            json!({"url": format!("{base}/redirect")}),
        )
        .await
        .unwrap(),
    );
    assert_eq!(report["status"], 302);
}

#[tokio::test]
async fn an_oversized_response_is_refused() {
    let (base, _log) = provider().await;
    let outcome = deliver(
        "probe-channel",
        &settings(&[&base]),
        json!({"url": format!("{base}/huge")}),
    )
    .await
    .unwrap();
    assert!(
        matches!(&outcome, DeliveryOutcome::Failed { message, .. } if message == "HttpError::TooLarge"),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn waiting_on_the_network_does_not_count_against_the_cpu_budget() {
    let (base, _log) = provider().await;
    let tight_cpu = PluginSettings {
        limits: Limits {
            cpu_ms: 50,
            ..Limits::default()
        },
        ..settings(&[&base])
    };
    let report = probe_report(
        deliver(
            "probe-channel",
            &tight_cpu,
            json!({"url": format!("{base}/slow")}),
        )
        .await
        .unwrap(),
    );
    assert_eq!(report["body"], "done");
}

#[tokio::test]
async fn a_provider_that_never_answers_hits_the_wall_clock_limit() {
    let (base, _log) = provider().await;
    let short_wall = PluginSettings {
        limits: Limits {
            wall_ms: 300,
            ..Limits::default()
        },
        ..settings(&[&base])
    };
    let error = deliver(
        "probe-channel",
        &short_wall,
        json!({"url": format!("{base}/never")}),
    )
    .await
    .unwrap_err();
    assert_eq!(error, CallError::Timeout { wall_ms: 300 });
}

/// The text of the refusal of the probe's request to `url` (with the rest of `config`), having
/// checked that the provider behind `log` received nothing.
async fn refused(settings: &PluginSettings, url: &str, log: &Log) -> String {
    refused_config(settings, json!({"url": url}), log).await
}

async fn refused_config(settings: &PluginSettings, config: serde_json::Value, log: &Log) -> String {
    let outcome = deliver("probe-channel", settings, config.clone())
        .await
        .unwrap();
    assert!(log.lock().unwrap().is_empty(), "{config} was sent");
    match outcome {
        DeliveryOutcome::Failed {
            kind: FailureKind::Permanent,
            message,
            ..
        } => message,
        other => panic!("{config} was not refused: {other:?}"),
    }
}

#[tokio::test]
async fn only_the_exact_approved_target_is_reached() {
    let (base, log) = provider().await;
    let port = base.rsplit(':').next().unwrap();
    let (other, other_log) = provider().await;
    let approved = settings(&[&base]);
    // A name that resolves to loopback is refused after DNS, though the name is approved.
    let by_name = format!("http://localhost:{port}");
    let message = refused(&settings(&[&by_name]), &format!("{by_name}/hooks/ok"), &log).await;
    assert!(message.contains("not a public address"), "{message}");
    // Another port of an approved host; an approval without a port is the default port only.
    let message = refused(&approved, &format!("{other}/hooks/ok"), &other_log).await;
    assert!(message.contains("not approved"), "{message}");
    let message = refused(
        &settings(&["http://127.0.0.1"]),
        &format!("{base}/hooks/ok"),
        &log,
    )
    .await;
    assert!(message.contains("not approved"), "{message}");
    // The approved address wrapped in IPv6, and the cloud metadata address.
    let mapped = format!("http://[::ffff:127.0.0.1]:{port}/hooks/ok");
    assert!(
        refused(&approved, &mapped, &log)
            .await
            .contains("not approved")
    );
    let message = refused(
        &settings(&["http://*.example.com", &base]),
        "http://169.254.169.254/latest/meta-data/",
        &log,
    )
    .await;
    assert!(message.contains("not approved"), "{message}");
    // A wildcard is for names: over an address it is no approval, and the plugin is not loaded.
    let (runtime, _clock) = support::runtime();
    let wildcard = runtime.load(
        &support::fixture_bytes("probe-channel"),
        &settings(&["http://*.0.0.1"]),
    );
    assert!(
        matches!(&wildcard, Err(e) if e.to_string().contains("never IP addresses")),
        "{:?}",
        wildcard.err()
    );
    // And the exact approval works.
    let outcome = deliver(
        "probe-channel",
        &approved,
        json!({"url": format!("{base}/healthz"), "method": "GET"}),
    )
    .await
    .unwrap();
    assert_eq!(probe_report(outcome)["body"], "ok");
}

#[tokio::test]
async fn a_secret_never_leaves_for_a_host_it_is_not_bound_to() {
    let (provider_base, _provider_log) = provider().await;
    let (echo, echo_log) = provider().await;
    // Both approved; the secret is bound to the provider only. The echo host would hand it back.
    let both = settings(&[&provider_base, &echo]);
    let config = json!({"url": format!("{echo}/echo"), "headers": {"authorization": "Bearer {{secret:crm_token}}"}});
    let message = refused_config(&both, config, &echo_log).await;
    assert!(message.contains("not bound"), "{message}");
}

#[tokio::test]
async fn a_compressed_echo_from_the_bound_host_reaches_the_plugin_redacted() {
    let (base, _log) = provider().await;
    let config = json!({"url": format!("{base}/echo-gzip"), "headers": {"authorization": "Bearer {{secret:crm_token}}"}, "body": "token={{secret:crm_token}}"});
    let report = probe_report(
        deliver("probe-channel", &settings(&[&base]), config)
            .await
            .unwrap(),
    );
    assert!(!report.to_string().contains(SECRET), "{report}");
    assert_eq!(
        report["body"],
        "auth=Bearer [redacted] body=token=[redacted]"
    );
    // An encoding the host cannot look through is not handed to the plugin at all.
    let config = json!({"url": format!("{base}/echo-br"), "body": "token={{secret:crm_token}}"});
    let outcome = deliver("probe-channel", &settings(&[&base]), config)
        .await
        .unwrap();
    assert!(
        matches!(&outcome, DeliveryOutcome::Failed { message, .. } if message.contains("cannot check")),
        "{outcome:?}"
    );
}

#[tokio::test]
async fn a_call_sends_a_bounded_number_of_requests() {
    let (base, log) = provider().await;
    let outcome = deliver(
        "probe-channel",
        &settings(&[&base]),
        json!({"url": format!("{base}/hooks/ok"), "repeat": 9}),
    )
    .await
    .unwrap();
    assert!(
        matches!(&outcome, DeliveryOutcome::Failed { message, .. } if message.contains("at most 8 requests")),
        "{outcome:?}"
    );
    assert_eq!(log.lock().unwrap().len(), 8);
}

/// A channel written against 0.1.0 (no SDK) delivers unchanged: it gets one body (the HTML,
/// with the text version and the required headers in its metadata) and its outbound HTTP.
#[tokio::test]
async fn a_0_1_0_channel_plugin_keeps_delivering_unchanged() {
    let (base, log) = provider().await;
    let (runtime, _clock) = support::runtime();
    let plugin = runtime
        .load(
            &support::fixture_bytes("legacy-channel"),
            &settings(&[&base]),
        )
        .unwrap();
    assert_eq!(plugin.wit_version, WitVersion::V0_1);
    let config = support::prepare(
        &runtime,
        &plugin,
        &json!(format!("{base}/hooks/ok")).to_string(),
    );
    let mut message = message();
    message.html = Some("<p>Li Wei is asking about pricing</p>".into());
    message.headers = vec![("List-Unsubscribe".into(), "<https://t.example/u/1>".into())];
    let outcome = runtime.deliver(&plugin, &config, &message).await.result;
    assert_eq!(
        outcome.unwrap(),
        DeliveryOutcome::Delivered {
            provider_id: "legacy-msg-0001".into()
        }
    );
    let received = log.lock().unwrap().clone();
    let body: serde_json::Value = serde_json::from_slice(&received[0].body).unwrap();
    assert_eq!(body["content_type"], "text/html");
    assert_eq!(body["body"], "<p>Li Wei is asking about pricing</p>");
    assert_eq!(
        body["metadata"]["text"],
        "Li Wei is asking about pricing; contact them now"
    );
    assert_eq!(body["metadata"]["message_class"], "transactional");
    assert_eq!(
        body["metadata"]["list_unsubscribe"],
        "<https://t.example/u/1>"
    );
    assert_eq!(body["metadata"]["journey"], "score-alert");
}

/// A scorer written against 0.1.0 (no SDK) scores unchanged, beside 0.2.0 plugins.
#[test]
fn a_0_1_0_scorer_keeps_scoring_unchanged() {
    let (runtime, _clock) = support::runtime();
    let legacy = support::load(&runtime, &support::fixture_bytes("legacy-scorer"));
    assert_eq!(legacy.wit_version, WitVersion::V0_1);
    let current = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
    assert_eq!(current.wit_version, WitVersion::V0_2);
    let config = support::prepare(&runtime, &legacy, "\"webinar_attended\"");
    let contact = support::contact();
    let changes = runtime
        .score(
            &legacy,
            &config,
            &contact,
            &support::event("webinar_attended", json!({})),
        )
        .result
        .unwrap();
    assert_eq!(changes.len(), 1);
    assert_eq!(changes[0].delta, 5.0);
    assert_eq!(
        changes[0].reason,
        "webinar_attended (scored by a 0.1.0 plugin)"
    );
    let none = runtime
        .score(
            &legacy,
            &config,
            &contact,
            &support::event("page_viewed", json!({})),
        )
        .result
        .unwrap();
    assert!(none.is_empty());
}

/// The webhook channel signs what it sends without holding the key: the host writes the
/// HMAC-SHA256 of the body as sent, keyed with a secret bound to the receiver, and the receiver
/// checks it with the key it shares.
#[tokio::test]
async fn a_signed_webhook_carries_the_hosts_hmac_of_the_body() {
    use hmac::Mac;
    let (base, log) = provider().await;
    let mut settings = settings(&[&base]);
    settings.secrets.insert(
        "crm_signing".into(),
        SecretSetting {
            value: SecretValue("whsec-5b7d".into()),
            hosts: vec![base.clone()],
            verifies_webhooks: false,
        },
    );
    let config = json!({"url": format!("{base}/hooks/ok"), "signing_secret": "crm_signing"});
    deliver("webhook-channel", &settings, config.clone())
        .await
        .unwrap();
    let received = log.lock().unwrap().clone();
    let signature = received[0].headers["x-wayline-signature"].to_str().unwrap();
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"whsec-5b7d").unwrap();
    mac.update(&received[0].body);
    assert_eq!(
        signature,
        format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
    );
    assert!(!String::from_utf8_lossy(&received[0].body).contains("whsec-5b7d"));

    // Bound to another host, the key is not used for this one: the send is refused.
    settings.secrets.get_mut("crm_signing").unwrap().hosts =
        vec!["https://elsewhere.example".into()];
    let refused = deliver("webhook-channel", &settings, config).await.unwrap();
    assert!(
        matches!(&refused, DeliveryOutcome::Failed { kind: FailureKind::Permanent, message, .. } if message.contains("not bound")),
        "{refused:?}"
    );
}

/// Reading a provider's webhook, a channel plugin can check a signature with the secrets set
/// for that and nothing more: an HTTP request or an email it tries to send is refused, an API
/// key is not a signature key, and nothing leaves.
#[tokio::test]
async fn a_plugin_reading_a_webhook_cannot_send_anything() {
    let (base, log) = provider().await;
    let (runtime, _clock) = support::runtime();
    let plugin = runtime
        .load(
            &support::fixture_bytes("probe-channel"),
            &settings(&[&base]),
        )
        .unwrap();
    let config = support::prepare(
        &runtime,
        &plugin,
        &json!({"url": format!("{base}/hooks/ok")}).to_string(),
    );
    let request = wayline::model::WebhookRequest {
        method: "POST".into(),
        query: String::new(),
        headers: vec![],
        body: b"{}".to_vec(),
    };
    let report = runtime
        .parse_webhook(&plugin, plugin.egress(), &config, &request)
        .await;
    let Ok(Err(wayline::model::WebhookRejection::Malformed(tried))) = report.result else {
        panic!("{:?}", report.result);
    };
    assert_eq!(
        tried
            .matches("sending is only available while delivering a message")
            .count(),
        2,
        "{tried}"
    );
    assert!(
        tried.contains("signature: Err(\"secret `crm_token` is not set with `verifies_webhooks`"),
        "{tried}"
    );
    assert!(
        log.lock().unwrap().is_empty(),
        "nothing reached the provider"
    );
}
