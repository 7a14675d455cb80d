//! What the first-party channel plugins share for talking to providers' HTTP APIs: a request
//! body written as JSON with `$name` placeholders, the provider's id of an accepted message,
//! and what an HTTP answer or a host-side failure means for a delivery.
//!
//! A plain library (no WIT bindings of its own), compiled into each channel plugin.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value as Json;
use wayline_rules::{Entries, Path, Problems};
use wayline_sdk::host::http::{HttpError, Response};
use wayline_sdk::{DeliveryFailure, FailureKind};

/// Longest excerpt of a provider's answer quoted in a failure.
const EXCERPT_CHARS: usize = 200;

/// A JSON document kept as its text in the prepared config (so it prepares in the compact
/// encoding, which cannot carry a self-describing value), and written as JSON in the
/// operator's config.
#[derive(Debug, Clone, PartialEq)]
pub struct JsonText(pub String);

impl JsonText {
    pub fn parse(&self) -> Option<Json> {
        serde_json::from_str(&self.0).ok()
    }
}

impl Serialize for JsonText {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        if serializer.is_human_readable() {
            let value: Json = serde_json::from_str(&self.0).map_err(serde::ser::Error::custom)?;
            value.serialize(serializer)
        } else {
            self.0.serialize(serializer)
        }
    }
}

impl<'de> Deserialize<'de> for JsonText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        if deserializer.is_human_readable() {
            Ok(JsonText(Json::deserialize(deserializer)?.to_string()))
        } else {
            Ok(JsonText(String::deserialize(deserializer)?))
        }
    }
}

/// `document` with every string that is exactly a placeholder (`"$recipient"`) replaced by
/// what `value` gives for its name; strings it knows nothing of stay as they are.
pub fn fill(document: Json, value: &dyn Fn(&str) -> Option<Json>) -> Json {
    match document {
        Json::String(text) => match text.strip_prefix('$').and_then(value) {
            Some(filled) => filled,
            None => Json::String(text),
        },
        Json::Array(items) => Json::Array(items.into_iter().map(|i| fill(i, value)).collect()),
        Json::Object(fields) => Json::Object(
            fields
                .into_iter()
                .map(|(key, field)| (key, fill(field, value)))
                .collect(),
        ),
        other => other,
    }
}

/// Text as a JSON value, `null` when there is none.
pub fn text(value: Option<&str>) -> Json {
    value.map_or(Json::Null, Json::from)
}

/// An http(s) URL with a host (placeholders allowed after it).
pub fn is_http_url(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower
        .strip_prefix("https://")
        .or_else(|| lower.strip_prefix("http://"))
        .is_some_and(|rest| !rest.is_empty() && !rest.starts_with(['/', '?', '#', '{']))
}

/// Header names that are tokens and values on one line.
pub fn check_headers(headers: &Entries<String>, at: &Path<'_>, problems: &mut Problems) {
    headers.check_names(at, str::eq_ignore_ascii_case, problems);
    for (name, value) in headers.iter() {
        let token = !name.is_empty()
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
        if !name.is_empty() && !token {
            problems.add(&at.field(name), "not a valid header name");
        } else if value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)) {
            problems.add(&at.field(name), "a header value cannot contain line breaks");
        }
    }
}

/// `headers` as pairs, with each of `defaults` added unless a header of that name is set.
pub fn with_defaults(
    headers: &Entries<String>,
    defaults: &[(&str, &str)],
) -> Vec<(String, String)> {
    let mut pairs: Vec<(String, String)> = headers
        .iter()
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    for (name, value) in defaults {
        if !pairs.iter().any(|(n, _)| n.eq_ignore_ascii_case(name)) {
            pairs.push(((*name).to_owned(), (*value).to_owned()));
        }
    }
    pairs
}

pub fn header<'a>(response: &'a Response, name: &str) -> Option<&'a str> {
    response
        .headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// The start of a response body for a failure message: one line (whitespace runs, an HTML
/// page's newlines and indentation, become single spaces), at most 200 characters.
pub fn excerpt(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let joined = text.split_whitespace().collect::<Vec<_>>().join(" ");
    match joined.char_indices().nth(EXCERPT_CHARS) {
        Some(_) => {
            let cut = joined
                .char_indices()
                .nth(EXCERPT_CHARS - 1)
                .map_or(0, |(at, _)| at);
            format!("{}…", &joined[..cut])
        }
        None => joined,
    }
}

/// Whether `id_from` is `json:/pointer` or `header:name`.
pub fn valid_id_from(id_from: &str) -> bool {
    id_from
        .strip_prefix("json:")
        .is_some_and(|p| p.is_empty() || p.starts_with('/'))
        || id_from
            .strip_prefix("header:")
            .is_some_and(|h| !h.is_empty())
}

/// The provider's id for an accepted message: where `id_from` says, else the first of
/// `keys` in the JSON body, else the `x-message-id` or `x-request-id` header, else `fallback`.
pub fn provider_id(
    response: &Response,
    id_from: Option<&str>,
    keys: &[&str],
    fallback: &str,
) -> String {
    let body: Option<Json> = serde_json::from_slice(&response.body).ok();
    let as_id = |value: &Json| match value {
        Json::String(id) if !id.is_empty() => Some(id.clone()),
        Json::Number(id) => Some(id.to_string()),
        _ => None,
    };
    let configured = id_from.and_then(|from| match from.strip_prefix("json:") {
        Some(pointer) => body.as_ref()?.pointer(pointer).and_then(as_id),
        None => header(response, from.strip_prefix("header:")?).map(str::to_owned),
    });
    configured
        .or_else(|| {
            let body = body.as_ref()?;
            keys.iter().find_map(|key| body.get(key).and_then(as_id))
        })
        .or_else(|| header(response, "x-message-id").map(str::to_owned))
        .or_else(|| header(response, "x-request-id").map(str::to_owned))
        .unwrap_or_else(|| fallback.to_owned())
}

/// What a non-2xx answer means: 429 and 5xx are retried (honouring `Retry-After` in
/// seconds), a status in `invalid_recipient` means the address is wrong, anything else is
/// permanent; the message quotes the start of the body.
pub fn failure(response: &Response, invalid_recipient: &[u16]) -> DeliveryFailure {
    let status = response.status;
    let retryable = status == 429 || status >= 500;
    let kind = if retryable {
        FailureKind::Retryable
    } else if invalid_recipient.contains(&status) {
        FailureKind::InvalidRecipient
    } else {
        FailureKind::Permanent
    };
    let retry_after_ms = header(response, "retry-after")
        .filter(|_| retryable)
        .and_then(|seconds| seconds.trim().parse::<u64>().ok())
        .map(|seconds| seconds.saturating_mul(1000));
    let hint = match status {
        300..=399 => " (the host does not follow redirects; point `url` at the final address)",
        401 | 403 => " (check the credentials: the secret and the headers)",
        _ => "",
    };
    let excerpt = excerpt(&response.body);
    DeliveryFailure {
        kind,
        message: if excerpt.is_empty() {
            format!("HTTP {status}{hint}")
        } else {
            format!("HTTP {status}{hint}: {excerpt}")
        },
        retry_after_ms,
    }
}

/// What a failure inside the host means: denied, unknown secret and too large are permanent
/// (the configuration), timeout and transport errors are retried.
pub fn host_failure(error: HttpError) -> DeliveryFailure {
    let (kind, message) = match error {
        HttpError::Denied(reason) => (
            FailureKind::Permanent,
            format!("request denied by the host: {reason}"),
        ),
        HttpError::UnknownSecret(name) => (
            FailureKind::Permanent,
            format!("secret `{name}` is not set for this channel"),
        ),
        HttpError::TooLarge => (
            FailureKind::Permanent,
            "the response was larger than the host allows".into(),
        ),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn response(status: u16, headers: &[(&str, &str)], body: &str) -> Response {
        Response {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
            body: body.as_bytes().to_vec(),
        }
    }

    #[test]
    fn placeholders_are_whole_strings_and_unknown_ones_stay() {
        let document =
            serde_json::json!({"to": "$to", "n": [1, "$to"], "keep": "$other", "x": "a $to"});
        let filled = fill(document, &|name| {
            (name == "to").then(|| Json::from("+8613800000000"))
        });
        assert_eq!(
            filled,
            serde_json::json!({"to": "+8613800000000", "n": [1, "+8613800000000"], "keep": "$other", "x": "a $to"})
        );
    }

    #[test]
    fn answers_are_classified_and_ids_found() {
        assert_eq!(
            provider_id(
                &response(200, &[], r#"{"MessageID": "pm-1"}"#),
                None,
                &["id", "MessageID"],
                "m"
            ),
            "pm-1"
        );
        assert_eq!(
            provider_id(
                &response(200, &[("X-Req", "r-9")], "{}"),
                Some("header:x-req"),
                &[],
                "m"
            ),
            "r-9"
        );
        assert_eq!(
            provider_id(
                &response(200, &[], r#"{"data": {"sid": 42}}"#),
                Some("json:/data/sid"),
                &[],
                "m"
            ),
            "42"
        );
        assert_eq!(
            provider_id(&response(202, &[], ""), None, &["id"], "m"),
            "m"
        );
        let busy = failure(&response(429, &[("Retry-After", "30")], "slow"), &[]);
        assert_eq!(
            (busy.kind, busy.retry_after_ms),
            (FailureKind::Retryable, Some(30_000))
        );
        let gone = failure(&response(404, &[], "no"), &[404]);
        assert_eq!(gone.kind, FailureKind::InvalidRecipient);
        let key = failure(&response(401, &[], ""), &[404]);
        assert_eq!(key.kind, FailureKind::Permanent);
        assert!(key.message.contains("credentials"), "{}", key.message);
        assert_eq!(excerpt(&"x ".repeat(300).into_bytes()).chars().count(), 200);
        assert_eq!(excerpt(&[b'x'; 200]).chars().count(), 200);
    }
}
