//! Email end to end: the email-smtp channel plugin, through the host's SMTP capability, to a real
//! SMTP server the test starts (aiosmtpd, tests/clients/smtp_sink.py), read back as a mail client
//! would read it (Python's email parser). The welcome journey of examples/ runs on it: the email
//! arrives with the name filled in and the unsubscribe headers, the test opens it by fetching the
//! pixel from the received HTML, and the contact takes the "opened" branch; another contact never
//! opens and gets the simplified email a day later on the virtual clock.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::delivery::{MINUTE, message_when, register, statuses, template};
use crate::server::Server;
use wayline::runtime::egress::TlsRoots;

/// The SMTP server of tests/clients/smtp_sink.py, on 127.0.0.1, writing what it receives to a
/// temporary directory.
pub(crate) struct SmtpSink {
    child: Child,
    dir: tempfile::TempDir,
    pub port: u16,
}

impl SmtpSink {
    pub(crate) fn start() -> SmtpSink {
        Self::start_with(&[])
    }

    /// The sink with `options` (`--starttls CERT KEY`, `--smtps CERT KEY`, `--login USER
    /// PASSWORD`; see tests/clients/smtp_sink.py).
    pub(crate) fn start_with(options: &[&std::ffi::OsStr]) -> SmtpSink {
        let dir = tempfile::tempdir().unwrap();
        let script =
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/clients/smtp_sink.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(dir.path())
            .args(options)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the SMTP sink (`cargo xtask test` installs aiosmtpd)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line
            .trim()
            .strip_prefix("port ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("the SMTP sink did not start: {line:?}"));
        SmtpSink { child, dir, port }
    }

    /// `smtp+insecure://127.0.0.1:PORT`: the relay as a channel config and approval name it.
    pub(crate) fn relay(&self) -> String {
        format!("smtp+insecure://127.0.0.1:{}", self.port)
    }

    /// Every email received so far, in order, as Python's email parser read it.
    pub(crate) fn received(&self) -> Vec<Json> {
        let mut files: Vec<_> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|path| serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap())
            .collect()
    }

    /// The emails received, once there are `n` (up to 20 s).
    pub(crate) async fn wait_for(&self, n: usize) -> Vec<Json> {
        for _ in 0..400 {
            let received = self.received();
            if received.len() >= n {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("expected {n} emails, got {:#?}", self.received());
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Bind channel `email` to email-smtp on `relay`, approved as `approved`.
pub(crate) async fn bind_smtp(server: &Server, relay: &str, approved: &str) {
    let (status, body) = server
        .put(
            "/v1/channels/email",
            json!({
                "plugin": "email-smtp",
                "config": {"relay": relay, "from": "Shop <news@shop.example>"},
                "recipient": "email",
                "approved_hosts": [approved],
            }),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

fn example(path: &str) -> Json {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(path);
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn to(email: &Json) -> &str {
    email["rcpt_tos"][0].as_str().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_welcome_journey_sends_real_email_and_follows_the_open() {
    let sink = SmtpSink::start();
    let server = Server::start(true).await;
    bind_smtp(&server, &sink.relay(), &sink.relay()).await;
    let (status, body) = server
        .put("/v1/journeys/welcome", example("journeys/welcome.json"))
        .await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act("/v1/journeys/welcome/publish").await;
    assert_eq!(status, 201, "{body}");

    for (id, name) in [("lin", "Lin"), ("mo", "Mo")] {
        register(
            &server,
            json!({"id": id, "attributes": {"email": format!("{id}@example.com"), "first_name": name},
                   "consents": {"email": "granted"}}),
            "registered",
            "free",
        )
        .await;
    }
    let received = sink.wait_for(2).await;
    let welcome = received
        .iter()
        .find(|e| to(e) == "lin@example.com")
        .unwrap();
    let headers = &welcome["headers"];
    assert_eq!(headers["Subject"], "Welcome, Lin!");
    assert_eq!(headers["From"], "Shop <news@shop.example>");
    assert_eq!(
        headers["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = headers["List-Unsubscribe"].as_str().unwrap();
    assert!(
        unsubscribe.starts_with(&format!("<{}/unsubscribe/", server.base)),
        "{unsubscribe}"
    );
    assert!(
        headers["Message-ID"]
            .as_str()
            .unwrap()
            .ends_with("@shop.example>")
    );
    let text = welcome["text"].as_str().unwrap();
    assert!(text.starts_with("Welcome, Lin!"), "{text}");
    let html = welcome["html"].as_str().unwrap();
    assert!(html.contains("<h1>Welcome, Lin!</h1>"), "{html}");

    // The relay's queue id is the provider id; the message is sent.
    let message = message_when(&server, "lin", "sent").await;
    assert_eq!(statuses(&message), ["queued", "sending", "sent"]);
    assert!(
        message["provider_id"].as_str().unwrap().starts_with("sink"),
        "{message:#}"
    );

    // Lin opens the email: the mail client fetches the pixel in the HTML it received.
    let pixel_at = html.find(&format!("{}/t/open/", server.base)).unwrap();
    let pixel = &html[pixel_at..pixel_at + html[pixel_at..].find('"').unwrap()];
    let response = reqwest::get(pixel).await.unwrap();
    assert_eq!(response.status(), 200);
    server.settle().await;
    let received = sink.wait_for(3).await;
    let guide = &received[2];
    assert_eq!(to(guide), "lin@example.com");
    assert_eq!(guide["headers"]["Subject"], "Your product guide, Lin");

    // Mo never opens: a day later on the virtual clock, the simplified email.
    server.advance(24 * 60 * MINUTE + MINUTE).await;
    let received = sink.wait_for(4).await;
    let simplified = &received[3];
    assert_eq!(to(simplified), "mo@example.com");
    assert_eq!(
        simplified["headers"]["Subject"],
        "Getting started takes two minutes"
    );
    assert_eq!(sink.received().len(), 4, "nobody got anything twice");
}

/// A transactional `note` template on `email` and the `notes` journey that sends it on
/// `noted`.
async fn notes_journey(server: &Server) {
    template(
        server,
        "note",
        json!({"channel": "email", "subject": "A note", "text": "Hello {{ first_name | default('you') }}",
               "transactional": true}),
    )
    .await;
    crate::delivery::journey(server, "notes", "noted", "email", "note").await;
}

/// A contact `id` at `<id>@example.com` who consented to email.
fn contact(id: &str) -> Json {
    json!({"id": id, "attributes": {"email": format!("{id}@example.com")},
           "consents": {"email": "granted"}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_refusals_bounce_or_retry_and_an_unapproved_relay_is_never_reached() {
    let sink = SmtpSink::start();
    let server = Server::start(true).await;
    bind_smtp(&server, &sink.relay(), &sink.relay()).await;
    notes_journey(&server).await;

    // A refused recipient bounces, and the address is suppressed.
    register(&server, contact("bounce-1"), "noted", "free").await;
    let bounced = message_when(&server, "bounce-1", "bounced").await;
    let detail = crate::delivery::last_detail(&bounced);
    assert!(
        detail.contains("(550)") && detail.contains("5.1.1"),
        "{bounced:#}"
    );

    // A transient refusal is retried, and the email arrives once.
    register(&server, contact("later-1"), "noted", "free").await;
    message_when(&server, "later-1", "deferred").await;
    server.advance(10 * MINUTE).await;
    let sent = message_when(&server, "later-1", "sent").await;
    assert_eq!(
        statuses(&sent),
        ["queued", "sending", "deferred", "sending", "sent"]
    );
    let received = sink.received();
    assert_eq!(received.len(), 1, "{received:#?}");
    assert_eq!(to(&received[0]), "later-1@example.com");

    // The relay in the config is not the one approved: denied, and nothing is sent.
    bind_smtp(
        &server,
        &sink.relay(),
        &format!("smtp+insecure://127.0.0.1:{}", sink.port + 1),
    )
    .await;
    register(&server, contact("ann"), "noted", "free").await;
    let failed = message_when(&server, "ann", "failed").await;
    assert!(
        crate::delivery::last_detail(&failed).contains("is not approved"),
        "{failed:#}"
    );
    // A name that resolves to loopback is not the loopback address approved by itself.
    let by_name = format!("smtp+insecure://localhost:{}", sink.port);
    bind_smtp(&server, &by_name, &by_name).await;
    register(&server, contact("bo"), "noted", "free").await;
    let failed = message_when(&server, "bo", "failed").await;
    assert!(
        crate::delivery::last_detail(&failed).contains("not a public address"),
        "{failed:#}"
    );
    assert_eq!(sink.received().len(), 1, "nothing more reached the relay");
}

/// A CA made for this test and a relay certificate it signed for 127.0.0.1, as PEM files in
/// `dir`: `ca.pem`, `relay.pem`, `relay-key.pem`.
fn test_ca(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("{name} test CA"));
    let ca_key = KeyPair::generate().unwrap();
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let relay = CertificateParams::new(vec!["127.0.0.1".to_owned()]).unwrap();
    let relay_key = KeyPair::generate().unwrap();
    let relay_cert = relay.signed_by(&relay_key, &issuer).unwrap();
    let dir = dir.join(name);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("ca.pem"), ca_cert.pem()).unwrap();
    std::fs::write(dir.join("relay.pem"), relay_cert.pem()).unwrap();
    std::fs::write(dir.join("relay-key.pem"), relay_key.serialize_pem()).unwrap();
    dir
}

/// Bind channel `email` to email-smtp on `relay` with a login whose password is a secret bound
/// to the relay.
async fn bind_smtp_login(server: &Server, relay: &str, password: &str) {
    let (status, body) = server
        .put(
            "/v1/channels/email",
            json!({
                "plugin": "email-smtp",
                "config": {"relay": relay, "from": "Shop <news@shop.example>",
                           "username": "shop", "password": "{{secret:smtp_password}}"},
                "recipient": "email",
                "approved_hosts": [relay],
                "secrets": {"smtp_password": {"value": password, "hosts": [relay]}},
            }),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

/// STARTTLS and SMTPS for real: relays that take mail only over TLS and after a login get it,
/// with the certificate checked against the operator's CA (`--tls-roots`); a relay whose
/// certificate no trusted CA signed gets no password and no email.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_over_starttls_and_smtps_get_mail_only_with_a_verified_certificate_and_the_login() {
    let certs = tempfile::tempdir().unwrap();
    let trusted = test_ca(certs.path(), "trusted");
    let stranger = test_ca(certs.path(), "stranger");
    let tls = |mode: &str, dir: &std::path::Path| {
        let (cert, key) = (dir.join("relay.pem"), dir.join("relay-key.pem"));
        SmtpSink::start_with(&[
            mode.as_ref(),
            cert.as_os_str(),
            key.as_os_str(),
            "--login".as_ref(),
            "shop".as_ref(),
            "pw-4711".as_ref(),
        ])
    };
    let starttls = tls("--starttls", &trusted);
    let smtps = tls("--smtps", &trusted);
    let impostor = tls("--starttls", &stranger);
    let roots = std::fs::read(trusted.join("ca.pem")).unwrap();
    let server = Server::start_trusting(TlsRoots::from_pem(&roots).unwrap()).await;
    notes_journey(&server).await;

    for (sink, scheme, who) in [(&starttls, "smtp", "ann"), (&smtps, "smtps", "bo")] {
        bind_smtp_login(
            &server,
            &format!("{scheme}://127.0.0.1:{}", sink.port),
            "pw-4711",
        )
        .await;
        register(&server, contact(who), "noted", "free").await;
        let sent = message_when(&server, who, "sent").await;
        let received = sink.wait_for(1).await;
        assert_eq!(received.len(), 1, "{scheme}: {received:#?}");
        assert_eq!(to(&received[0]), format!("{who}@example.com"), "{sent:#}");
        assert_eq!(
            received[0]["tls"], true,
            "{scheme}: the email came over TLS"
        );
        assert_eq!(received[0]["login"], "shop", "{scheme}: after the login");
    }

    // A wrong password: the relay refuses the login, and nothing is sent.
    let relay = format!("smtp://127.0.0.1:{}", starttls.port);
    bind_smtp_login(&server, &relay, "not-the-password").await;
    register(&server, contact("cy"), "noted", "free").await;
    let refused = message_when(&server, "cy", "failed").await;
    assert!(
        crate::delivery::last_detail(&refused).contains("refused the login"),
        "{refused:#}"
    );

    // A relay whose certificate no trusted CA signed: the TLS handshake fails before the
    // login, so it learns no password, and no email is sent to it.
    let relay = format!("smtp://127.0.0.1:{}", impostor.port);
    bind_smtp_login(&server, &relay, "pw-4711").await;
    register(&server, contact("di"), "noted", "free").await;
    let deferred = message_when(&server, "di", "deferred").await;
    let detail = crate::delivery::last_detail(&deferred).to_lowercase();
    assert!(detail.contains("certificate"), "{deferred:#}");
    assert!(impostor.received().is_empty());
    assert_eq!(
        starttls.received().len(),
        1,
        "nothing more reached the relays"
    );
    assert_eq!(smtps.received().len(), 1);
}
