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
use wayline::model::{DeliveryOutcome, FailureKind, Message};
use wayline::runtime::{CallError, Limits, PluginSettings};

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
        .route("/healthz", get(|| async { "ok" }))
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
        subject: Some("Hot lead".into()),
        body: "Li Wei is asking about pricing; contact them now".into(),
        content_type: "text/plain".into(),
        metadata: BTreeMap::from([("journey".to_owned(), "score-alert".to_owned())]),
    }
}

fn settings(approved: &[&str]) -> PluginSettings {
    PluginSettings {
        approved_hosts: approved.iter().map(|s| s.to_string()).collect(),
        secrets: BTreeMap::from([("crm_token".to_owned(), SECRET.to_owned())]),
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
    let outcome = deliver("webhook-channel", &settings(&["127.0.0.1"]), config)
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
        &settings(&["127.0.0.1"]),
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
        &settings(&["127.0.0.1"]),
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
        &settings(&["crm.example.com"]),
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
    let outcome = deliver("webhook-channel", &settings(&["127.0.0.1"]), config)
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
        deliver("probe-channel", &settings(&["127.0.0.1"]), config)
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
            &settings(&["127.0.0.1"]),
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
        &settings(&["127.0.0.1"]),
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
        ..settings(&["127.0.0.1"])
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
        ..settings(&["127.0.0.1"])
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
