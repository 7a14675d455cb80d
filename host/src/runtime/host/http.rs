//! `wayline:plugin/http`: outbound HTTP on a plugin's behalf.
//!
//! The guest never opens a socket. It hands the host a request; the host checks the target
//! against the hosts the plugin declared *and* the operator approved, writes secrets into the
//! request from `{{secret:NAME}}` placeholders, sends it without following redirects, and
//! redacts every secret from what comes back. Error strings never carry a secret either.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::HostState;
use crate::runtime::bindings::http::{self, HttpError, Request, Response};

const PLACEHOLDER_OPEN: &[u8] = b"{{secret:";
const PLACEHOLDER_CLOSE: &[u8] = b"}}";
const REDACTED: &[u8] = b"[redacted]";

/// A host pattern: `api.example.com`, `api.example.com:8443`, `*.example.com`, or `*`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostPattern {
    host: String,
    port: Option<u16>,
}

impl HostPattern {
    /// Parse a pattern; `None` if it is not one.
    pub fn parse(text: &str) -> Option<HostPattern> {
        let text = text.trim().to_ascii_lowercase();
        if text.is_empty() || text.contains('/') {
            return None;
        }
        let (host, port) = match text.rsplit_once(':') {
            Some((host, port)) if !host.contains(':') => {
                (host.to_owned(), Some(port.parse().ok()?))
            }
            _ => (text, None),
        };
        let valid = host == "*"
            || host
                .trim_start_matches("*.")
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
        valid.then_some(HostPattern { host, port })
    }

    fn matches(&self, host: &str, port: u16) -> bool {
        let host_matches = match self.host.strip_prefix("*.") {
            _ if self.host == "*" => true,
            Some(domain) => {
                host.len() > domain.len() + 1
                    && host.ends_with(domain)
                    && host[..host.len() - domain.len()].ends_with('.')
            }
            None => self.host == host,
        };
        host_matches && self.port.is_none_or(|p| p == port)
    }
}

/// The operator's decisions about one plugin's outbound HTTP.
#[derive(Debug, Clone)]
pub struct HttpPolicy {
    /// Hosts the plugin declared in `describe` (`*` means "whatever the operator approves").
    pub declared: Vec<HostPattern>,
    /// Hosts the operator approved for this plugin.
    pub approved: Vec<HostPattern>,
    /// Secret values by name, written into requests by the host.
    pub secrets: BTreeMap<String, String>,
    pub max_response_bytes: usize,
    pub max_timeout: Duration,
}

impl HttpPolicy {
    fn allows(&self, host: &str, port: u16) -> bool {
        self.declared.iter().any(|p| p.matches(host, port))
            && self
                .approved
                .iter()
                .any(|p| p.host != "*" && p.matches(host, port))
    }
}

/// Outbound HTTP granted to one call.
#[derive(Clone)]
pub struct HttpGrant {
    pub client: reqwest::Client,
    pub policy: Arc<HttpPolicy>,
}

/// The client every grant shares: no redirects (a redirect could leave the approved hosts), no
/// proxies from the environment, no cookies.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .build()
        .expect("the HTTP client's static configuration is valid")
}

impl http::Host for HostState {
    async fn send(&mut self, request: Request) -> Result<Response, HttpError> {
        let Some(grant) = self.http.clone() else {
            return Err(HttpError::Denied(
                "outbound HTTP is only available while delivering a message".into(),
            ));
        };
        let prepared = prepare(&grant.policy, request)?;
        self.cpu.pause();
        let result = send_prepared(&grant, prepared).await;
        result.map(|response| redact_response(response, &grant.policy.secrets))
    }
}

struct Prepared {
    method: reqwest::Method,
    url: url::Url,
    headers: reqwest::header::HeaderMap,
    body: Option<Vec<u8>>,
    timeout: Duration,
}

fn prepare(policy: &HttpPolicy, request: Request) -> Result<Prepared, HttpError> {
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
    // Check the target on the URL as the plugin wrote it, so a denial can name it without
    // leaking a secret, then again after substitution so a secret cannot move the target.
    let (host, port) = target(&request.url)?;
    if !policy.allows(&host, port) {
        return Err(HttpError::Denied(format!(
            "host `{host}:{port}` is not approved for this plugin"
        )));
    }
    let url_text = String::from_utf8(substitute(request.url.as_bytes(), &policy.secrets)?)
        .map_err(|_| HttpError::Denied("url is not UTF-8 after secrets".into()))?;
    let url = url::Url::parse(&url_text)
        .map_err(|_| HttpError::Denied("url is invalid after secrets were written in".into()))?;
    if (
        url.host_str().unwrap_or_default().to_ascii_lowercase(),
        url.port_or_known_default().unwrap_or(0),
    ) != (host, port)
    {
        return Err(HttpError::Denied(
            "secrets may not appear in the host or port".into(),
        ));
    }
    let mut headers = reqwest::header::HeaderMap::new();
    for (name, value) in request.headers {
        let name = reqwest::header::HeaderName::from_bytes(name.as_bytes())
            .map_err(|_| HttpError::Denied(format!("invalid header name `{name}`")))?;
        if name == reqwest::header::HOST {
            return Err(HttpError::Denied(
                "the host header is set by the host".into(),
            ));
        }
        let value = substitute(value.as_bytes(), &policy.secrets)?;
        let value = reqwest::header::HeaderValue::from_bytes(&value)
            .map_err(|_| HttpError::Denied(format!("invalid value for header `{name}`")))?;
        headers.append(name, value);
    }
    let body = request
        .body
        .map(|body| substitute(&body, &policy.secrets))
        .transpose()?;
    let timeout = request.timeout_ms.map_or(policy.max_timeout, |ms| {
        Duration::from_millis(ms.into()).min(policy.max_timeout)
    });
    Ok(Prepared {
        method,
        url,
        headers,
        body,
        timeout,
    })
}

fn target(url: &str) -> Result<(String, u16), HttpError> {
    let parsed =
        url::Url::parse(url).map_err(|e| HttpError::Denied(format!("invalid url: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(HttpError::Denied(format!(
            "scheme `{}` is not allowed",
            parsed.scheme()
        )));
    }
    let host = parsed
        .host_str()
        .ok_or_else(|| HttpError::Denied("url has no host".into()))?;
    if host.contains("%7B%7B") || host.contains("{{") {
        return Err(HttpError::Denied(
            "secrets may not appear in the host or port".into(),
        ));
    }
    let port = parsed
        .port_or_known_default()
        .ok_or_else(|| HttpError::Denied("url has no port".into()))?;
    Ok((host.to_ascii_lowercase(), port))
}

/// Replace every `{{secret:NAME}}` in `input` with the secret's value.
fn substitute(input: &[u8], secrets: &BTreeMap<String, String>) -> Result<Vec<u8>, HttpError> {
    let mut output = Vec::with_capacity(input.len());
    let mut rest = input;
    while let Some(start) = find(rest, PLACEHOLDER_OPEN) {
        output.extend_from_slice(&rest[..start]);
        let after_open = &rest[start + PLACEHOLDER_OPEN.len()..];
        let Some(end) = find(after_open, PLACEHOLDER_CLOSE) else {
            return Err(HttpError::Denied(
                "unterminated `{{secret:` placeholder".into(),
            ));
        };
        let name = String::from_utf8_lossy(&after_open[..end]).into_owned();
        let value = secrets.get(&name).ok_or(HttpError::UnknownSecret(name))?;
        output.extend_from_slice(value.as_bytes());
        rest = &after_open[end + PLACEHOLDER_CLOSE.len()..];
    }
    output.extend_from_slice(rest);
    Ok(output)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// Replace every occurrence of every secret value in `bytes` with `[redacted]`.
fn redact(bytes: Vec<u8>, secrets: &BTreeMap<String, String>) -> Vec<u8> {
    secrets
        .values()
        .filter(|s| !s.is_empty())
        .fold(bytes, |bytes, secret| {
            let secret = secret.as_bytes();
            if find(&bytes, secret).is_none() {
                return bytes;
            }
            let mut output = Vec::with_capacity(bytes.len());
            let mut rest = bytes.as_slice();
            while let Some(at) = find(rest, secret) {
                output.extend_from_slice(&rest[..at]);
                output.extend_from_slice(REDACTED);
                rest = &rest[at + secret.len()..];
            }
            output.extend_from_slice(rest);
            output
        })
}

fn redact_text(text: String, secrets: &BTreeMap<String, String>) -> String {
    String::from_utf8_lossy(&redact(text.into_bytes(), secrets)).into_owned()
}

fn redact_response(response: Response, secrets: &BTreeMap<String, String>) -> Response {
    Response {
        status: response.status,
        headers: response
            .headers
            .into_iter()
            .map(|(name, value)| (name, redact_text(value, secrets)))
            .collect(),
        body: redact(response.body, secrets),
    }
}

async fn send_prepared(grant: &HttpGrant, prepared: Prepared) -> Result<Response, HttpError> {
    let secrets = &grant.policy.secrets;
    let mut builder = grant
        .client
        .request(prepared.method, prepared.url)
        .headers(prepared.headers)
        .timeout(prepared.timeout);
    if let Some(body) = prepared.body {
        builder = builder.body(body);
    }
    let transport_error = |e: reqwest::Error| {
        if e.is_timeout() {
            HttpError::Timeout
        } else {
            HttpError::Transport(redact_text(e.without_url().to_string(), secrets))
        }
    };
    let mut response = builder.send().await.map_err(transport_error)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    let limit = grant.policy.max_response_bytes;
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
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(declared: &[&str], approved: &[&str]) -> HttpPolicy {
        HttpPolicy {
            declared: declared
                .iter()
                .map(|p| HostPattern::parse(p).unwrap())
                .collect(),
            approved: approved
                .iter()
                .map(|p| HostPattern::parse(p).unwrap())
                .collect(),
            secrets: BTreeMap::from([("token".to_owned(), "s3cr3t-value".to_owned())]),
            max_response_bytes: 1024,
            max_timeout: Duration::from_secs(5),
        }
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
    fn a_host_must_be_both_declared_and_approved() {
        let p = policy(
            &["api.example.com"],
            &["api.example.com", "other.example.com"],
        );
        assert!(prepare(&p, request("https://api.example.com/v1")).is_ok());
        let denied = prepare(&p, request("https://other.example.com/v1"))
            .err()
            .unwrap();
        assert!(matches!(denied, HttpError::Denied(m) if m.contains("other.example.com:443")));
        let p = policy(&["*"], &["hooks.example.com"]);
        assert!(prepare(&p, request("https://hooks.example.com/x")).is_ok());
        assert!(prepare(&p, request("https://evil.example.net/x")).is_err());
    }

    #[test]
    fn wildcards_ports_and_schemes() {
        let p = policy(&["*"], &["*.example.com", "127.0.0.1:8080"]);
        assert!(prepare(&p, request("https://a.example.com/")).is_ok());
        assert!(prepare(&p, request("https://example.com/")).is_err());
        assert!(prepare(&p, request("https://badexample.com/")).is_err());
        assert!(prepare(&p, request("http://127.0.0.1:8080/")).is_ok());
        assert!(prepare(&p, request("http://127.0.0.1:8081/")).is_err());
        assert!(prepare(&p, request("file:///etc/passwd")).is_err());
        // The operator's `*` is never a blanket approval.
        assert!(prepare(&policy(&["*"], &["*"]), request("https://a.example.com/")).is_err());
    }

    #[test]
    fn secrets_are_written_in_and_cannot_move_the_target() {
        let p = policy(&["*"], &["api.example.com"]);
        let mut r = request("https://api.example.com/hook?key={{secret:token}}");
        r.headers = vec![("authorization".into(), "Bearer {{secret:token}}".into())];
        r.body = Some(b"{\"k\":\"{{secret:token}}\"}".to_vec());
        let prepared = prepare(&p, r).unwrap();
        assert_eq!(prepared.url.query(), Some("key=s3cr3t-value"));
        assert_eq!(prepared.headers["authorization"], "Bearer s3cr3t-value");
        assert_eq!(prepared.body.unwrap(), b"{\"k\":\"s3cr3t-value\"}");
        let moved = prepare(&p, request("https://{{secret:token}}.api.example.com/"));
        assert!(matches!(moved, Err(HttpError::Denied(_))));
        let unknown = prepare(&p, request("https://api.example.com/?k={{secret:nope}}"));
        assert!(matches!(unknown, Err(HttpError::UnknownSecret(n)) if n == "nope"));
    }

    #[test]
    fn responses_are_redacted() {
        let secrets = policy(&[], &[]).secrets;
        let response = Response {
            status: 200,
            headers: vec![("x-echo".into(), "s3cr3t-value".into())],
            body: b"you sent s3cr3t-value twice: s3cr3t-value".to_vec(),
        };
        let redacted = redact_response(response, &secrets);
        assert_eq!(redacted.headers[0].1, "[redacted]");
        assert_eq!(redacted.body, b"you sent [redacted] twice: [redacted]");
    }
}
