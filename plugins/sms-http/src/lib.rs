//! Delivers text messages through a generic SMS gateway's HTTP API, over the host's outbound
//! HTTP, after checking that the recipient is a phone number and the text fits.
//!
//! ```json
//! {"url": "https://sms.example.com/v1/messages",
//!  "headers": {"Authorization": "Bearer {{secret:sms_key}}"},
//!  "body": {"to": "$recipient", "text": "$text", "reference": "$id", "sender": "SHOP"},
//!  "max_segments": 3}
//! ```
//! - `url`: the gateway; `{recipient}`, `{text}` and `{id}` in it are written in URL-encoded,
//!   for gateways that take the message in the query. `method`: POST (default) or GET.
//! - `format`: `json` (default) sends `body` as JSON; `form` as
//!   `application/x-www-form-urlencoded` (its values must then be strings).
//! - `body`: the request body, in which the strings `$recipient`, `$text`, `$id` and
//!   `$subject` are replaced by the message's values.
//! - `headers`, `{{secret:NAME}}` placeholders, `Idempotency-Key`, `id_from`: as in email-http.
//! - `max_segments` (default 3): a text longer than that many segments (160 GSM-7 characters
//!   for one, 153 each when split; 70 and 67 when the text needs UCS-2, e.g. Chinese) fails
//!   permanently instead of arriving in pieces nobody asked for.
//! - `e164` (default true): a recipient that is not `+` and 7 to 15 digits is an invalid
//!   recipient, never sent.
//!
//! 429 and 5xx are retried; statuses in `invalid_recipient_statuses` (default none) mark the
//! number invalid; anything else is permanent.

use serde::{Deserialize, Serialize};
use serde_json::Value as Json;
use wayline_providers::{JsonText, fill, text};
use wayline_rules::{Check, Entries, Problems, ROOT};
use wayline_sdk::channel::*;
use wayline_sdk::host::http::{Request, Response, send};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    url: String,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    format: Option<String>,
    #[serde(default)]
    headers: Entries<String>,
    body: Option<JsonText>,
    #[serde(default)]
    max_segments: Option<u32>,
    #[serde(default)]
    e164: Option<bool>,
    #[serde(default)]
    id_from: Option<String>,
    #[serde(default)]
    invalid_recipient_statuses: Vec<u16>,
    #[serde(default)]
    timeout_ms: Option<u32>,
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        if !wayline_providers::is_http_url(&self.url) {
            problems.add(&ROOT.field("url"), "must be an http(s) URL with a host");
        }
        if !matches!(self.method.as_deref(), None | Some("POST" | "GET")) {
            problems.add(&ROOT.field("method"), "must be POST or GET");
        }
        if !matches!(self.format.as_deref(), None | Some("json" | "form")) {
            problems.add(&ROOT.field("format"), "must be json or form");
        }
        wayline_providers::check_headers(&self.headers, &ROOT.field("headers"), problems);
        let form = self.format.as_deref() == Some("form");
        match self.body.as_ref().map(JsonText::parse) {
            None => {}
            Some(Some(Json::Object(fields))) if form && !fields.values().all(Json::is_string) => {
                problems.add(&ROOT.field("body"), "a form body's values must be strings");
            }
            Some(Some(Json::Object(_))) => {}
            Some(_) => problems.add(&ROOT.field("body"), "must be a JSON object"),
        }
        if self.method.as_deref() == Some("GET") && self.body.is_some() {
            problems.add(
                &ROOT.field("body"),
                "a GET sends no body; put the fields in the url",
            );
        }
        if self.max_segments == Some(0) {
            problems.add(&ROOT.field("max_segments"), "must be at least 1");
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
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }
}

/// Characters of the GSM 03.38 basic set (one septet each) and its extension (two).
const GSM_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM_EXTENDED: &str = "^{}\\[~]|€\u{c}";

/// How many SMS segments `text` takes.
pub fn segments(text: &str) -> u32 {
    let septets: Option<u32> = text
        .chars()
        .map(|c| {
            if GSM_BASIC.contains(c) {
                Some(1)
            } else if GSM_EXTENDED.contains(c) {
                Some(2)
            } else {
                None
            }
        })
        .sum();
    let (units, single, each) = match septets {
        Some(septets) => (septets, 160, 153),
        None => (text.encode_utf16().count() as u32, 70, 67),
    };
    if units <= single {
        1
    } else {
        units.div_ceil(each)
    }
}

/// `+` and 7 to 15 digits, the first not 0.
pub fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len())
            && digits.bytes().all(|b| b.is_ascii_digit())
            && !digits.starts_with('0')
    })
}

fn url_encode(text: &str) -> String {
    let mut encoded = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || b"-._~".contains(&byte) {
            encoded.push(byte as char);
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

impl Config {
    /// The gateway request for `message`, or why it cannot be sent as an SMS.
    pub fn request(&self, message: &Message) -> Result<Request, DeliveryFailure> {
        let body_text = message.body();
        if body_text.is_empty() {
            return Err(DeliveryFailure::permanent(
                "an SMS needs a text; give the template one",
            ));
        }
        if self.e164 != Some(false) && !is_e164(&message.recipient) {
            return Err(DeliveryFailure::invalid_recipient(format!(
                "`{}` is not a phone number in E.164 form (+8613800000000)",
                message.recipient
            )));
        }
        let max = self.max_segments.unwrap_or(3);
        let needed = segments(body_text);
        if needed > max {
            return Err(DeliveryFailure::permanent(format!(
                "the text takes {needed} SMS segments; this channel sends at most {max}"
            )));
        }
        let value = |name: &str| -> Option<Json> {
            Some(match name {
                "recipient" => Json::from(message.recipient.as_str()),
                "text" => Json::from(body_text),
                "id" => Json::from(message.id.as_str()),
                "subject" => text(message.subject.as_deref()),
                _ => return None,
            })
        };
        let url = self
            .url
            .replace("{recipient}", &url_encode(&message.recipient))
            .replace("{text}", &url_encode(body_text))
            .replace("{id}", &url_encode(&message.id));
        let form = self.format.as_deref() == Some("form");
        let body = self
            .body
            .as_ref()
            .and_then(JsonText::parse)
            .map(|template| {
                let filled = fill(template, &value);
                if form {
                    let fields = filled.as_object().cloned().unwrap_or_default();
                    fields
                        .iter()
                        .map(|(k, v)| {
                            format!("{}={}", url_encode(k), url_encode(v.as_str().unwrap_or("")))
                        })
                        .collect::<Vec<_>>()
                        .join("&")
                        .into_bytes()
                } else {
                    filled.to_string().into_bytes()
                }
            });
        let content_type = if form {
            "application/x-www-form-urlencoded"
        } else {
            "application/json"
        };
        let mut defaults = vec![("Idempotency-Key", message.id.as_str())];
        if body.is_some() {
            defaults.push(("Content-Type", content_type));
        }
        Ok(Request {
            method: self.method.clone().unwrap_or_else(|| "POST".into()),
            url,
            headers: wayline_providers::with_defaults(&self.headers, &defaults),
            body,
            timeout_ms: self.timeout_ms,
        })
    }

    pub fn classify(
        &self,
        response: &Response,
        message_id: &str,
    ) -> Result<Delivery, DeliveryFailure> {
        if (200..300).contains(&response.status) {
            let keys = ["id", "message_id", "sid", "messageId"];
            let id = wayline_providers::provider_id(
                response,
                self.id_from.as_deref(),
                &keys,
                message_id,
            );
            return Ok(Delivery::accepted(id));
        }
        Err(wayline_providers::failure(
            response,
            &self.invalid_recipient_statuses,
        ))
    }
}

pub struct SmsHttp;

impl Channel for SmsHttp {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Sends SMS through a gateway's HTTP API, checking the number and the segment count",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn deliver(config: Config, message: Message) -> Result<Delivery, DeliveryFailure> {
        let request = config.request(&message)?;
        let response = send(&request).map_err(wayline_providers::host_failure)?;
        config.classify(&response, &message.id)
    }
}

export!(SmsHttp);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "sms-http config",
  "type": "object",
  "required": ["url"],
  "properties": {
    "url": {"type": "string", "description": "The gateway; {recipient}, {text}, {id} are written in URL-encoded"},
    "method": {"enum": ["POST", "GET"]},
    "format": {"enum": ["json", "form"]},
    "headers": {"type": "object", "additionalProperties": {"type": "string"}},
    "body": {"type": "object", "description": "$recipient, $text, $id, $subject are replaced"},
    "max_segments": {"type": "integer", "minimum": 1, "default": 3},
    "e164": {"type": "boolean", "default": true},
    "id_from": {"type": "string"},
    "invalid_recipient_statuses": {"type": "array", "items": {"type": "integer"}},
    "timeout_ms": {"type": "integer", "minimum": 1}
  },
  "additionalProperties": false
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn message(to: &str, text: &str) -> Message {
        Message {
            id: "e1:0".into(),
            contact_id: "c1".into(),
            recipient: to.into(),
            class: MessageClass::Marketing,
            test: false,
            subject: None,
            text: Some(text.into()),
            html: None,
            headers: vec![],
            metadata: vec![],
        }
    }

    #[test]
    fn segments_are_counted_as_phones_count_them() {
        assert_eq!(segments(&"a".repeat(160)), 1);
        assert_eq!(segments(&"a".repeat(161)), 2);
        assert_eq!(segments(&"a".repeat(306)), 2);
        assert_eq!(segments(&"a".repeat(307)), 3);
        // `€` takes two septets.
        assert_eq!(segments(&"€".repeat(80)), 1);
        assert_eq!(segments(&"€".repeat(81)), 2);
        assert_eq!(segments(&"欢".repeat(70)), 1);
        assert_eq!(segments(&"欢".repeat(71)), 2);
    }

    #[test]
    fn the_request_fills_the_gateways_shape() {
        let config = Config::parse(
            r#"{"url": "https://sms.example.com/send?to={recipient}", "format": "form",
                "headers": {"Authorization": "Bearer {{secret:k}}"},
                "body": {"text": "$text", "ref": "$id"}}"#,
        )
        .unwrap();
        let request = config
            .request(&message("+8613800000000", "验证码 1234"))
            .unwrap();
        assert_eq!(
            request.url,
            "https://sms.example.com/send?to=%2B8613800000000"
        );
        let body = String::from_utf8(request.body.unwrap()).unwrap();
        // Fields go in name order.
        assert_eq!(body, "ref=e1%3A0&text=%E9%AA%8C%E8%AF%81%E7%A0%81%201234");
        assert!(request.headers.contains(&(
            "Content-Type".into(),
            "application/x-www-form-urlencoded".into()
        )));
    }

    #[test]
    fn numbers_and_lengths_are_checked_before_anything_is_sent() {
        let config = Config::parse(r#"{"url": "https://sms.example.com/send", "body": {"to": "$recipient"}, "max_segments": 1}"#).unwrap();
        let bad = config.request(&message("13800000000", "hi")).unwrap_err();
        assert_eq!(bad.kind, FailureKind::InvalidRecipient);
        let long = config
            .request(&message("+8613800000000", &"x".repeat(200)))
            .unwrap_err();
        assert_eq!(long.kind, FailureKind::Permanent);
        assert!(long.message.contains("2 SMS segments"), "{}", long.message);
    }
}
