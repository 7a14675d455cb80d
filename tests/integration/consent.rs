//! What comes back and what holds a message: opens and clicks as events a journey branches on,
//! the one-click unsubscribe of RFC 8058, frequency caps and the contact's own send hours.

use std::time::Duration;

use serde_json::{Value as Json, json};

use crate::delivery::{
    MINUTE, bind, happen, journey, last_detail, message_when, provider, register, template,
};
use crate::server::Server;

async fn wait_for(done: impl Fn() -> bool) {
    for _ in 0..400 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("it did not happen within 20 s");
}

/// The attribute `name="…"` of the first tag whose value starts with `prefix`.
fn url_in(html: &str, prefix: &str) -> String {
    let start = html
        .find(prefix)
        .unwrap_or_else(|| panic!("no {prefix} in {html}"));
    html[start..].split('"').next().unwrap().to_owned()
}

fn plain() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn tags(server: &Server, id: &str) -> Vec<String> {
    let (_, contact) = server.get(&format!("/v1/contacts/{id}")).await;
    contact["tags"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opens_and_clicks_come_back_as_events_unsubscribing_takes_one_post_and_links_cannot_be_forged()
 {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(&server, "email", &base, "/ok", json!({})).await;
    template(
        &server,
        "welcome",
        json!({"channel": "email", "subject": "Welcome",
               "html": "<html><body><p>Hi {{ first_name | default(\"there\") }}</p><a href=\"https://shop.example.com/spring?x=1&y=2\">Shop</a></body></html>",
               "text": "Hi {{ first_name | default(\"there\") }}"}),
    )
    .await;
    let definition = json!({
        "name": "welcome", "reentry": "once",
        "nodes": [
            {"id": "registered", "type": "entry", "plugin": "event-trigger", "config": {"event": "registered"}},
            {"id": "send", "type": "action", "plugin": "update-contact",
             "config": {"send": {"channel": "email", "template": "welcome"}}},
            {"id": "opened?", "type": "wait", "until_event": "email_opened", "timeout": "1d"},
            {"id": "opened", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["opened"]}},
            {"id": "not-opened", "type": "action", "plugin": "update-contact", "config": {"add_tags": ["not-opened"]}}
        ],
        "edges": [
            {"from": "registered", "to": "send"}, {"from": "send", "to": "opened?"},
            {"from": "opened?", "to": "opened", "label": "event"},
            {"from": "opened?", "to": "not-opened", "label": "timeout"}
        ]
    });
    let (status, body) = server.put("/v1/journeys/welcome", definition).await;
    assert_eq!(status, 201, "{body}");
    let (status, body) = server.act("/v1/journeys/welcome/publish").await;
    assert_eq!(status, 201, "{body}");
    journey(&server, "later", "upgraded", "email", "welcome").await;
    register(
        &server,
        json!({"id": "li", "attributes": {"email": "li@example.com", "first_name": "Li"},
               "consents": {"email": "granted"}}),
        "registered",
        "pro",
    )
    .await;
    wait_for(|| provider.lock().unwrap().accepted.len() == 1).await;
    let sent = provider
        .lock()
        .unwrap()
        .accepted
        .values()
        .next()
        .unwrap()
        .clone();
    let html = sent["html"].as_str().unwrap().to_owned();
    assert!(html.contains("<p>Hi Li</p>"), "{html}");
    assert!(
        !html.contains("https://shop.example.com/spring"),
        "the link is tracked: {html}"
    );
    let headers = &sent["headers"];
    assert_eq!(
        headers["List-Unsubscribe-Post"],
        "List-Unsubscribe=One-Click"
    );
    let unsubscribe = headers["List-Unsubscribe"]
        .as_str()
        .unwrap()
        .trim_matches(['<', '>'])
        .to_owned();
    assert!(
        html.contains(&unsubscribe),
        "the body links the same page: {html}"
    );
    assert!(sent["text"].as_str().unwrap().contains(&unsubscribe));
    let pixel = url_in(&html, &format!("{}/t/open/", server.base));
    let click = url_in(&html, &format!("{}/t/click/", server.base));

    // Opening (twice) takes the journey's "opened" branch, once.
    for _ in 0..2 {
        let response = plain().get(&pixel).send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "image/gif");
    }
    server.settle().await;
    assert_eq!(tags(&server, "li").await, ["opened"]);
    let (_, stats) = server.get("/v1/journeys/welcome/stats").await;
    let opened = stats["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["node"] == "opened")
        .unwrap();
    assert_eq!(opened["counts"]["entered"], 1, "{stats:#}");

    // A click goes where the message linked, and nowhere else.
    let response = plain().get(&click).send().await.unwrap();
    assert_eq!(response.status(), 302);
    assert_eq!(
        response.headers()["location"],
        "https://shop.example.com/spring?x=1&y=2"
    );
    let token = click.rsplit('/').next().unwrap();
    let (payload, tag) = token.split_once('.').unwrap();
    let forged_url = {
        use base64::Engine;
        let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let mut bytes = engine.decode(payload).unwrap();
        let at = bytes.iter().position(|b| *b == 0).unwrap();
        bytes.truncate(at + 1);
        bytes.extend_from_slice(b"https://evil.example.com/");
        format!("{}.{tag}", engine.encode(bytes))
    };
    let pixel_token = pixel.rsplit('/').next().unwrap();
    for forged in [
        format!("{}/t/click/{forged_url}", server.base),
        format!("{}/t/click/{pixel_token}", server.base),
        format!(
            "{}/t/open/{}",
            server.base,
            &pixel_token[..pixel_token.len() - 2]
        ),
        format!("{}/unsubscribe/{pixel_token}", server.base),
    ] {
        let response = plain().get(&forged).send().await.unwrap();
        assert_eq!(response.status(), 404, "{forged}");
        let body: Json = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "invalid_link");
    }

    // A GET of the unsubscribe link only asks; the POST a mail client sends unsubscribes.
    let page = plain().get(&unsubscribe).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("<form method=\"post\""));
    let (_, contact) = server.get("/v1/contacts/li").await;
    assert_eq!(
        contact["consents"]["email"], "granted",
        "a link scanner unsubscribes no one"
    );
    let response = plain()
        .post(&unsubscribe)
        .header("content-type", "application/x-www-form-urlencoded")
        .body("List-Unsubscribe=One-Click")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    server.settle().await;
    let (_, contact) = server.get("/v1/contacts/li").await;
    assert_eq!(contact["consents"]["email"], "revoked", "{contact:#}");
    happen(&server, "li", "upgraded", "pro").await;
    let after = message_when(&server, "li", "suppressed").await;
    assert!(
        last_detail(&after).contains("opted out of `email`"),
        "{after:#}"
    );
    assert_eq!(provider.lock().unwrap().accepted.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_capped_message_waits_its_turn_and_one_due_at_night_waits_for_the_contacts_morning() {
    let server = Server::start(true).await;
    let (base, provider) = provider().await;
    bind(
        &server,
        "sms",
        &base,
        "/ok",
        json!({"caps": [{"messages": 1, "per": "1d", "scope": "channel"}],
               "send_hours": {"from": "09:00", "to": "21:00"}}),
    )
    .await;
    template(&server, "hello", json!({"channel": "sms", "text": "hello"})).await;
    template(
        &server,
        "offer",
        json!({"channel": "sms", "text": "an offer"}),
    )
    .await;
    template(
        &server,
        "code",
        json!({"channel": "sms", "text": "your code", "transactional": true}),
    )
    .await;
    journey(&server, "hello", "registered", "sms", "hello").await;
    journey(&server, "offer", "upgraded", "sms", "offer").await;
    journey(&server, "code", "login", "sms", "code").await;
    let (_, view) = server.get("/v1/channels/sms").await;
    assert_eq!(view["caps"][0]["scope"], "channel", "{view:#}");

    // 10:00 UTC is 18:00 in Shanghai: inside the window. One message a day on this channel.
    let shanghai = json!({"id": "wei", "timezone": "Asia/Shanghai",
        "attributes": {"email": "wei@example.com"}, "consents": {"sms": "granted"}});
    register(&server, shanghai, "registered", "free").await;
    message_when(&server, "wei", "sent").await;
    happen(&server, "wei", "upgraded", "pro").await;
    let capped = message_when(&server, "wei", "deferred").await;
    assert!(last_detail(&capped).contains("frequency cap"), "{capped:#}");
    // A transactional message is not held by caps or hours.
    happen(&server, "wei", "login", "pro").await;
    message_when(&server, "wei", "sent").await;

    // 10:00 UTC is 02:00 in Los Angeles: held until 09:00 there, 17:00 UTC.
    let la = json!({"id": "ana", "timezone": "America/Los_Angeles",
        "attributes": {"email": "ana@example.com"}, "consents": {"sms": "granted"}});
    register(&server, la, "registered", "free").await;
    let night = message_when(&server, "ana", "deferred").await;
    assert!(
        last_detail(&night).contains("outside the send window 09:00–21:00"),
        "{night:#}"
    );
    assert_eq!(night["due_at"], "2026-11-22T17:00:00Z", "{night:#}");
    let sent_before = provider.lock().unwrap().accepted.len();
    server.clock.advance(7 * 60 * MINUTE);
    message_when(&server, "ana", "sent").await;
    assert_eq!(provider.lock().unwrap().accepted.len(), sent_before + 1);

    // A day after wei's first message, the capped one goes.
    server.clock.advance(17 * 60 * MINUTE);
    wait_for(|| {
        provider
            .lock()
            .unwrap()
            .accepted
            .values()
            .any(|body| body["text"].as_str().unwrap().starts_with("an offer"))
    })
    .await;
}

/// The global control group: with a fifth of contacts held out, the same contacts get no
/// marketing message from either of two identical pilots — each message of theirs suppressed
/// with the reason — and every other contact gets both; the contact shows it is held out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_global_control_group_holds_out_the_same_contacts_in_every_journey() {
    let (base, _) = provider().await;
    let server = Server::start(true).await;
    bind(&server, "hook", &base, "/ok", json!({})).await;
    template(
        &server,
        "offer",
        json!({"channel": "hook", "subject": "An offer", "text": "For you."}),
    )
    .await;
    journey(&server, "pilot-a", "registered", "hook", "offer").await;
    journey(&server, "pilot-b", "registered", "hook", "offer").await;
    let (status, body) = server
        .put(
            "/v1/settings",
            json!({"content_approval": false, "control_group_percent": 60}),
        )
        .await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (422, Some("invalid_settings"))
    );
    let (status, body) = server
        .put("/v1/settings", json!({"control_group_percent": 20}))
        .await;
    assert_eq!(status, 200, "{body}");
    let ids: Vec<String> = (0..40).map(|n| format!("pilot-{n}")).collect();
    for id in &ids {
        let contact = json!({"id": id, "attributes": {"email": format!("{id}@example.com")},
                             "consents": {"hook": "granted"}});
        register(&server, contact, "registered", "free").await;
    }
    server.settle().await;

    let mut held = 0;
    for id in &ids {
        let (_, contact) = server.get(&format!("/v1/contacts/{id}")).await;
        let held_out = contact["control_group"].as_bool().unwrap();
        held += usize::from(held_out);
        let mut messages = Json::Null;
        for _ in 0..400 {
            messages = server.get(&format!("/v1/contacts/{id}/messages")).await.1;
            let settled = messages.as_array().unwrap().iter().all(|m| {
                m["status"] != "queued" && m["status"] != "sending" && m["status"] != "deferred"
            });
            if settled && messages.as_array().unwrap().len() == 2 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let messages = messages.as_array().unwrap();
        assert_eq!(messages.len(), 2, "one per pilot: {messages:?}");
        for message in messages {
            let suppressed = message["status"] == "suppressed";
            assert_eq!(suppressed, held_out, "{id}: {message}");
            if held_out {
                assert!(
                    last_detail(message).contains("global control group"),
                    "{message}"
                );
            }
        }
    }
    assert!((3..=16).contains(&held), "{held} of 40 held out at 20 %");
}
