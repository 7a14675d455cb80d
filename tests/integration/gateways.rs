//! The chat and SMS channels through the server, to real HTTP servers on 127.0.0.1 that answer
//! as the providers do: a WeCom group robot (failures are HTTP 200 with an `errcode`; 45009 is
//! its frequency limit, 93000 a key that is no robot's) and an SMS gateway taking forms.

use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::routing::post;
use serde_json::{Value as Json, json};

use crate::delivery::{MINUTE, journey, last_detail, message_when, register, statuses, template};
use crate::server::Server;

const ROBOT_KEY: &str = "693a91f6-7c1e-4a55-9d0e-2b4c8f1e7a30";

#[derive(Default)]
struct Robot {
    /// Bodies WeCom accepted.
    accepted: Vec<Json>,
    /// Keys seen, one per request.
    keys: Vec<String>,
}

/// A WeCom group robot: the first message is over its frequency limit, later ones go in; a
/// key that is not its own gets 93000.
async fn robot() -> (String, Arc<Mutex<Robot>>) {
    let robot: Arc<Mutex<Robot>> = Arc::default();
    let app = Router::new()
        .route(
            "/cgi-bin/webhook/send",
            post(
                |State(robot): State<Arc<Mutex<Robot>>>,
                 Query(query): Query<std::collections::HashMap<String, String>>,
                 body: Bytes| async move {
                    let mut robot = robot.lock().unwrap();
                    let key = query.get("key").cloned().unwrap_or_default();
                    robot.keys.push(key.clone());
                    let answer = if key != ROBOT_KEY {
                        json!({"errcode": 93000, "errmsg": "invalid webhook url"})
                    } else if robot.keys.len() == 1 {
                        json!({"errcode": 45009, "errmsg": "api freq out of limit"})
                    } else {
                        robot.accepted.push(serde_json::from_slice(&body).unwrap());
                        json!({"errcode": 0, "errmsg": "ok"})
                    };
                    axum::Json(answer)
                },
            ),
        )
        .with_state(robot.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, robot)
}

async fn bind_robot(server: &Server, base: &str, key: &str) {
    let (status, body) = server
        .put(
            "/v1/channels/wecom",
            json!({
                "plugin": "wecom-bot",
                "config": {"webhook": format!("{base}/cgi-bin/webhook/send?key={{{{secret:wecom_key}}}}"),
                           "mention": "userid"},
                "recipient": "wecom_userid",
                "approved_hosts": [base],
                "secrets": {"wecom_key": {"value": key, "hosts": [base]}},
                "rate": {"messages": 20, "per": "1m"},
            }),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sales_alert_reaches_the_wecom_robot_through_its_limit_and_a_bad_key_alerts() {
    let (base, robot) = robot().await;
    let server = Server::start(true).await;
    bind_robot(&server, &base, ROBOT_KEY).await;
    template(
        &server,
        "hot-lead",
        json!({"channel": "wecom", "transactional": true, "subject": "热门线索",
               "text": "{{ name | default('一位客户') }} 正在询问价格,请立即联系"}),
    )
    .await;
    journey(&server, "alert-sales", "pricing_asked", "wecom", "hot-lead").await;
    register(
        &server,
        json!({"id": "li", "attributes": {"wecom_userid": "zhangsan", "name": "李伟"}}),
        "pricing_asked",
        "pro",
    )
    .await;
    // The robot's limit first: deferred for a minute, then in.
    let deferred = message_when(&server, "li", "deferred").await;
    assert!(last_detail(&deferred).contains("45009"), "{deferred:#}");
    server.advance(2 * MINUTE).await;
    let sent = message_when(&server, "li", "sent").await;
    assert_eq!(
        statuses(&sent),
        ["queued", "sending", "deferred", "sending", "sent"]
    );
    {
        let robot = robot.lock().unwrap();
        assert_eq!(
            robot.accepted,
            [json!({"msgtype": "text", "text": {
                "content": "热门线索\n\n李伟 正在询问价格,请立即联系",
                "mentioned_list": ["zhangsan"], "mentioned_mobile_list": []}})]
        );
        assert!(robot.keys.iter().all(|k| k == ROBOT_KEY));
    }
    for record in ["/v1/messages/".to_owned() + sent["id"].as_str().unwrap()] {
        let (_, body) = server.get(&record).await;
        assert!(!body.to_string().contains(ROBOT_KEY), "the key never shows");
    }

    // A key that is no robot's fails the message for good and raises the channel's alert.
    bind_robot(&server, &base, "0000-not-a-robot").await;
    register(
        &server,
        json!({"id": "wang", "attributes": {"wecom_userid": "lisi"}}),
        "pricing_asked",
        "pro",
    )
    .await;
    let failed = message_when(&server, "wang", "failed").await;
    assert!(last_detail(&failed).contains("93000"), "{failed:#}");
    let (_, channel) = server.get("/v1/channels/wecom").await;
    assert!(
        channel["alert"]["reason"]
            .as_str()
            .unwrap()
            .contains("93000"),
        "{channel:#}"
    );
    assert!(
        !channel.to_string().contains("0000-not-a-robot"),
        "{channel:#}"
    );
}

/// An SMS gateway that takes forms and answers with its id.
async fn gateway() -> (String, Arc<Mutex<Vec<String>>>) {
    let forms: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = Router::new()
        .route(
            "/send",
            post(
                |State(forms): State<Arc<Mutex<Vec<String>>>>, body: Bytes| async move {
                    let mut forms = forms.lock().unwrap();
                    forms.push(String::from_utf8(body.to_vec()).unwrap());
                    axum::Json(json!({"sid": format!("SM{}", forms.len())}))
                },
            ),
        )
        .with_state(forms.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (base, forms)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sms_goes_to_phone_numbers_only_and_never_in_unasked_pieces() {
    let (base, forms) = gateway().await;
    let server = Server::start(true).await;
    let (status, body) = server
        .put(
            "/v1/channels/sms",
            json!({
                "plugin": "sms-http",
                "config": {"url": format!("{base}/send"), "format": "form",
                           "headers": {"Authorization": "Bearer {{secret:sms_key}}"},
                           "body": {"to": "$recipient", "text": "$text", "ref": "$id"},
                           "max_segments": 1},
                "recipient": "phone",
                "approved_hosts": [base],
                "secrets": {"sms_key": {"value": "sk-sms-1", "hosts": [base]}},
            }),
        )
        .await;
    assert!(status == 200 || status == 201, "{status} {body}");
    template(
        &server,
        "code",
        json!({"channel": "sms", "transactional": true, "text": "您的验证码是 {{ code | default('0000') }}"}),
    )
    .await;
    template(
        &server,
        "essay",
        json!({"channel": "sms", "transactional": true, "text": "{% for i in range(80) %}字{% endfor %}"}),
    )
    .await;
    journey(&server, "codes", "code_asked", "sms", "code").await;
    journey(&server, "essays", "essay_asked", "sms", "essay").await;

    register(
        &server,
        json!({"id": "li", "attributes": {"phone": "+8613800000000"}}),
        "code_asked",
        "pro",
    )
    .await;
    let sent = message_when(&server, "li", "sent").await;
    assert_eq!(sent["provider_id"], "SM1");
    assert_eq!(
        forms.lock().unwrap()[0],
        format!(
            "ref={}&text=%E6%82%A8%E7%9A%84%E9%AA%8C%E8%AF%81%E7%A0%81%E6%98%AF%200000&to=%2B8613800000000",
            sent["id"].as_str().unwrap().replace(':', "%3A")
        )
    );

    // A number that is not one bounces without a request; 80 Chinese characters would take
    // two segments where the channel allows one.
    register(
        &server,
        json!({"id": "wu", "attributes": {"phone": "138-0000"}}),
        "code_asked",
        "pro",
    )
    .await;
    let bounced = message_when(&server, "wu", "bounced").await;
    assert!(last_detail(&bounced).contains("E.164"), "{bounced:#}");
    register(&server, json!({"id": "li"}), "essay_asked", "pro").await;
    let failed = message_when(&server, "li", "failed").await;
    assert!(
        last_detail(&failed).contains("2 SMS segments"),
        "{failed:#}"
    );
    assert_eq!(
        forms.lock().unwrap().len(),
        1,
        "nothing else reached the gateway"
    );
}
