//! Delivers email through a provider's JSON API (SendGrid, Postmark, Mailgun-style) over the
//! host's outbound HTTP, and reads the provider's signed event webhooks back into delivered,
//! bounced, complaint, open, click and unsubscribe reports.
//!
//! ```json
//! {"url": "https://api.postmarkapp.com/email",
//!  "headers": {"X-Postmark-Server-Token": "{{secret:postmark_token}}"},
//!  "from": "Shop <news@shop.example>",
//!  "body": {"From": "$from", "To": "$recipient", "Subject": "$subject", "TextBody": "$text",
//!           "HtmlBody": "$html", "Headers": "$header_list", "Metadata": {"wayline_id": "$id"}},
//!  "webhook": {"signature": {"header": "X-Signature", "secret": "webhook_key"},
//!              "events": "", "kind": "/RecordType", "message_id": "/Metadata/wayline_id",
//!              "kinds": {"Delivery": "delivered", "Bounce": "bounced", "SpamComplaint": "complaint"}}}
//! ```
//! - `url`, `headers`: the API endpoint and its headers, `{{secret:NAME}}` placeholders written
//!   in by the host for the hosts each secret is bound to. `Content-Type: application/json` and
//!   `Idempotency-Key: <message id>` are added unless set (`idempotency_header` renames the
//!   latter for a provider that takes a key under another name).
//! - `body`: the request body as JSON, in which a string that is exactly one of `$id`,
//!   `$recipient`, `$from`, `$reply_to`, `$subject`, `$text`, `$html`, `$class`, `$headers`
//!   (an object) or `$header_list` (a list of `{"Name", "Value"}`) is replaced by that value of
//!   the message (`null` when it has none). Put `$id` where the provider echoes it back in its
//!   webhooks (custom arguments, metadata), so reports find their message.
//! - `id_from`: where the provider's id of an accepted message is: `json:/pointer` into the
//!   response body or `header:name`; by default the body's `id`, `MessageID` or `message_id`,
//!   else the `x-message-id` header, else the message id.
//! - `webhook` (optional): `signature` names the header carrying the provider's HMAC of the
//!   raw body, the secret it is keyed with (bound with `"verifies_webhooks": true`; the host
//!   checks signatures with no other secret), `digest` (`sha256`, default, or `sha1`), `encoding`
//!   (`hex`, default, or `base64`) and a `prefix` to strip (`sha256=`). A request without a
//!   valid signature is refused. `events` points (JSON pointer) at the list of events (`""`: the
//!   body is the list, or one event); `kind`, `message_id`, `provider_id`, `reason` and `url`
//!   point into each event; `kinds` maps the provider's event names to `delivered`, `bounced`,
//!   `complaint`, `opened`, `clicked` or `unsubscribed` (events of other names are skipped).
//!
//! A 2xx delivers. 429 and 5xx are retried (honouring `Retry-After` in seconds); 401 and 403
//! are permanent (the key); other answers are permanent, their body quoted. Bounces arrive as
//! webhook reports and suppress the address then.
//!
//! What the webhook reader covers: providers and gateways that sign the raw body with an HMAC
//! (SHA-256 or SHA-1, hex or base64) in a header. It does not implement Postmark's basic-auth webhooks, SendGrid's signed
//! event webhook (ECDSA), or Mailgun's current scheme (an HMAC of timestamp and token in the
//! body); and it keeps no replay window: a captured, validly signed request can be posted
//! again, where it changes nothing (reports are idempotent per message and kind).

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use wayline_providers::{JsonText, fill, text};
use wayline_rules::{Check, Entries, Problems, ROOT};
use wayline_sdk::channel::*;
use wayline_sdk::host::http::{Request, Response, send};
use wayline_sdk::host::signatures::{Digest, verify_hmac};

/// How the provider signs its webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    #[serde(default)]
    header: String,
    #[serde(default)]
    secret: String,
    #[serde(default)]
    digest: Option<String>,
    #[serde(default)]
    encoding: Option<String>,
    #[serde(default)]
    prefix: Option<String>,
}

/// How to read the provider's webhooks.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    #[serde(default)]
    signature: Option<Signature>,
    #[serde(default)]
    events: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    message_id: String,
    #[serde(default)]
    provider_id: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    kinds: Entries<String>,
}

/// The channel's config.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    url: String,
    #[serde(default)]
    headers: Entries<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    reply_to: Option<String>,
    body: JsonText,
    #[serde(default)]
    id_from: Option<String>,
    #[serde(default)]
    idempotency_header: Option<String>,
    #[serde(default)]
    timeout_ms: Option<u32>,
    #[serde(default)]
    webhook: Option<Webhook>,
}

const KINDS: [(&str, ProviderEventKind); 6] = [
    ("delivered", ProviderEventKind::Delivered),
    ("bounced", ProviderEventKind::Bounced),
    ("complaint", ProviderEventKind::Complaint),
    ("opened", ProviderEventKind::Opened),
    ("clicked", ProviderEventKind::Clicked),
    ("unsubscribed", ProviderEventKind::Unsubscribed),
];

fn is_pointer(text: &str) -> bool {
    text.is_empty() || text.starts_with('/')
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        if !wayline_providers::is_http_url(&self.url) {
            problems.add(&ROOT.field("url"), "must be an http(s) URL with a host");
        }
        wayline_providers::check_headers(&self.headers, &ROOT.field("headers"), problems);
        if !self.from.contains('@') || self.from.contains(['\r', '\n']) {
            problems.add(&ROOT.field("from"), "must be `address` or `Name <address>`");
        }
        if !serde_json::from_str::<Json>(&self.body.0).is_ok_and(|b| b.is_object()) {
            problems.add(
                &ROOT.field("body"),
                "must be a JSON object: the request body",
            );
        }
        if self
            .id_from
            .as_deref()
            .is_some_and(|f| !wayline_providers::valid_id_from(f))
        {
            problems.add(
                &ROOT.field("id_from"),
                "must be `json:/pointer` or `header:name`",
            );
        }
        if self.timeout_ms == Some(0) {
            problems.add(&ROOT.field("timeout_ms"), "must be at least 1");
        }
        if let Some(webhook) = &self.webhook {
            webhook.check(problems);
        }
    }
}

impl Webhook {
    fn check(&self, problems: &mut Problems) {
        let at = ROOT.field("webhook");
        match &self.signature {
            None => problems.add(
                &at.field("signature"),
                "webhooks must be signed: name the header and the secret the provider signs with",
            ),
            Some(signature) => {
                let at = at.field("signature");
                if signature.header.is_empty() {
                    problems.add(&at.field("header"), "the header carrying the signature");
                }
                if signature.secret.is_empty() {
                    problems.add(&at.field("secret"), "the secret the provider signs with");
                }
                if !matches!(signature.digest.as_deref(), None | Some("sha256" | "sha1")) {
                    problems.add(&at.field("digest"), "must be sha256 or sha1");
                }
                if !matches!(signature.encoding.as_deref(), None | Some("hex" | "base64")) {
                    problems.add(&at.field("encoding"), "must be hex or base64");
                }
            }
        }
        let pointers = [
            ("events", Some(&self.events)),
            ("kind", Some(&self.kind)),
            ("message_id", Some(&self.message_id)),
            ("provider_id", self.provider_id.as_ref()),
            ("reason", self.reason.as_ref()),
            ("url", self.url.as_ref()),
        ];
        for (field, pointer) in pointers {
            if pointer.is_some_and(|p| !is_pointer(p)) {
                problems.add(&at.field(field), "must be a JSON pointer, e.g. /event");
            }
        }
        if self.kind.is_empty() || self.message_id.is_empty() {
            problems.add(
                &at.field("kind"),
                "`kind` and `message_id` point into each event",
            );
        }
        let kinds = at.field("kinds");
        if self.kinds.is_empty() {
            problems.add(&kinds, "map at least one provider event name to a report");
        }
        for (name, report) in self.kinds.iter() {
            if !KINDS.iter().any(|(k, _)| k == report) {
                problems.add(
                    &kinds.field(name),
                    "must be delivered, bounced, complaint, opened, clicked or unsubscribed",
                );
            }
        }
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }
}

/// The message's value for placeholder `$name` of the body mapping.
fn value(config: &Config, message: &Message, name: &str) -> Option<Json> {
    Some(match name {
        "id" => Json::from(message.id.as_str()),
        "recipient" => Json::from(message.recipient.as_str()),
        "from" => Json::from(config.from.as_str()),
        "reply_to" => text(config.reply_to.as_deref()),
        "subject" => text(message.subject.as_deref()),
        "text" => text(message.text.as_deref()),
        "html" => text(message.html.as_deref()),
        "class" => Json::from(match message.class {
            MessageClass::Marketing => "marketing",
            MessageClass::Transactional => "transactional",
        }),
        "headers" => Json::Object(
            message
                .headers
                .iter()
                .map(|(name, value)| (name.clone(), Json::from(value.as_str())))
                .collect(),
        ),
        "header_list" => Json::Array(
            message
                .headers
                .iter()
                .map(|(name, value)| serde_json::json!({"Name": name, "Value": value}))
                .collect(),
        ),
        _ => return None,
    })
}

impl Config {
    /// The API request that sends `message`.
    pub fn request(&self, message: &Message) -> Request {
        let template = self.body.parse().unwrap_or(Json::Null);
        let body = fill(template, &|name| value(self, message, name))
            .to_string()
            .into_bytes();
        let key_header = self
            .idempotency_header
            .as_deref()
            .unwrap_or("Idempotency-Key");
        let headers = wayline_providers::with_defaults(
            &self.headers,
            &[
                ("Content-Type", "application/json"),
                (key_header, message.id.as_str()),
            ],
        );
        Request {
            method: "POST".into(),
            url: self.url.clone(),
            headers,
            body: Some(body),
            timeout_ms: self.timeout_ms,
        }
    }
}

/// What the API's answer means for this message.
pub fn classify(
    config: &Config,
    response: &Response,
    message_id: &str,
) -> Result<Delivery, DeliveryFailure> {
    if (200..300).contains(&response.status) {
        let keys = ["id", "MessageID", "message_id"];
        let id =
            wayline_providers::provider_id(response, config.id_from.as_deref(), &keys, message_id);
        return Ok(Delivery::accepted(id));
    }
    // An email API's 4xx is the request or the account; bounces arrive as webhook reports.
    Err(wayline_providers::failure(response, &[]))
}

/// The signature bytes a header value carries.
fn signature_bytes(value: &str, signature: &Signature) -> Option<Vec<u8>> {
    use base64::Engine;
    let value = value.trim();
    let value = match &signature.prefix {
        Some(prefix) => value.strip_prefix(prefix.as_str())?,
        None => value,
    };
    match signature.encoding.as_deref() {
        Some("base64") => base64::engine::general_purpose::STANDARD.decode(value).ok(),
        _ => hex::decode(value).ok(),
    }
}

impl Webhook {
    /// Check the signature, then read the events.
    pub fn read(&self, request: &WebhookRequest) -> Result<Vec<ProviderEvent>, WebhookError> {
        let unauthenticated = |why: &str| WebhookError::Unauthenticated(why.into());
        let signature = self
            .signature
            .as_ref()
            .ok_or_else(|| unauthenticated("no signature is configured"))?;
        let name = signature.header.to_ascii_lowercase();
        let value = request
            .headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
            .ok_or_else(|| unauthenticated("the request carries no signature"))?;
        let bytes = signature_bytes(value, signature)
            .ok_or_else(|| unauthenticated("the signature is not in the expected encoding"))?;
        let digest = match signature.digest.as_deref() {
            Some("sha1") => Digest::Sha1,
            _ => Digest::Sha256,
        };
        match verify_hmac(&signature.secret, digest, &request.body, &bytes) {
            Ok(true) => {}
            Ok(false) => return Err(unauthenticated("the signature does not match")),
            Err(why) => return Err(WebhookError::Unauthenticated(why)),
        }
        let body: Json = serde_json::from_slice(&request.body)
            .map_err(|e| WebhookError::Malformed(format!("the body is not JSON: {e}")))?;
        let events = body
            .pointer(&self.events)
            .ok_or_else(|| WebhookError::Malformed(format!("no `{}` in the body", self.events)))?;
        let events: Vec<&Json> = match events {
            Json::Array(items) => items.iter().collect(),
            one => vec![one],
        };
        let text = |event: &Json, pointer: &Option<String>| {
            pointer
                .as_deref()
                .and_then(|p| event.pointer(p))
                .and_then(Json::as_str)
                .map(str::to_owned)
        };
        Ok(events
            .into_iter()
            .filter_map(|event| {
                let name = event.pointer(&self.kind)?.as_str()?;
                let report = self.kinds.iter().find(|(n, _)| *n == name)?.1;
                let kind = KINDS.iter().find(|(k, _)| k == report)?.1;
                Some(ProviderEvent {
                    kind,
                    message_id: text(event, &Some(self.message_id.clone())),
                    provider_id: text(event, &self.provider_id),
                    reason: text(event, &self.reason),
                    url: text(event, &self.url),
                })
            })
            .collect())
    }
}

/// The plugin; its exports exist in the wasm build.
pub struct EmailHttp;

impl Channel for EmailHttp {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Sends email through a provider's JSON API and reads its signed event webhooks",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn deliver(config: Config, message: Message) -> Result<Delivery, DeliveryFailure> {
        let response = send(&config.request(&message)).map_err(wayline_providers::host_failure)?;
        classify(&config, &response, &message.id)
    }

    fn parse_webhook(
        config: Config,
        request: WebhookRequest,
    ) -> Result<Vec<ProviderEvent>, WebhookError> {
        match &config.webhook {
            Some(webhook) => webhook.read(&request),
            None => Err(WebhookError::Malformed(
                "this channel's config has no `webhook`".into(),
            )),
        }
    }
}

export!(EmailHttp);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "email-http config",
  "type": "object",
  "required": ["url", "from", "body"],
  "properties": {
    "url": {"type": "string", "description": "The provider's send endpoint; approve its host"},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "from": {"type": "string"},
    "reply_to": {"type": "string"},
    "body": {"type": "object", "description": "The request body; strings $id, $recipient, $from, $reply_to, $subject, $text, $html, $class, $headers, $header_list are replaced"},
    "id_from": {"type": "string", "pattern": "^(json:(/.*)?|header:.+)$"},
    "idempotency_header": {"type": "string"},
    "timeout_ms": {"type": "integer", "minimum": 1},
    "webhook": {
      "type": "object",
      "required": ["signature", "kind", "message_id", "kinds"],
      "properties": {
        "signature": {"type": "object", "required": ["header", "secret"], "properties": {
          "header": {"type": "string"}, "secret": {"type": "string"},
          "digest": {"enum": ["sha256", "sha1"]}, "encoding": {"enum": ["hex", "base64"]},
          "prefix": {"type": "string"}}},
        "events": {"type": "string"}, "kind": {"type": "string"}, "message_id": {"type": "string"},
        "provider_id": {"type": "string"}, "reason": {"type": "string"}, "url": {"type": "string"},
        "kinds": {"type": "object", "additionalProperties": {"enum": ["delivered", "bounced", "complaint", "opened", "clicked", "unsubscribed"]}}
      }
    }
  },
  "additionalProperties": false
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    const POSTMARK: &str = r#"{"url": "https://api.postmarkapp.com/email",
        "headers": {"X-Postmark-Server-Token": "{{secret:token}}"},
        "from": "Shop <news@shop.example>",
        "body": {"From": "$from", "To": "$recipient", "Subject": "$subject", "TextBody": "$text",
                 "HtmlBody": "$html", "Headers": "$header_list", "Metadata": {"wayline_id": "$id"}},
        "webhook": {"signature": {"header": "X-Signature", "secret": "hook"},
                    "events": "", "kind": "/RecordType", "message_id": "/Metadata/wayline_id",
                    "reason": "/Description",
                    "kinds": {"Delivery": "delivered", "Bounce": "bounced"}}}"#;

    fn message() -> Message {
        Message {
            id: "e1:0".into(),
            contact_id: "c1".into(),
            recipient: "lin@example.com".into(),
            class: MessageClass::Marketing,
            test: false,
            subject: Some("Welcome".into()),
            text: Some("Hello".into()),
            html: None,
            headers: vec![("List-Unsubscribe".into(), "<https://t.example/u>".into())],
            metadata: vec![],
        }
    }

    fn paths(config: &str) -> Vec<String> {
        match Config::parse(config) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect(),
        }
    }

    #[test]
    fn the_body_mapping_fills_in_the_message() {
        let config = Config::parse(POSTMARK).unwrap();
        let request = config.request(&message());
        let body: Json = serde_json::from_slice(request.body.as_ref().unwrap()).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"From": "Shop <news@shop.example>", "To": "lin@example.com",
                "Subject": "Welcome", "TextBody": "Hello", "HtmlBody": null,
                "Headers": [{"Name": "List-Unsubscribe", "Value": "<https://t.example/u>"}],
                "Metadata": {"wayline_id": "e1:0"}})
        );
        assert!(
            request
                .headers
                .contains(&("Idempotency-Key".into(), "e1:0".into()))
        );
        assert!(
            request
                .headers
                .contains(&("X-Postmark-Server-Token".into(), "{{secret:token}}".into()))
        );
    }

    #[test]
    fn a_config_survives_being_prepared() {
        use wayline_sdk::config::{load, prepare};
        let prepared = prepare::<Config>(POSTMARK, "email-http@0.1.0").unwrap();
        let config = load::<Config>(&prepared.config, "email-http@0.1.0").unwrap();
        assert_eq!(config.body, Config::parse(POSTMARK).unwrap().body);
    }

    #[test]
    fn answers_are_classified_and_the_provider_id_found() {
        let config = Config::parse(POSTMARK).unwrap();
        let response = |status, body: &str| Response {
            status,
            headers: vec![("retry-after".into(), "20".into())],
            body: body.as_bytes().to_vec(),
        };
        let accepted = classify(&config, &response(200, r#"{"MessageID": "pm-7"}"#), "m");
        assert_eq!(accepted.unwrap().provider_id, "pm-7");
        let busy = classify(&config, &response(429, "slow down"), "m").unwrap_err();
        assert_eq!(
            (busy.kind, busy.retry_after_ms),
            (FailureKind::Retryable, Some(20_000))
        );
        let key = classify(&config, &response(401, "bad token"), "m").unwrap_err();
        assert_eq!(key.kind, FailureKind::Permanent);
        assert!(key.message.contains("credentials"), "{}", key.message);
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(r#"{"url": "ftp://x", "from": "a@b.example", "body": {}}"#),
            ["url"]
        );
        assert_eq!(
            paths(r#"{"url": "https://api.example.com", "from": "a@b.example", "body": []}"#),
            ["body"]
        );
        assert_eq!(
            paths(
                r#"{"url": "https://api.example.com", "from": "a@b.example", "body": {},
                  "webhook": {"kind": "/event", "message_id": "/id", "kinds": {"open": "viewed"}}}"#
            ),
            ["webhook.signature", "webhook.kinds.open"]
        );
    }
}
