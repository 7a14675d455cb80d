//! Delivers a message as a JSON webhook (to a CRM, an ERP, a real-time sales alert) through the
//! host's outbound HTTP: only to hosts the operator approved, with secrets written in by the host.
//!
//! ```json
//! {"url": "https://crm.example.com/hooks/wayline", "method": "POST",
//!  "headers": {"Authorization": "Bearer {{secret:crm_token}}"}, "timeout_ms": 5000}
//! ```
//! - `url` (required): http or https. `method`: POST (default), PUT or PATCH. `timeout_ms`:
//!   optional; the host caps it.
//! - `headers`: sent as written. `{{secret:NAME}}` placeholders are passed through untouched;
//!   the host substitutes them after the request leaves the sandbox, so this plugin never
//!   sees a secret. `Content-Type: application/json` and `Idempotency-Key: <message id>` are
//!   added unless the config sets a header of the same name.
//!
//! - `signing_secret`: optional, the name of a secret bound to the url's host. Each request
//!   then carries `X-Wayline-Signature: sha256=<hex HMAC-SHA256 of the body>`, computed by the
//!   host, so the receiver can check it came from Wayline.
//!
//! The body is `{"id", "contact_id", "recipient", "class", "test", "subject", "text", "html",
//! "headers": {..}, "metadata": {..}}`. A 2xx delivers; the provider id is the response's JSON `id`, else its
//! `x-request-id` header, else the message id. 429 and 5xx are retryable (honouring a
//! `Retry-After` in seconds); 404, 410 and 422 mean an invalid recipient; anything else is
//! permanent. Host-side errors: denied, unknown secret and too large are permanent; timeout
//! and transport errors are retryable.

use serde::{Deserialize, Serialize};
use wayline_rules::{Check, Entries, Problems, ROOT};
use wayline_sdk::channel::*;
use wayline_sdk::host::http::{HttpError, Request, Response, send};

/// The channel's config.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    // Required; it defaults so that a missing url is reported at `url`.
    #[serde(default)]
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    headers: Entries<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    /// The secret whose HMAC-SHA256 of the body goes in `X-Wayline-Signature`.
    #[serde(default)]
    signing_secret: Option<String>,
}

const METHODS: [&str; 3] = ["POST", "PUT", "PATCH"];

/// The host (and port) of an http(s) URL, if it is one with a host.
fn url_host(url: &str) -> Option<&str> {
    let (scheme, rest) = url.split_once("://")?;
    if !scheme.eq_ignore_ascii_case("http") && !scheme.eq_ignore_ascii_case("https") {
        return None;
    }
    let authority = rest.split(['/', '?', '#']).next()?;
    // Credentials belong in a header with a secret placeholder, but a URL may still carry them.
    let host_and_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let (host, port, host_char): (_, _, fn(char) -> bool) = match host_and_port.strip_prefix('[') {
        Some(bracketed) => {
            let (address, after) = bracketed.split_once(']')?;
            let port = match after {
                "" => None,
                _ => Some(after.strip_prefix(':')?),
            };
            (address, port, |c| {
                c.is_ascii_hexdigit() || matches!(c, ':' | '.')
            })
        }
        None => match host_and_port.split_once(':') {
            Some((host, port)) => (host, Some(port), is_host_char),
            None => (host_and_port, None, is_host_char),
        },
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok());
    let host_ok = !host.is_empty() && host.chars().all(host_char);
    (port_ok && host_ok).then_some(host_and_port)
}

fn is_host_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '.')
}

/// RFC 9110 token characters.
fn is_header_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// A header value must not smuggle in another header or line.
fn is_header_value(value: &str) -> bool {
    !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        if url_host(&self.url).is_none() {
            problems.add(
                &ROOT.field("url"),
                "must be an http(s) URL with a host, e.g. https://crm.example.com/hooks/wayline",
            );
        }
        let known_method = |method: &String| METHODS.iter().any(|m| m.eq_ignore_ascii_case(method));
        if !self.method.as_ref().is_none_or(known_method) {
            problems.add(&ROOT.field("method"), "must be POST, PUT or PATCH");
        }
        let headers = ROOT.field("headers");
        self.headers
            .check_names(&headers, str::eq_ignore_ascii_case, problems);
        for (name, value) in self.headers.iter() {
            if !name.is_empty() && !is_header_name(name) {
                problems.add(&headers.field(name), "not a valid header name");
            } else if !is_header_value(value) {
                problems.add(
                    &headers.field(name),
                    "a header value cannot contain line breaks",
                );
            }
        }
        if self.timeout_ms == Some(0) {
            problems.add(&ROOT.field("timeout_ms"), "must be at least 1");
        }
        let secret_name = |name: &String| {
            !name.is_empty()
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        };
        if !self.signing_secret.as_ref().is_none_or(secret_name) {
            problems.add(
                &ROOT.field("signing_secret"),
                "must be the name of a secret: letters, digits, `_` and `-`",
            );
        }
    }
}

impl Config {
    /// The HTTP request that delivers `message`.
    pub fn request(&self, message: &Message) -> Request {
        let method = self
            .method
            .as_deref()
            .unwrap_or("POST")
            .to_ascii_uppercase();
        Request {
            method,
            url: self.url.clone(),
            headers: self.headers(message),
            body: Some(body(message)),
            timeout_ms: self.timeout_ms,
        }
    }

    fn headers(&self, message: &Message) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> = self
            .headers
            .iter()
            .map(|(name, value)| (name.to_owned(), value.to_owned()))
            .collect();
        let defaults = [
            ("Content-Type", "application/json"),
            ("Idempotency-Key", message.id.as_str()),
        ];
        for (name, value) in defaults {
            if !headers.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
                headers.push((name.to_owned(), value.to_owned()));
            }
        }
        if let Some(secret) = &self.signing_secret {
            // The host writes in the HMAC of the body as sent; this plugin never holds the key.
            headers.push((
                "X-Wayline-Signature".into(),
                format!("sha256={{{{hmac-sha256:{secret}}}}}"),
            ));
        }
        headers
    }
}

fn body(message: &Message) -> Vec<u8> {
    let object = |pairs: &[(String, String)]| -> serde_json::Map<String, serde_json::Value> {
        pairs
            .iter()
            .map(|(k, v)| (k.clone(), serde_json::Value::from(v.as_str())))
            .collect()
    };
    serde_json::json!({
        "id": message.id,
        "contact_id": message.contact_id,
        "recipient": message.recipient,
        "class": match message.class {
            MessageClass::Marketing => "marketing",
            MessageClass::Transactional => "transactional",
        },
        "test": message.test,
        "subject": message.subject,
        "text": message.text,
        "html": message.html,
        "headers": object(&message.headers),
        "metadata": object(&message.metadata),
    })
    .to_string()
    .into_bytes()
}

/// What a response means for this message.
pub fn classify(response: &Response, message_id: &str) -> Result<Delivery, DeliveryFailure> {
    if (200..300).contains(&response.status) {
        let id = wayline_providers::provider_id(response, None, &["id"], message_id);
        return Ok(Delivery::accepted(id));
    }
    Err(wayline_providers::failure(response, &[404, 410, 422]))
}

/// What a failure inside the host means for this message.
pub fn host_failure(error: HttpError) -> DeliveryFailure {
    wayline_providers::host_failure(error)
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct WebhookChannel;

impl Channel for WebhookChannel {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Posts each message as JSON to the webhook URL in its config; approve that URL's host for this plugin",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        // The target host is in each journey's config, which `describe` cannot see. The host
        // lets a plugin reach a URL only if it is both declared and operator-approved; `*`
        // declares "whatever the operator approves", leaving the operator's list to decide.
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn deliver(config: Config, message: Message) -> Result<Delivery, DeliveryFailure> {
        let response = send(&config.request(&message)).map_err(host_failure)?;
        classify(&response, &message.id)
    }
}

export!(WebhookChannel);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "webhook-channel config",
  "type": "object",
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "pattern": "^[Hh][Tt][Tt][Pp][Ss]?://[^/?#]+", "description": "The webhook; its host must be approved for this plugin"},
    "method": {"enum": ["POST", "PUT", "PATCH"], "default": "POST"},
    "headers": {
      "type": "object",
      "propertyNames": {"pattern": "^[!#$%&'*+.^_`|~0-9A-Za-z-]+$"},
      "additionalProperties": {"type": "string"},
      "description": "Sent as written; {{secret:NAME}} is filled in by the host"
    },
    "timeout_ms": {"type": "integer", "minimum": 1, "description": "The host caps it"},
    "signing_secret": {"type": "string", "pattern": "^[A-Za-z0-9_-]+$", "description": "A secret bound to the url's host: its HMAC-SHA256 of the body is sent as X-Wayline-Signature: sha256=HEX"}
  },
  "additionalProperties": false
}"##;

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

    fn message() -> Message {
        Message {
            id: "m1".into(),
            contact_id: "c1".into(),
            recipient: "sales@example.com".into(),
            class: MessageClass::Transactional,
            test: false,
            subject: Some("Hot lead".into()),
            text: Some("Li Wei is asking about pricing; contact them now".into()),
            html: None,
            headers: vec![],
            metadata: vec![("journey".into(), "score-alert".into())],
        }
    }

    fn failure(status: u16, headers: &[(&str, &str)], body: &str) -> DeliveryFailure {
        classify(&response(status, headers, body), "m1").unwrap_err()
    }

    fn delivered_as(status: u16, headers: &[(&str, &str)], body: &str) -> String {
        classify(&response(status, headers, body), "m1")
            .unwrap()
            .provider_id
    }

    fn paths(config: &str) -> Vec<String> {
        Config::parse(config)
            .unwrap_err()
            .into_iter()
            .map(|p| p.path)
            .collect()
    }

    #[test]
    fn an_accepted_message_takes_the_providers_id() {
        assert_eq!(delivered_as(201, &[], r#"{"id": "crm-42"}"#), "crm-42");
        assert_eq!(delivered_as(200, &[], r#"{"id": 42, "ok": true}"#), "42");
        assert_eq!(
            delivered_as(200, &[("X-Request-Id", "req-7")], "accepted"),
            "req-7"
        );
        assert_eq!(
            delivered_as(202, &[("x-request-id", "req-8")], r#"{"id": ""}"#),
            "req-8"
        );
        assert_eq!(delivered_as(204, &[], ""), "m1");
    }

    #[test]
    fn rate_limits_and_server_errors_are_retried() {
        let limited = failure(429, &[("Retry-After", "30")], "slow down");
        assert_eq!(limited.kind, FailureKind::Retryable);
        assert_eq!(limited.retry_after_ms, Some(30_000));
        assert_eq!(limited.message, "HTTP 429: slow down");
        let unavailable = failure(503, &[("retry-after", "Wed, 21 Oct 2026 07:28:00 GMT")], "");
        assert_eq!(
            (unavailable.kind, unavailable.retry_after_ms),
            (FailureKind::Retryable, None)
        );
        assert_eq!(unavailable.message, "HTTP 503");
    }

    #[test]
    fn client_errors_are_permanent_or_mark_the_recipient_invalid() {
        for status in [400, 401, 403, 405, 301] {
            assert_eq!(
                failure(status, &[], "").kind,
                FailureKind::Permanent,
                "{status}"
            );
        }
        for status in [404, 410, 422] {
            assert_eq!(
                failure(status, &[], "").kind,
                FailureKind::InvalidRecipient,
                "{status}"
            );
        }
        assert_eq!(
            failure(403, &[("retry-after", "5")], "").retry_after_ms,
            None
        );
        assert!(failure(302, &[], "").message.contains("redirect"));
    }

    #[test]
    fn a_failure_quotes_at_most_200_characters_of_the_body_on_one_line() {
        let html = format!("<html>\n  <body>{}</body>\n</html>", "错误 ".repeat(300));
        let message = failure(500, &[], &html).message;
        let quoted = message.strip_prefix("HTTP 500: ").unwrap();
        assert!(quoted.starts_with("<html> <body>错误 错误"));
        assert!(quoted.chars().count() <= 200, "{}", quoted.chars().count());
        assert!(quoted.ends_with('…'));
        assert!(!quoted.contains('\n'));
        assert_eq!(wayline_providers::excerpt(b"short"), "short");
        assert_eq!(
            wayline_providers::excerpt(&[b'x'; 500]).chars().count(),
            200
        );
    }

    #[test]
    fn host_errors_are_classified() {
        let kind = |error| host_failure(error).kind;
        assert_eq!(
            kind(HttpError::Denied("not approved".into())),
            FailureKind::Permanent
        );
        assert_eq!(
            kind(HttpError::UnknownSecret("crm_token".into())),
            FailureKind::Permanent
        );
        assert_eq!(kind(HttpError::TooLarge), FailureKind::Permanent);
        assert_eq!(kind(HttpError::Timeout), FailureKind::Retryable);
        assert_eq!(
            kind(HttpError::Transport("reset".into())),
            FailureKind::Retryable
        );
        assert!(
            host_failure(HttpError::UnknownSecret("crm_token".into()))
                .message
                .contains("crm_token")
        );
    }

    #[test]
    fn the_request_is_json_with_an_idempotency_key_and_secrets_left_for_the_host() {
        let config = Config::parse(
            r#"{"url": "https://crm.example.com/hooks/wayline", "method": "put",
                "headers": {"Authorization": "Bearer {{secret:crm_token}}"}, "timeout_ms": 5000}"#,
        )
        .unwrap();
        let request = config.request(&message());
        assert_eq!(request.method, "PUT");
        assert_eq!(request.url, "https://crm.example.com/hooks/wayline");
        assert_eq!(request.timeout_ms, Some(5000));
        assert_eq!(
            request.headers,
            [
                (
                    "Authorization".to_owned(),
                    "Bearer {{secret:crm_token}}".to_owned()
                ),
                ("Content-Type".to_owned(), "application/json".to_owned()),
                ("Idempotency-Key".to_owned(), "m1".to_owned()),
            ]
        );
        let body: serde_json::Value =
            serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"id": "m1", "contact_id": "c1", "recipient": "sales@example.com",
                "class": "transactional", "test": false, "subject": "Hot lead",
                "text": "Li Wei is asking about pricing; contact them now", "html": null,
                "headers": {}, "metadata": {"journey": "score-alert"}})
        );
    }

    #[test]
    fn a_signing_secret_asks_the_host_for_a_signature_of_the_body() {
        let config = Config::parse(
            r#"{"url": "https://crm.example.com/hooks/wayline", "signing_secret": "crm_signing"}"#,
        )
        .unwrap();
        let request = config.request(&message());
        assert!(request.headers.contains(&(
            "X-Wayline-Signature".to_owned(),
            "sha256={{hmac-sha256:crm_signing}}".to_owned()
        )));
        assert_eq!(
            paths(r#"{"url": "https://crm.example.com/", "signing_secret": "a b"}"#),
            ["signing_secret"]
        );
    }

    #[test]
    fn a_configured_content_type_wins() {
        let config = Config::parse(
            r#"{"url": "https://x.example.com", "headers": {"content-type": "application/vnd.crm+json"}}"#,
        )
        .unwrap();
        let headers = config.request(&message()).headers;
        let content_types: Vec<&str> = headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("content-type"))
            .map(|(_, v)| v.as_str())
            .collect();
        assert_eq!(content_types, ["application/vnd.crm+json"]);
        assert_eq!(config.request(&message()).method, "POST");
    }

    #[test]
    fn urls_need_http_and_a_host() {
        for good in [
            "https://crm.example.com/hooks/wayline",
            "http://127.0.0.1:8080/hook?x=1",
            "HTTPS://crm.example.com",
            "https://user@crm.example.com/h",
            "https://[::1]:8443/h",
            "https://[::1]/h",
            "https://hooks.example.com/services/{{secret:slack_path}}",
        ] {
            assert!(url_host(good).is_some(), "{good}");
        }
        for bad in [
            "ftp://crm",
            "https://",
            "https:///path",
            "crm.example.com",
            "https://a b/",
            "https://x:port/",
            "https://[::1",
            "https://[::1]x/",
            "",
        ] {
            assert!(url_host(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(
                r#"{"url": "ftp://x", "method": "GET", "timeout_ms": 0,
                    "headers": {"bad header": "x", "X-Ok": "a\r\nInjected: 1", "x-ok": "again"}}"#
            ),
            [
                "url",
                "method",
                "headers.x-ok",
                "headers.bad header",
                "headers.X-Ok",
                "timeout_ms"
            ]
        );
        assert_eq!(paths(r#"{}"#), ["url"]);
        assert_eq!(
            paths(r#"{"url": "https://x.example.com", "timeout_ms": -1}"#),
            ["timeout_ms"]
        );
        assert!(Config::parse(r#"{"url": "https://crm.example.com/hook"}"#).is_ok());
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        let json = r#"{"url": "https://crm.example.com/hook", "method": "PUT",
            "headers": {"Authorization": "Bearer {{secret:crm_token}}", "X-A": "1"}, "timeout_ms": 5000}"#;
        let prepared = prepare::<Config>(json, "webhook-channel@0.1.0").unwrap();
        let config = load::<Config>(&prepared.config, "webhook-channel@0.1.0").unwrap();
        let parsed = Config::parse(json).unwrap();
        assert_eq!(format!("{config:?}"), format!("{parsed:?}"));
    }

    #[test]
    fn a_url_that_is_not_http_is_refused() {
        let problems = Config::parse(r#"{"url": "ftp://x"}"#).unwrap_err();
        assert_eq!(problems[0].path, "url");
        assert!(Config::parse(r#"{"url": 5}"#).is_err());
    }

    #[test]
    fn the_schema_is_a_json_object() {
        let schema: serde_json::Value = serde_json::from_str(CONFIG_SCHEMA).unwrap();
        assert!(schema.is_object());
    }
}
