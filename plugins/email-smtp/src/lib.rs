//! Delivers email through an SMTP relay, with the host's SMTP capability: the host checks the
//! relay against the channel's approvals, builds the MIME message (text and HTML, and the
//! message's own headers: for a marketing message the delivery worker puts `List-Unsubscribe`
//! and `List-Unsubscribe-Post` there, and this plugin passes them on), writes secrets into the
//! credentials and keeps pooled connections. This plugin maps a message to an email and the relay's answer to a
//! delivery outcome.
//!
//! ```json
//! {"relay": "smtps://smtp.example.com", "username": "{{secret:smtp_user}}",
//!  "password": "{{secret:smtp_password}}", "from": "Shop <news@shop.example>"}
//! ```
//! - `relay` (required): `smtps://host[:port]` (TLS, 465 by default), `smtp://host[:port]`
//!   (STARTTLS required, 587 by default) or `smtp+insecure://host:port` (no TLS: a relay on
//!   the operator's own network, never with credentials). The operator approves it for the
//!   channel like any host.
//! - `username`, `password`: both or neither; normally `{{secret:NAME}}` placeholders.
//! - `from` (required), `reply_to`: `address` or `Name <address>`.
//!
//! A message needs a subject and a text or HTML body. The relay's 250 delivers (the provider
//! id is its queue id when it names one, else its reply); a refused recipient is an invalid
//! recipient; other permanent refusals and host denials are permanent; transient replies,
//! timeouts and transport errors are retried. An SMTP relay takes no idempotency key: a crash
//! between the relay's 250 and the host recording it sends the email once more.

use serde::{Deserialize, Serialize};
use wayline_rules::{Check, Problems, ROOT};
use wayline_sdk::channel::*;
use wayline_sdk::host::smtp::{Email, Relay, SmtpError, send};

/// The channel's config.
#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    relay: String,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
    #[serde(default)]
    from: String,
    #[serde(default)]
    reply_to: Option<String>,
}

const SCHEMES: [&str; 3] = ["smtps://", "smtp://", "smtp+insecure://"];

/// A plausible mailbox: `address` or `Name <address>` with one `@` and no line breaks. The
/// host parses it properly when it builds the message.
fn is_mailbox(text: &str) -> bool {
    let address = match (text.rfind('<'), text.strip_suffix('>')) {
        (Some(open), Some(inner)) => &inner[open + 1..],
        _ => text,
    };
    let mut parts = address.split('@');
    let (local, domain) = (parts.next(), parts.next());
    parts.next().is_none()
        && local.is_some_and(|l| !l.is_empty())
        && domain.is_some_and(|d| d.contains('.') && !d.starts_with('.'))
        && !text.contains(['\r', '\n'])
}

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        let relay = self.relay.to_ascii_lowercase();
        match SCHEMES.iter().find(|scheme| relay.starts_with(**scheme)) {
            Some(scheme) => {
                let rest = &relay[scheme.len()..];
                let rest = rest.strip_suffix('/').unwrap_or(rest);
                if rest.is_empty() || rest.contains(['/', '?', '#', '@']) {
                    problems.add(
                        &ROOT.field("relay"),
                        "must be scheme://host[:port], without a path or credentials",
                    );
                }
            }
            None => problems.add(
                &ROOT.field("relay"),
                "must be smtps://host, smtp://host (STARTTLS) or smtp+insecure://host:port",
            ),
        }
        if self.username.is_some() != self.password.is_some() {
            problems.add(
                &ROOT.field("password"),
                "give both username and password, or neither",
            );
        }
        if self.username.is_some() && relay.starts_with("smtp+insecure://") {
            problems.add(
                &ROOT.field("username"),
                "credentials are never sent without TLS",
            );
        }
        if !is_mailbox(&self.from) {
            problems.add(&ROOT.field("from"), "must be `address` or `Name <address>`");
        }
        if self.reply_to.as_deref().is_some_and(|r| !is_mailbox(r)) {
            problems.add(
                &ROOT.field("reply_to"),
                "must be `address` or `Name <address>`",
            );
        }
    }
}

impl PluginConfig for Config {
    fn parse(json: &str) -> Result<Self, Vec<ConfigProblem>> {
        wayline_rules::parse(json)
    }
}

impl Config {
    /// The relay and the email for `message`, or why it cannot be an email.
    pub fn email(&self, message: Message) -> Result<(Relay, Email), DeliveryFailure> {
        let Some(subject) = message.subject.filter(|s| !s.is_empty()) else {
            return Err(permanent(
                "an email needs a subject; give the template one".into(),
            ));
        };
        if message.text.is_none() && message.html.is_none() {
            return Err(permanent("an email needs a text or an HTML body".into()));
        }
        let mut headers = message.headers;
        if message.test {
            headers.push(("X-Wayline-Test".into(), "true".into()));
        }
        let relay = Relay {
            url: self.relay.clone(),
            username: self.username.clone(),
            password: self.password.clone(),
        };
        let email = Email {
            from: self.from.clone(),
            reply_to: self.reply_to.clone(),
            to: message.recipient,
            subject,
            text: message.text,
            html: message.html,
            headers,
            message_id: message.id,
        };
        Ok((relay, email))
    }
}

fn permanent(message: String) -> DeliveryFailure {
    DeliveryFailure {
        kind: FailureKind::Permanent,
        message,
        retry_after_ms: None,
    }
}

/// The provider id in a relay's reply: the queue id of `… queued as 4F2A…`, else the reply.
pub fn provider_id(reply: &str) -> String {
    let lower = reply.to_ascii_lowercase();
    lower
        .find("queued as ")
        .map(|at| &reply[at + "queued as ".len()..])
        .and_then(|rest| rest.split_whitespace().next())
        .map_or_else(|| reply.trim().to_owned(), str::to_owned)
}

/// What the host's answer means for this message.
pub fn outcome(result: Result<String, SmtpError>) -> Result<Delivery, DeliveryFailure> {
    let (kind, message) = match result {
        Ok(reply) => {
            return Ok(Delivery {
                provider_id: provider_id(&reply),
            });
        }
        Err(SmtpError::RejectedRecipient(reply)) => (
            FailureKind::InvalidRecipient,
            format!("the relay refused the recipient: {reply}"),
        ),
        Err(SmtpError::Permanent(reply)) => (
            FailureKind::Permanent,
            format!("the relay refused the message: {reply}"),
        ),
        Err(SmtpError::Denied(why)) => {
            (FailureKind::Permanent, format!("denied by the host: {why}"))
        }
        Err(SmtpError::UnknownSecret(name)) => (
            FailureKind::Permanent,
            format!("secret `{name}` is not set for this channel"),
        ),
        Err(SmtpError::Transient(reply)) => (
            FailureKind::Retryable,
            format!("the relay asked to try later: {reply}"),
        ),
        Err(SmtpError::Timeout) => (FailureKind::Retryable, "the relay timed out".into()),
        Err(SmtpError::Transport(why)) => {
            (FailureKind::Retryable, format!("transport error: {why}"))
        }
    };
    Err(DeliveryFailure {
        kind,
        message,
        retry_after_ms: None,
    })
}

/// The plugin; its exports exist in the wasm build.
pub struct EmailSmtp;

impl Channel for EmailSmtp {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Sends email through an SMTP relay (STARTTLS or TLS, with login) by the host's pooled SMTP capability",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        // The relay is in the config; the operator's approval decides.
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn deliver(config: Config, message: Message) -> Result<Delivery, DeliveryFailure> {
        let (relay, email) = config.email(message)?;
        outcome(send(&relay, &email))
    }
}

export!(EmailSmtp);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "email-smtp config",
  "type": "object",
  "required": ["relay", "from"],
  "properties": {
    "relay": {"type": "string", "pattern": "^(smtps|smtp|smtp\\+insecure)://[^/?#@]+/?$", "description": "The relay; approve it for the channel"},
    "username": {"type": "string", "description": "Usually {{secret:NAME}}"},
    "password": {"type": "string", "description": "Usually {{secret:NAME}}"},
    "from": {"type": "string", "description": "address or Name <address>"},
    "reply_to": {"type": "string"}
  },
  "additionalProperties": false
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn paths(config: &str) -> Vec<String> {
        match Config::parse(config) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect(),
        }
    }

    fn message() -> Message {
        Message {
            id: "e1:0".into(),
            contact_id: "c1".into(),
            recipient: "lin@example.com".into(),
            class: MessageClass::Marketing,
            test: false,
            subject: Some("Welcome, Lin".into()),
            text: Some("Hello Lin".into()),
            html: Some("<p>Hello Lin</p>".into()),
            headers: vec![("List-Unsubscribe".into(), "<https://t.example/u/1>".into())],
            metadata: vec![],
        }
    }

    #[test]
    fn a_message_becomes_an_email_with_the_hosts_headers() {
        let config = Config::parse(
            r#"{"relay": "smtps://smtp.example.com", "username": "{{secret:u}}",
                "password": "{{secret:p}}", "from": "Shop <news@shop.example>"}"#,
        )
        .unwrap();
        let (relay, email) = config.email(message()).unwrap();
        assert_eq!(relay.url, "smtps://smtp.example.com");
        assert_eq!(relay.password.as_deref(), Some("{{secret:p}}"));
        assert_eq!(email.to, "lin@example.com");
        assert_eq!(email.message_id, "e1:0");
        assert_eq!(email.headers[0].0, "List-Unsubscribe");
        let mut test = message();
        test.test = true;
        let (_, email) = config.email(test).unwrap();
        assert!(
            email
                .headers
                .contains(&("X-Wayline-Test".into(), "true".into()))
        );
        let mut untitled = message();
        untitled.subject = None;
        assert_eq!(
            config.email(untitled).unwrap_err().kind,
            FailureKind::Permanent
        );
    }

    #[test]
    fn relay_answers_are_classified() {
        assert_eq!(
            outcome(Ok("250 2.0.0 Ok: queued as 4F2A91".into()))
                .unwrap()
                .provider_id,
            "4F2A91"
        );
        assert_eq!(outcome(Ok("250 OK".into())).unwrap().provider_id, "250 OK");
        let kind = |e: SmtpError| outcome(Err(e)).unwrap_err().kind;
        assert_eq!(
            kind(SmtpError::RejectedRecipient("550 5.1.1".into())),
            FailureKind::InvalidRecipient
        );
        assert_eq!(
            kind(SmtpError::Permanent("554 5.7.1 spam".into())),
            FailureKind::Permanent
        );
        assert_eq!(
            kind(SmtpError::Transient("451 later".into())),
            FailureKind::Retryable
        );
        assert_eq!(kind(SmtpError::Timeout), FailureKind::Retryable);
        assert_eq!(kind(SmtpError::Denied("no".into())), FailureKind::Permanent);
    }

    #[test]
    fn bad_configs_name_each_problem() {
        assert_eq!(
            paths(r#"{"relay": "https://smtp.example.com", "from": "a@b.example"}"#),
            ["relay"]
        );
        assert_eq!(
            paths(r#"{"relay": "smtp://u:p@smtp.example.com", "from": "a@b.example"}"#),
            ["relay"]
        );
        assert_eq!(
            paths(r#"{"relay": "smtps://smtp.example.com", "from": "nobody"}"#),
            ["from"]
        );
        assert_eq!(
            paths(
                r#"{"relay": "smtp+insecure://10.0.0.5:25", "from": "a@b.example", "username": "u", "password": "p"}"#
            ),
            ["username"]
        );
        assert_eq!(
            paths(
                r#"{"relay": "smtps://smtp.example.com", "from": "a@b.example", "username": "u"}"#
            ),
            ["password"]
        );
        assert!(
            paths(
                r#"{"relay": "smtp+insecure://127.0.0.1:2525", "from": "Shop <news@shop.example>"}"#
            )
            .is_empty()
        );
    }
}
