//! Delivers a message as a JSON webhook (CRM, ERP, a sales alert) through the host's outbound
//! HTTP: only to hosts the operator approved, with secrets written in by the host.
//!
//! ```json
//! {"url": "https://crm.example.com/hooks/wayline", "method": "POST",
//!  "headers": {"Authorization": "Bearer {{secret:crm_token}}"}, "timeout_ms": 5000}
//! ```
//! The body is `{"id", "contact_id", "recipient", "subject", "body", "content_type", "metadata"}`
//! with an `Idempotency-Key` header of the message id. 2xx delivers (provider id from the
//! response's `id`, else `x-request-id`, else the message id); 429 and 5xx are retryable
//! (honouring `Retry-After` seconds); 400/401/403 permanent; 404/410/422 invalid recipient.

use std::collections::BTreeMap;

use serde::Deserialize;
use wayline_rules::PluginConfig;
use wayline_sdk::channel::*;
use wayline_sdk::host::http::{HttpError, Request, Response, send};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    url: String,
    #[serde(default = "post")]
    method: String,
    #[serde(default)]
    headers: BTreeMap<String, String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

fn post() -> String {
    "POST".into()
}

impl PluginConfig for Config {
    fn problems(&self) -> Vec<ConfigProblem> {
        let config = self;
        let mut problems = Vec::new();
        let has_host = config
            .url
            .strip_prefix("https://")
            .or_else(|| config.url.strip_prefix("http://"))
            .is_some_and(|rest| {
                rest.split(['/', '?', '#'])
                    .next()
                    .is_some_and(|authority| !authority.is_empty())
            });
        if !has_host {
            problems.push(ConfigProblem::new(
                "url",
                "must be an http(s) URL with a host",
            ));
        }
        if !matches!(
            config.method.to_ascii_uppercase().as_str(),
            "POST" | "PUT" | "PATCH"
        ) {
            problems.push(ConfigProblem::new("method", "must be POST, PUT or PATCH"));
        }
        for name in config.headers.keys() {
            if name.is_empty()
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
            {
                problems.push(ConfigProblem::new(
                    format!("headers.{name}"),
                    "not a valid header name",
                ));
            }
        }
        problems
    }
}

impl Config {
    pub fn request(&self, message: &Message) -> Request {
        let body = serde_json::json!({
            "id": message.id,
            "contact_id": message.contact_id,
            "recipient": message.recipient,
            "subject": message.subject,
            "body": message.body,
            "content_type": message.content_type,
            "metadata": message.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
        });
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        headers.push(("content-type".into(), "application/json".into()));
        headers.push(("idempotency-key".into(), message.id.clone()));
        Request {
            method: self.method.to_ascii_uppercase(),
            url: self.url.clone(),
            headers,
            body: Some(body.to_string().into_bytes()),
            timeout_ms: self.timeout_ms,
        }
    }
}

fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut cut = text.len().min(200);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    text[..cut].to_owned()
}

/// What a response means for this message.
pub fn classify(response: &Response, message_id: &str) -> Result<Delivery, DeliveryFailure> {
    let status = response.status;
    if (200..300).contains(&status) {
        let from_body = serde_json::from_slice::<serde_json::Value>(&response.body)
            .ok()
            .and_then(|v| match &v["id"] {
                serde_json::Value::String(s) => Some(s.clone()),
                serde_json::Value::Number(n) => Some(n.to_string()),
                _ => None,
            });
        let provider_id = from_body
            .or_else(|| header(response, "x-request-id").map(str::to_owned))
            .unwrap_or_else(|| message_id.to_owned());
        return Ok(Delivery { provider_id });
    }
    let kind = match status {
        429 | 500..=599 => FailureKind::Retryable,
        404 | 410 | 422 => FailureKind::InvalidRecipient,
        _ => FailureKind::Permanent,
    };
    let retry_after_ms = if kind == FailureKind::Retryable {
        header(response, "retry-after")
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(|s| s * 1000)
    } else {
        None
    };
    Err(DeliveryFailure {
        kind,
        message: format!("HTTP {status}: {}", excerpt(&response.body)),
        retry_after_ms,
    })
}

fn transport_failure(error: HttpError) -> DeliveryFailure {
    let (kind, message) = match error {
        HttpError::Denied(reason) => (
            FailureKind::Permanent,
            format!("request denied by the host: {reason}"),
        ),
        HttpError::UnknownSecret(name) => (
            FailureKind::Permanent,
            format!("secret `{name}` is not set for this plugin"),
        ),
        HttpError::TooLarge => (FailureKind::Permanent, "response too large".into()),
        HttpError::Timeout => (FailureKind::Retryable, "timed out".into()),
        HttpError::Transport(reason) => {
            (FailureKind::Retryable, format!("transport error: {reason}"))
        }
    };
    DeliveryFailure {
        kind,
        message,
        retry_after_ms: None,
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct WebhookChannel;

impl Channel for WebhookChannel {
    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            "webhook-channel",
            "0.1.0",
            "Posts messages as JSON to a webhook URL (the operator approves its host)",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        // The target is the operator's choice per config; `*` defers entirely to their approval.
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn validate_config(config: String) -> Result<(), Vec<ConfigProblem>> {
        Config::parse(&config).map(drop)
    }

    fn deliver(config: String, message: Message) -> Result<Delivery, DeliveryFailure> {
        let config = Config::load(&config).map_err(|message| DeliveryFailure {
            kind: FailureKind::Permanent,
            message,
            retry_after_ms: None,
        })?;
        let response = send(&config.request(&message)).map_err(transport_failure)?;
        classify(&response, &message.id)
    }
}

const CONFIG_SCHEMA: &str = r#"{"type":"object","required":["url"],"properties":{"url":{"type":"string","format":"uri"},"method":{"enum":["POST","PUT","PATCH"]},"headers":{"type":"object","additionalProperties":{"type":"string"}},"timeout_ms":{"type":"integer","minimum":1}},"additionalProperties":false}"#;

export!(WebhookChannel);

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(
            classify(&response(201, &[], r#"{"id": "crm-42"}"#), "m1")
                .unwrap()
                .provider_id,
            "crm-42"
        );
        assert_eq!(
            classify(&response(200, &[("X-Request-Id", "req-7")], ""), "m1")
                .unwrap()
                .provider_id,
            "req-7"
        );
        assert_eq!(
            classify(&response(204, &[], ""), "m1").unwrap().provider_id,
            "m1"
        );
        let limited =
            classify(&response(429, &[("retry-after", "30")], "slow down"), "m1").unwrap_err();
        assert_eq!(
            (limited.kind, limited.retry_after_ms),
            (FailureKind::Retryable, Some(30_000))
        );
        assert!(limited.message.contains("429") && limited.message.contains("slow down"));
        assert_eq!(
            classify(&response(503, &[], ""), "m1").unwrap_err().kind,
            FailureKind::Retryable
        );
        assert_eq!(
            classify(&response(404, &[], ""), "m1").unwrap_err().kind,
            FailureKind::InvalidRecipient
        );
        assert_eq!(
            classify(&response(401, &[], ""), "m1").unwrap_err().kind,
            FailureKind::Permanent
        );
    }

    #[test]
    fn configs_are_checked() {
        assert!(Config::parse(r#"{"url": "https://crm.example.com/hook"}"#).is_ok());
        let problems =
            Config::parse(r#"{"url": "ftp://x", "method": "GET", "headers": {"bad header": "x"}}"#)
                .unwrap_err();
        let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        assert_eq!(paths, ["url", "method", "headers.bad header"]);
    }

    #[test]
    fn the_request_carries_an_idempotency_key_and_json() {
        let config = Config::parse(r#"{"url": "https://crm.example.com/hook", "headers": {"Authorization": "Bearer {{secret:crm_token}}"}}"#).unwrap();
        let message = Message {
            id: "m1".into(),
            contact_id: "c1".into(),
            recipient: "sales@example.com".into(),
            subject: None,
            body: "hot lead".into(),
            content_type: "text/plain".into(),
            metadata: vec![],
        };
        let request = config.request(&message);
        assert!(
            request
                .headers
                .contains(&("idempotency-key".into(), "m1".into()))
        );
        assert!(
            request
                .headers
                .contains(&("Authorization".into(), "Bearer {{secret:crm_token}}".into()))
        );
        let body: serde_json::Value =
            serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        assert_eq!(body["body"], "hot lead");
    }
}
