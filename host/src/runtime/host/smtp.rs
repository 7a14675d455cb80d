//! `wayline:plugin/smtp` (0.2.0): email through an approved relay, on a plugin's behalf.
//!
//! The plugin hands over the parts of an email; the host checks the relay against the
//! channel's approvals, writes secrets into the credentials only for relays they are bound to,
//! builds the MIME message itself (lettre) so that no header can be smuggled in through a
//! value, and submits it over a pooled connection (see `egress::relay`). The relay's reply is
//! classified the way a delivery needs it: a refused recipient, a permanent refusal, or a
//! transient one worth a retry.

use std::time::{Duration, SystemTime};

use lettre::message::header::{HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};

use super::HostState;
use crate::runtime::bindings::v2::smtp::{self, Email, Relay, SmtpError};
use crate::runtime::egress::relay::{self, Login, RelayError, SubmitError};
use crate::runtime::egress::{Egress, Scheme, SecretError, Secrets, Target};

/// Largest body (text and HTML together) the host will build into a message.
pub const MAX_BODY_BYTES: usize = 8 << 20;
/// Most extra headers one email may carry, and the longest value (RFC 5322's line limit).
const MAX_HEADERS: usize = 32;
const MAX_HEADER_VALUE: usize = 998;
/// Headers the host writes itself and a plugin may not.
const HOST_HEADERS: [&str; 14] = [
    "from",
    "sender",
    "to",
    "cc",
    "bcc",
    "reply-to",
    "subject",
    "date",
    "message-id",
    "mime-version",
    "content-type",
    "content-transfer-encoding",
    "return-path",
    "received",
];

impl smtp::Host for HostState {
    async fn send(&mut self, relay: Relay, email: Email) -> Result<String, SmtpError> {
        let egress = self.take_send().map_err(SmtpError::Denied)?;
        let target = relay_target(&egress, &relay.url)?;
        let login = login(&egress.secrets, &target, relay.username, relay.password)?;
        let logs_in = login.is_some();
        let message = mime(email, self.clock.now())?;
        self.cpu.pause();
        let started = std::time::Instant::now();
        let submitted = async {
            let transport = egress.relay(&target, login).await.map_err(|e| match e {
                RelayError::Denied(why) => SmtpError::Denied(why),
                RelayError::Transport(why) => SmtpError::Transport(egress.secrets.redact_text(why)),
            })?;
            relay::submit(&transport, message)
                .await
                .map_err(|error| match error {
                    SubmitError::Smtp(error) => classify(&error, &egress.secrets, logs_in),
                    SubmitError::Auth { transient } => refused_login(transient, None),
                    SubmitError::Connect(why) => {
                        SmtpError::Transport(egress.secrets.redact_text(why))
                    }
                    SubmitError::Timeout => SmtpError::Timeout,
                })
        }
        .await;
        self.waited += started.elapsed();
        submitted
    }
}

impl From<SecretError> for SmtpError {
    fn from(error: SecretError) -> Self {
        match error {
            SecretError::Unknown(name) => SmtpError::UnknownSecret(name),
            SecretError::Denied(why) => SmtpError::Denied(why),
        }
    }
}

/// The relay `url` names, if it is an SMTP target this channel may submit to.
fn relay_target(egress: &Egress, url: &str) -> Result<Target, SmtpError> {
    if url.contains("{{") {
        return Err(SmtpError::Denied(
            "secrets go in the username and password, not the relay url".into(),
        ));
    }
    let parsed =
        url::Url::parse(url).map_err(|e| SmtpError::Denied(format!("invalid relay url: {e}")))?;
    let target = Target::of(&parsed).map_err(SmtpError::Denied)?;
    if target.scheme.is_http() {
        return Err(SmtpError::Denied(format!(
            "{target} is not an SMTP relay: use smtp://, smtps:// or smtp+insecure://"
        )));
    }
    let bare = matches!(parsed.path(), "" | "/")
        && parsed.query().is_none()
        && parsed.fragment().is_none()
        && parsed.username().is_empty()
        && parsed.password().is_none();
    if !bare {
        return Err(SmtpError::Denied(
            "a relay url is scheme://host[:port]; credentials go in username and password".into(),
        ));
    }
    if !egress.allows(&target) {
        return Err(SmtpError::Denied(format!(
            "{target} is not approved for this channel"
        )));
    }
    Ok(target)
}

fn login(
    secrets: &Secrets,
    target: &Target,
    username: Option<String>,
    password: Option<String>,
) -> Result<Option<Login>, SmtpError> {
    let (username, password) = match (username, password) {
        (None, None) => return Ok(None),
        (Some(username), Some(password)) => (username, password),
        _ => {
            return Err(SmtpError::Denied(
                "give both a username and a password, or neither".into(),
            ));
        }
    };
    if target.scheme == Scheme::SmtpInsecure {
        return Err(SmtpError::Denied(format!(
            "credentials are never sent without TLS; use smtp:// (STARTTLS) or smtps:// for {target}"
        )));
    }
    let written = |text: String| -> Result<String, SmtpError> {
        if text.contains("{{") && !is_one_placeholder(&text) {
            return Err(SmtpError::Denied(
                "a username or password is written as it is, or is one `{{secret:NAME}}`".into(),
            ));
        }
        let bytes = secrets.substitute(text.as_bytes(), target)?;
        String::from_utf8(bytes).map_err(|_| SmtpError::Denied("credentials are not UTF-8".into()))
    };
    Ok(Some(Login {
        username: written(username)?,
        password: written(password)?,
    }))
}

/// Whether `text` is exactly one secret placeholder: credentials are a secret or a literal,
/// never a secret spliced into text of the plugin's choosing.
fn is_one_placeholder(text: &str) -> bool {
    text.strip_prefix("{{secret:")
        .and_then(|rest| rest.strip_suffix("}}"))
        .is_some_and(|name| !name.is_empty() && !name.contains(['{', '}']))
}

/// A relay's refusal of the login, in fixed words with its code only.
fn refused_login(transient: bool, code: Option<String>) -> SmtpError {
    let code = code.map(|c| format!(" ({c})")).unwrap_or_default();
    let text = format!("the relay refused the login{code}");
    if transient {
        SmtpError::Transient(text)
    } else {
        SmtpError::Permanent(text)
    }
}

/// The MIME message for `email`, dated by the host's clock.
fn mime(email: Email, now_ms: i64) -> Result<lettre::Message, SmtpError> {
    let denied = |why: String| SmtpError::Denied(why);
    let mailbox = |field: &str, text: &str| -> Result<Mailbox, SmtpError> {
        text.parse::<Mailbox>()
            .map_err(|e| denied(format!("`{field}` is not an email address ({e})")))
    };
    let from = mailbox("from", &email.from)?;
    let to = mailbox("to", &email.to)?;
    if !(1..=512).contains(&email.message_id.len()) {
        return Err(denied("`message-id` must be 1 to 512 bytes".into()));
    }
    if has_line_break(&email.subject) {
        return Err(denied("the subject cannot contain line breaks".into()));
    }
    let body_bytes =
        email.text.as_ref().map_or(0, String::len) + email.html.as_ref().map_or(0, String::len);
    if body_bytes > MAX_BODY_BYTES {
        return Err(denied(format!(
            "the body is {body_bytes} bytes; at most {MAX_BODY_BYTES} are sent"
        )));
    }
    let date = SystemTime::UNIX_EPOCH + Duration::from_millis(now_ms.max(0) as u64);
    let mut builder = lettre::Message::builder()
        .message_id(Some(message_id(&email.message_id, from.email.domain())))
        .date(date)
        .from(from)
        .to(to)
        .subject(email.subject);
    if let Some(reply_to) = &email.reply_to {
        builder = builder.reply_to(mailbox("reply-to", reply_to)?);
    }
    if email.headers.len() > MAX_HEADERS {
        return Err(denied(format!("at most {MAX_HEADERS} extra headers")));
    }
    for (name, value) in email.headers {
        if HOST_HEADERS.contains(&name.to_ascii_lowercase().as_str())
            || name.to_ascii_lowercase().starts_with("content-")
        {
            return Err(denied(format!("the host sets `{name}` itself")));
        }
        // RFC 5322 field names: printable ASCII but `:`. lettre checks less, and writes the
        // name as it is, so a line break in it would start a header of the plugin's choosing.
        let ftext = !name.is_empty() && name.bytes().all(|b| (33..=126).contains(&b) && b != b':');
        let header_name = HeaderName::new_from_ascii(name.clone())
            .ok()
            .filter(|_| ftext)
            .ok_or_else(|| denied(format!("`{}` is not a header name", name.escape_debug())))?;
        if has_line_break(&value) || value.len() > MAX_HEADER_VALUE {
            return Err(denied(format!(
                "the value of `{name}` must be one line of at most {MAX_HEADER_VALUE} bytes"
            )));
        }
        builder = builder.raw_header(HeaderValue::new(header_name, value));
    }
    let built = match (email.text, email.html) {
        (Some(text), Some(html)) => {
            builder.multipart(MultiPart::alternative_plain_html(text, html))
        }
        (Some(text), None) => builder.singlepart(SinglePart::plain(text)),
        (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
        (None, None) => return Err(denied("an email needs a text or an HTML body".into())),
    };
    built.map_err(|e| denied(format!("the email cannot be built: {e}")))
}

/// The `Message-ID` of the email for Wayline message `id`: the same for every attempt, and
/// made of characters a Message-ID may hold whatever the id contains.
pub fn message_id(id: &str, domain: &str) -> String {
    let digest = crate::runtime::sha256_hex(id.as_bytes());
    format!("<{}.wayline@{domain}>", &digest[..32])
}

fn has_line_break(text: &str) -> bool {
    text.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0))
}

/// A relay's refusal as a delivery needs it. Enhanced status codes (RFC 3463) decide where the
/// relay gave one: `5.1.x` is the address, anything else permanent is the message or the
/// account. Without one, 550, 551 and 553 name the mailbox.
fn classify(error: &lettre::transport::smtp::Error, secrets: &Secrets, logs_in: bool) -> SmtpError {
    if error.is_timeout() {
        return SmtpError::Timeout;
    }
    let code = error.status().map(|code| code.to_string());
    // Replies to AUTH (lettre's pool logs in on its own, so they arrive here): 454, 530, 534,
    // 535 and 538 are about the login, and their text may carry it. Without a login they
    // answer something else (STARTTLS, MAIL) and are told as they are.
    if let Some(auth) = code
        .as_deref()
        .filter(|c| logs_in && matches!(*c, "454" | "530" | "534" | "535" | "538"))
    {
        return refused_login(auth == "454", Some(auth.to_owned()));
    }
    let text = secrets.redact_text(error.to_string());
    if error.is_transient() {
        return SmtpError::Transient(text);
    }
    if !error.is_permanent() {
        return SmtpError::Transport(text);
    }
    let enhanced = text
        .split(|c: char| c.is_whitespace() || c == ',')
        .find(|word| {
            let mut parts = word.split('.');
            parts.next() == Some("5")
                && parts.next().is_some_and(|p| p.parse::<u8>().is_ok())
                && parts.next().is_some_and(|p| p.parse::<u16>().is_ok())
        });
    let recipient = match enhanced {
        Some(enhanced) => enhanced.starts_with("5.1."),
        None => matches!(code.as_deref(), Some("550" | "551" | "553")),
    };
    if recipient {
        SmtpError::RejectedRecipient(text)
    } else {
        SmtpError::Permanent(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email() -> Email {
        Email {
            from: "Wayline <news@shop.example>".into(),
            reply_to: None,
            to: "lin@example.com".into(),
            subject: "Welcome".into(),
            text: Some("Hello Lin".into()),
            html: Some("<p>Hello Lin</p>".into()),
            headers: vec![
                (
                    "List-Unsubscribe".into(),
                    "<https://t.example/unsubscribe?m=1>".into(),
                ),
                (
                    "List-Unsubscribe-Post".into(),
                    "List-Unsubscribe=One-Click".into(),
                ),
            ],
            message_id: "msg-0001".into(),
        }
    }

    #[test]
    fn the_host_builds_the_message_with_its_headers_and_both_bodies() {
        let message = mime(email(), 1_764_547_200_000).unwrap();
        let text = String::from_utf8(message.formatted()).unwrap();
        let id = message_id("msg-0001", "shop.example");
        assert!(text.contains(&format!("Message-ID: {id}")), "{text}");
        assert!(text.contains("List-Unsubscribe: <https://t.example/unsubscribe?m=1>"));
        assert!(text.contains("List-Unsubscribe-Post: List-Unsubscribe=One-Click"));
        assert!(text.contains("multipart/alternative"));
        assert!(text.contains("Date: Mon, 01 Dec 2025"), "{text}");
    }

    #[test]
    fn credentials_are_a_literal_or_one_whole_secret() {
        use crate::runtime::egress::{Approval, Secret, SecretValue};
        let secrets = Secrets(std::collections::BTreeMap::from([(
            "relay_password".to_owned(),
            Secret {
                value: SecretValue("pa55-w0rd".into()),
                bound_to: vec![Approval::parse("smtp://smtp.example.com:587").unwrap()],
                verifies_webhooks: false,
            },
        )]));
        let target = Target::of(&url::Url::parse("smtp://smtp.example.com:587").unwrap()).unwrap();
        let login = |user: &str, password: &str| {
            login(&secrets, &target, Some(user.into()), Some(password.into()))
        };
        let written = login("apikey", "{{secret:relay_password}}")
            .unwrap()
            .unwrap();
        assert_eq!(
            (written.username.as_str(), written.password.as_str()),
            ("apikey", "pa55-w0rd")
        );
        // Spliced into text of the plugin's choosing, each variant would be a pool of its own
        // and the relay's answer an oracle on the secret.
        for (user, password) in [
            ("apikey", "x{{secret:relay_password}}"),
            ("{{secret:relay_password}}1", "{{secret:relay_password}}"),
            (
                "apikey",
                "{{secret:relay_password}}{{secret:relay_password}}",
            ),
        ] {
            assert!(
                matches!(login(user, password), Err(SmtpError::Denied(_))),
                "{user} / {password}"
            );
        }
    }

    #[test]
    fn a_refused_login_is_told_in_fixed_words() {
        let SmtpError::Permanent(text) = refused_login(false, Some("535".into())) else {
            panic!("a 535 is permanent");
        };
        assert_eq!(text, "the relay refused the login (535)");
        assert!(matches!(refused_login(true, None), SmtpError::Transient(_)));
    }

    #[test]
    fn no_header_can_be_smuggled_or_overridden() {
        let mut smuggled = email();
        smuggled.headers = vec![("X-Note".into(), "ok\r\nBcc: all@example.com".into())];
        assert!(matches!(mime(smuggled, 0), Err(SmtpError::Denied(_))));
        for name in [
            "X-A\r\nFrom",
            "X\r\n\r\n<b>body</b>",
            "X\nBcc",
            "X A",
            "X\u{7f}",
        ] {
            let mut named = email();
            named.headers = vec![(name.into(), "x".into())];
            assert!(
                matches!(mime(named, 0), Err(SmtpError::Denied(_))),
                "{name:?}"
            );
        }
        let mut subject = email();
        subject.subject = "hi\r\nBcc: all@example.com".into();
        assert!(matches!(mime(subject, 0), Err(SmtpError::Denied(_))));
        for name in [
            "Bcc",
            "content-type",
            "Message-ID",
            "From",
            "Content-Disposition",
        ] {
            let mut overriding = email();
            overriding.headers = vec![(name.into(), "x".into())];
            assert!(
                matches!(mime(overriding, 0), Err(SmtpError::Denied(_))),
                "{name}"
            );
        }
        let mut bad_to = email();
        bad_to.to = "lin@example.com, all@example.com".into();
        assert!(matches!(mime(bad_to, 0), Err(SmtpError::Denied(_))));
        let mut odd_id = email();
        odd_id.message_id = "enrollment:lin@example.com>\r\n:0".into();
        let text = String::from_utf8(mime(odd_id, 0).unwrap().formatted()).unwrap();
        assert!(!text.contains("lin@example.com>"), "{text}");
    }
}
