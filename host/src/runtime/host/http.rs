//! `wayline:plugin/http`: outbound HTTP on a plugin's behalf.
//!
//! The guest never opens a socket. It hands the host a request; the host checks the target
//! against the hosts the plugin declared *and* the targets the operator approved (scheme, host
//! and port), refuses address literals that are not public unless approved as such, writes
//! secrets into the request only for the targets they are bound to, sends it without following
//! redirects through a client that resolves names only to reachable addresses, and redacts every
//! secret from what comes back. Error strings never carry a secret either. See `runtime::egress`.

use std::sync::Arc;
use std::time::Duration;

use super::HostState;
use crate::runtime::bindings::http::{self, HttpError, Request, Response};
use crate::runtime::egress::{Egress, MAX_REQUESTS_PER_CALL, Refused, Target, TargetHost};

/// A channel's egress granted to one call.
pub struct HttpGrant {
    pub egress: Arc<Egress>,
    /// Requests (HTTP or SMTP) this call has sent.
    pub sent: u32,
    /// Whether the call may send at all: a delivery may, reading a webhook may only check
    /// signatures with the channel's secrets.
    pub sending: bool,
}

impl HttpGrant {
    /// A grant to send from a delivery.
    pub fn sending(egress: Arc<Egress>) -> Self {
        HttpGrant {
            egress,
            sent: 0,
            sending: true,
        }
    }

    /// A grant of the channel's secrets for checking signatures, and nothing else.
    pub fn verifying(egress: Arc<Egress>) -> Self {
        HttpGrant {
            egress,
            sent: 0,
            sending: false,
        }
    }
}

impl HostState {
    /// The grant of a call that is about to send, counted against its bound; the error says
    /// why it may not.
    pub(crate) fn take_send(&mut self) -> Result<Arc<Egress>, String> {
        let grant = match self.http.as_mut() {
            Some(grant) if grant.sending => grant,
            _ => return Err("sending is only available while delivering a message".into()),
        };
        if grant.sent >= MAX_REQUESTS_PER_CALL {
            return Err(format!(
                "a call may send at most {MAX_REQUESTS_PER_CALL} requests"
            ));
        }
        grant.sent += 1;
        Ok(grant.egress.clone())
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let egress = self.take_send().map_err(HttpError::Denied)?;
        let prepared = prepare(&egress, request)?;
        self.cpu.pause();
        let started = std::time::Instant::now();
        let response = send_prepared(&egress, prepared).await;
        self.waited += started.elapsed();
        response
    }
}

impl crate::runtime::bindings::v2::http::Host for HostState {
    async fn send(
        &mut self,
        request: crate::runtime::bindings::v2::http::Request,
    ) -> Result<
        crate::runtime::bindings::v2::http::Response,
        crate::runtime::bindings::v2::http::HttpError,
    > {
        use crate::runtime::bindings::v2::http as v2;
        let request = Request {
            method: request.method,
            url: request.url,
            headers: request.headers,
            body: request.body,
            timeout_ms: request.timeout_ms,
        };
        match http::Host::send(self, request).await {
            Ok(response) => Ok(v2::Response {
                status: response.status,
                headers: response.headers,
                body: response.body,
            }),
            Err(error) => Err(match error {
                HttpError::Denied(why) => v2::HttpError::Denied(why),
                HttpError::UnknownSecret(name) => v2::HttpError::UnknownSecret(name),
                HttpError::Timeout => v2::HttpError::Timeout,
                HttpError::Transport(why) => v2::HttpError::Transport(why),
                HttpError::TooLarge => v2::HttpError::TooLarge,
            }),
        }
    }
}

struct Prepared {
    method: reqwest::Method,
    url: url::Url,
    headers: reqwest::header::HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

fn prepare(egress: &Egress, request: Request) -> Result<Prepared, HttpError> {
    let method = match request.method.to_ascii_uppercase().as_str() {
        m @ ("GET" | "POST" | "PUT" | "PATCH" | "DELETE" | "HEAD") => {
            reqwest::Method::from_bytes(m.as_bytes()).expect("listed methods are valid")
        }
        other => {
            return Err(HttpError::Denied(format!(
                "method `{other}` is not allowed"
            )));
        }
    };
    // The target is checked on the URL as the plugin wrote it, so a denial can name it without
    // leaking a secret, then again after substitution so a secret cannot move the target.
    if request.url.contains("{{secret:") && secret_in_authority(&request.url) {
        return Err(HttpError::Denied(
            "secrets may not appear in the host or port".into(),
        ));
    }
    let written = url::Url::parse(&request.url)
        .map_err(|e| HttpError::Denied(format!("invalid url: {e}")))?;
    let target = Target::of(&written).map_err(HttpError::Denied)?;
    if !target.scheme.is_http() {
        return Err(HttpError::Denied(format!(
            "{target} is not an HTTP target; email goes through `smtp`"
        )));
    }
    if !written.username().is_empty() || written.password().is_some() {
        return Err(HttpError::Denied(
            "credentials in the url are not sent; put them in a header with a secret".into(),
        ));
    }
    if !egress.allows(&target) {
        return Err(HttpError::Denied(format!(
            "{target} is not approved for this plugin"
        )));
    }
    if let TargetHost::Ip(ip) = &target.host
        && !egress.reaches(*ip)
    {
        return Err(HttpError::Denied(format!(
            "{ip} is not a public address and is not approved as one"
        )));
    }
    let secrets = &egress.secrets;
    let url_text = String::from_utf8(secrets.substitute(request.url.as_bytes(), &target)?)
        .map_err(|_| HttpError::Denied("url is not UTF-8 after secrets".into()))?;
    let url = url::Url::parse(&url_text)
        .map_err(|_| HttpError::Denied("url is invalid after secrets were written in".into()))?;
    if Target::of(&url).ok().as_ref() != Some(&target) {
        return Err(HttpError::Denied(
            "secrets may not appear in the host or port".into(),
        ));
    }
    let body = request
        .body
        .map(|body| secrets.substitute(&body, &target))
        .transpose()?;
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in request.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::Denied(format!("invalid header name `{name}`")))?;
        if name == reqwest::header::HOST {
            return Err(HttpError::Denied(
                "the host header is set by the host".into(),
            ));
        }
        let value = secrets.substitute(value.as_bytes(), &target)?;
        let value = match std::str::from_utf8(&value) {
            Ok(text) if text.contains("{{hmac-sha256:") => secrets
                .sign(text, body.as_deref().unwrap_or_default(), &target)?
                .into_bytes(),
            _ => value,
        };
        let value = reqwest::header::HeaderValue::from_bytes(&value)
            .map_err(|_| HttpError::Denied(format!("invalid value for header `{name}`")))?;
        headers.append(name, value);
    }
    let timeout = request.timeout_ms.map_or(egress.max_timeout, |ms| {
        Duration::from_millis(ms.into()).min(egress.max_timeout)
    });
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

/// Whether a placeholder sits in the URL's authority (between `//` and the next `/`, `?` or `#`).
fn secret_in_authority(url: &str) -> bool {
    let after_scheme = url.split_once("//").map_or(url, |(_, rest)| rest);
    let authority = after_scheme
        .split(['/', '?', '#'])
        .next()
        .unwrap_or_default();
    authority.contains("{{") || authority.to_ascii_lowercase().contains("%7b%7b")
}

/// Content encodings the client decodes, so that redaction sees the plain bytes.
const DECODED: [&str; 2] = ["gzip", "deflate"];

async fn send_prepared(egress: &Egress, prepared: Prepared) -> Result<Response, HttpError> {
    let secrets = &egress.secrets;
    let mut builder = egress
        .client
        .request(prepared.method, prepared.url)
        .headers(prepared.headers)
        .timeout(prepared.timeout);
    if let Some(body) = prepared.body {
        builder = builder.body(body);
    }
    let transport_error = |e: reqwest::Error| {
        if e.is_timeout() {
            return HttpError::Timeout;
        }
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
        while let Some(error) = source {
            if let Some(refused) = error.downcast_ref::<Refused>() {
                return HttpError::Denied(refused.to_string());
            }
            source = error.source();
        }
        HttpError::Transport(secrets.redact_text(e.without_url().to_string()))
    };
    let mut response = builder.send().await.map_err(transport_error)?;
    // The client has decoded gzip and deflate (and removed the header); any other encoding
    // would hide a secret's bytes from redaction.
    if let Some(encoding) = response.headers().get(reqwest::header::CONTENT_ENCODING) {
        let encoding = String::from_utf8_lossy(encoding.as_bytes()).to_ascii_lowercase();
        if encoding != "identity" && !DECODED.contains(&encoding.as_str()) {
            return Err(HttpError::Denied(format!(
                "the response is `{}`-encoded, which the host cannot check for secrets",
                secrets.redact_text(encoding).escape_debug()
            )));
        }
    }
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                secrets.redact_text(String::from_utf8_lossy(value.as_bytes()).into_owned()),
            )
        })
        .collect();
    let limit = egress.max_response_bytes;
    if response
        .content_length()
        .is_some_and(|length| length > limit as u64)
    {
        return Err(HttpError::TooLarge);
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(transport_error)? {
        if body.len() + chunk.len() > limit {
            return Err(HttpError::TooLarge);
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response {
        status,
        headers,
        body: secrets.redact(body),
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::runtime::egress::SecretSetting;

    fn egress(declared: &[&str], approved: &[&str]) -> Egress {
        let strings = |list: &[&str]| list.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let secrets = BTreeMap::from([(
            "token".to_owned(),
            SecretSetting {
                value: crate::runtime::egress::SecretValue("s3cr3t-value".into()),
                hosts: vec!["https://api.example.com".into()],
                verifies_webhooks: false,
            },
        )]);
        Egress::new(
            &strings(declared),
            &strings(approved),
            &secrets,
            &Default::default(),
        )
        .unwrap()
    }

    fn request(url: &str) -> Request {
        Request {
            method: "POST".into(),
            url: url.into(),
            headers: vec![],
            body: None,
            timeout_ms: None,
        }
    }

    #[test]
    fn a_target_must_be_both_declared_and_approved() {
        let e = egress(
            &["api.example.com"],
            &["https://api.example.com", "https://other.example.com"],
        );
        assert!(prepare(&e, request("https://api.example.com/v1")).is_ok());
        let denied = prepare(&e, request("https://other.example.com/v1"))
            .err()
            .unwrap();
        assert!(
            matches!(&denied, HttpError::Denied(m) if m.contains("https://other.example.com:443")),
            "{denied:?}"
        );
        let e = egress(&["*"], &["https://hooks.example.com"]);
        assert!(prepare(&e, request("https://hooks.example.com/x")).is_ok());
        assert!(prepare(&e, request("https://evil.example.net/x")).is_err());
        assert!(prepare(&e, request("file:///etc/passwd")).is_err());
        assert!(prepare(&e, request("https://user:pw@hooks.example.com/x")).is_err());
    }

    #[test]
    fn address_literals_that_are_not_public_need_an_approval_of_their_own() {
        let e = egress(&["*"], &["http://127.0.0.1:8080", "http://*.example.com"]);
        assert!(prepare(&e, request("http://127.0.0.1:8080/")).is_ok());
        for refused in [
            "http://169.254.169.254/latest/meta-data/",
            "http://[::ffff:127.0.0.1]:8080/",
            "http://127.0.0.1:8081/",
            "http://10.0.0.1/",
        ] {
            assert!(prepare(&e, request(refused)).is_err(), "{refused}");
        }
    }

    #[test]
    fn secrets_are_written_in_for_their_targets_and_cannot_move_the_target() {
        let e = egress(
            &["*"],
            &["https://api.example.com", "https://echo.example.com"],
        );
        let mut r = request("https://api.example.com/hook?key={{secret:token}}");
        r.headers = vec![("authorization".into(), "Bearer {{secret:token}}".into())];
        r.body = Some(b"{\"k\":\"{{secret:token}}\"}".to_vec());
        let prepared = prepare(&e, r).unwrap();
        assert_eq!(prepared.url.query(), Some("key=s3cr3t-value"));
        assert_eq!(prepared.headers["authorization"], "Bearer s3cr3t-value");
        assert_eq!(prepared.body.unwrap(), b"{\"k\":\"s3cr3t-value\"}");
        let mut elsewhere = request("https://echo.example.com/");
        elsewhere.body = Some(b"{{secret:token}}".to_vec());
        assert!(
            matches!(prepare(&e, elsewhere), Err(HttpError::Denied(m)) if m.contains("not bound"))
        );
        let moved = prepare(&e, request("https://{{secret:token}}.api.example.com/"));
        assert!(matches!(moved, Err(HttpError::Denied(_))));
        let unknown = prepare(&e, request("https://api.example.com/?k={{secret:nope}}"));
        assert!(matches!(unknown, Err(HttpError::UnknownSecret(n)) if n == "nope"));
    }
}
