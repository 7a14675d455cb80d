//! Posts messages to a WeCom (企业微信) group robot: text, markdown or news, with `@` mentions,
//! through the host's outbound HTTP. The robot's key is a secret written into the URL by the
//! host, only for the robot's host.
//!
//! ```json
//! {"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={{secret:wecom_key}}",
//!  "msgtype": "text", "mention": "userid", "mentioned_list": ["@all"]}
//! ```
//! - `msgtype`: `text` (default; the subject, a blank line and the text, at most 2048 bytes),
//!   `markdown` (the text as WeCom markdown, at most 4096 bytes) or `news` (one article: the
//!   subject as its title, the text as its description, `news_url` and `news_picurl`).
//! - `mention`: `userid` or `mobile` puts the message's recipient in `mentioned_list` or
//!   `mentioned_mobile_list` (text messages; markdown mentions are written `<@userid>` in the
//!   text itself); `mentioned_list` and `mentioned_mobile_list` add fixed ones (`@all`).
//!
//! WeCom answers HTTP 200 with an `errcode`: 0 delivers; 45009 (the robot's limit, 20 messages
//! a minute) and -1 (busy) are retried, the former after a minute; 93000 (the key is not a
//! robot's) and every other code are permanent, with WeCom's `errmsg`. Give the channel a rate
//! of 20 per minute so the limit is not met in the first place.

use serde::{Deserialize, Serialize};
use serde_json::{Value as Json, json};
use wayline_rules::{Check, Problems, ROOT};
use wayline_sdk::channel::*;
use wayline_sdk::host::http::{Request, Response, send};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    webhook: String,
    #[serde(default)]
    msgtype: Option<String>,
    #[serde(default)]
    mention: Option<String>,
    #[serde(default)]
    mentioned_list: Vec<String>,
    #[serde(default)]
    mentioned_mobile_list: Vec<String>,
    #[serde(default)]
    news_url: Option<String>,
    #[serde(default)]
    news_picurl: Option<String>,
}

const TEXT_BYTES: usize = 2048;
const MARKDOWN_BYTES: usize = 4096;
/// WeCom's codes: the robot's frequency limit, busy, and a key that is no robot's.
const FREQUENCY_LIMIT: i64 = 45009;
const BUSY: i64 = -1;
const INVALID_KEY: i64 = 93000;

impl Check for Config {
    fn check(&self, problems: &mut Problems) {
        if !wayline_providers::is_http_url(&self.webhook) || !self.webhook.contains("key=") {
            problems.add(
                &ROOT.field("webhook"),
                "must be the robot's URL, …/cgi-bin/webhook/send?key={{secret:NAME}}",
            );
        } else if !self.webhook.contains("{{secret:") {
            problems.add(
                &ROOT.field("webhook"),
                "the robot's key is a secret: write key={{secret:NAME}} and set the secret on the channel",
            );
        }
        if !matches!(
            self.msgtype.as_deref(),
            None | Some("text" | "markdown" | "news")
        ) {
            problems.add(&ROOT.field("msgtype"), "must be text, markdown or news");
        }
        if !matches!(
            self.mention.as_deref(),
            None | Some("none" | "userid" | "mobile")
        ) {
            problems.add(&ROOT.field("mention"), "must be none, userid or mobile");
        }
        if self.msgtype.as_deref() == Some("news")
            && !self
                .news_url
                .as_deref()
                .is_some_and(wayline_providers::is_http_url)
        {
            problems.add(
                &ROOT.field("news_url"),
                "a news message links an http(s) URL",
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
    /// WeCom's JSON for `message`, or why it cannot be one.
    pub fn payload(&self, message: &Message) -> Result<Json, DeliveryFailure> {
        let text = message.body();
        let too_long = |limit: usize, size: usize| {
            DeliveryFailure::permanent(format!(
                "WeCom takes at most {limit} bytes here; the message has {size}"
            ))
        };
        match self.msgtype.as_deref().unwrap_or("text") {
            "markdown" => {
                if text.len() > MARKDOWN_BYTES {
                    return Err(too_long(MARKDOWN_BYTES, text.len()));
                }
                Ok(json!({"msgtype": "markdown", "markdown": {"content": text}}))
            }
            "news" => Ok(json!({"msgtype": "news", "news": {"articles": [{
                "title": message.subject.as_deref().unwrap_or(text),
                "description": text,
                "url": self.news_url,
                "picurl": self.news_picurl,
            }]}})),
            _ => {
                let content = match message.subject.as_deref() {
                    Some(subject) if !subject.is_empty() => format!("{subject}\n\n{text}"),
                    _ => text.to_owned(),
                };
                if content.len() > TEXT_BYTES {
                    return Err(too_long(TEXT_BYTES, content.len()));
                }
                let mut users = self.mentioned_list.clone();
                let mut mobiles = self.mentioned_mobile_list.clone();
                match self.mention.as_deref() {
                    Some("userid") => users.push(message.recipient.clone()),
                    Some("mobile") => mobiles.push(message.recipient.clone()),
                    _ => {}
                }
                Ok(json!({"msgtype": "text", "text": {
                    "content": content,
                    "mentioned_list": users,
                    "mentioned_mobile_list": mobiles,
                }}))
            }
        }
    }

    pub fn request(&self, message: &Message) -> Result<Request, DeliveryFailure> {
        Ok(Request {
            method: "POST".into(),
            url: self.webhook.clone(),
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Some(self.payload(message)?.to_string().into_bytes()),
            timeout_ms: Some(5_000),
        })
    }
}

/// What WeCom's answer means. Its failures are HTTP 200 with a non-zero `errcode`.
pub fn classify(response: &Response, message_id: &str) -> Result<Delivery, DeliveryFailure> {
    if !(200..300).contains(&response.status) {
        return Err(wayline_providers::failure(response, &[]));
    }
    #[derive(Deserialize)]
    struct Answer {
        errcode: i64,
        #[serde(default)]
        errmsg: String,
    }
    let answer: Answer = serde_json::from_slice(&response.body).map_err(|_| {
        DeliveryFailure::retry(
            format!(
                "WeCom's answer is not its JSON: {}",
                wayline_providers::excerpt(&response.body)
            ),
            None,
        )
    })?;
    let why = format!("WeCom errcode {}: {}", answer.errcode, answer.errmsg);
    match answer.errcode {
        0 => Ok(Delivery::accepted(message_id)),
        FREQUENCY_LIMIT => Err(DeliveryFailure::retry(
            format!("{why} (the robot's limit is 20 messages a minute)"),
            Some(60_000),
        )),
        BUSY => Err(DeliveryFailure::retry(why, None)),
        INVALID_KEY => Err(DeliveryFailure::permanent(format!(
            "{why} (the key is not a robot's: check the channel's secret)"
        ))),
        _ => Err(DeliveryFailure::permanent(why)),
    }
}

pub struct WecomBot;

impl Channel for WecomBot {
    type Config = Config;

    fn describe() -> PluginInfo {
        let mut info = PluginInfo::new(
            env!("CARGO_PKG_NAME"),
            env!("CARGO_PKG_VERSION"),
            "Posts text, markdown or news messages to a WeCom (企业微信) group robot, with @ mentions",
        );
        info.config_schema = CONFIG_SCHEMA.into();
        // qyapi.weixin.qq.com in production; the operator's approval decides.
        info.outbound_hosts = vec!["*".into()];
        info
    }

    fn deliver(config: Config, message: Message) -> Result<Delivery, DeliveryFailure> {
        let request = config.request(&message)?;
        let response = send(&request).map_err(wayline_providers::host_failure)?;
        classify(&response, &message.id)
    }
}

export!(WecomBot);

const CONFIG_SCHEMA: &str = r##"{
  "$schema": "https://json-schema.org/draft/2020-12/schema",
  "title": "wecom-bot config",
  "type": "object",
  "required": ["webhook"],
  "properties": {
    "webhook": {"type": "string", "description": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={{secret:NAME}}"},
    "msgtype": {"enum": ["text", "markdown", "news"], "default": "text"},
    "mention": {"enum": ["none", "userid", "mobile"], "default": "none"},
    "mentioned_list": {"type": "array", "items": {"type": "string"}},
    "mentioned_mobile_list": {"type": "array", "items": {"type": "string"}},
    "news_url": {"type": "string"},
    "news_picurl": {"type": "string"}
  },
  "additionalProperties": false
}"##;

#[cfg(test)]
mod tests {
    use super::*;

    fn message() -> Message {
        Message {
            id: "e1:0".into(),
            contact_id: "c1".into(),
            recipient: "zhangsan".into(),
            class: MessageClass::Transactional,
            test: false,
            subject: Some("热门线索".into()),
            text: Some("李伟 正在询问价格,请立即联系".into()),
            html: None,
            headers: vec![],
            metadata: vec![],
        }
    }

    fn answer(body: &str) -> Result<Delivery, DeliveryFailure> {
        let response = Response {
            status: 200,
            headers: vec![],
            body: body.as_bytes().to_vec(),
        };
        classify(&response, "e1:0")
    }

    #[test]
    fn a_text_message_mentions_the_recipient() {
        let config = Config::parse(
            r#"{"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={{secret:k}}",
                "mention": "userid", "mentioned_mobile_list": ["@all"]}"#,
        )
        .unwrap();
        assert_eq!(
            config.payload(&message()).unwrap(),
            json!({"msgtype": "text", "text": {"content": "热门线索\n\n李伟 正在询问价格,请立即联系",
                   "mentioned_list": ["zhangsan"], "mentioned_mobile_list": ["@all"]}})
        );
    }

    #[test]
    fn errcodes_in_a_200_are_classified() {
        assert!(answer(r#"{"errcode":0,"errmsg":"ok"}"#).is_ok());
        let limited = answer(r#"{"errcode":45009,"errmsg":"api freq out of limit"}"#).unwrap_err();
        assert_eq!(
            (limited.kind, limited.retry_after_ms),
            (FailureKind::Retryable, Some(60_000))
        );
        let key = answer(r#"{"errcode":93000,"errmsg":"invalid webhook url"}"#).unwrap_err();
        assert_eq!(key.kind, FailureKind::Permanent);
        assert!(key.message.contains("secret"), "{}", key.message);
        assert_eq!(
            answer(r#"{"errcode":-1,"errmsg":"system busy"}"#)
                .unwrap_err()
                .kind,
            FailureKind::Retryable
        );
        assert_eq!(
            answer(r#"{"errcode":40008,"errmsg":"invalid message type"}"#)
                .unwrap_err()
                .kind,
            FailureKind::Permanent
        );
    }

    #[test]
    fn the_key_must_be_a_secret_and_sizes_are_wecoms() {
        let paths = |json: &str| match Config::parse(json) {
            Ok(_) => vec![],
            Err(problems) => problems.into_iter().map(|p| p.path).collect::<Vec<_>>(),
        };
        assert_eq!(
            paths(
                r#"{"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key=693a91f6"}"#
            ),
            ["webhook"]
        );
        let config = Config::parse(
            r#"{"webhook": "https://qyapi.weixin.qq.com/cgi-bin/webhook/send?key={{secret:k}}", "msgtype": "markdown"}"#,
        )
        .unwrap();
        let mut long = message();
        long.text = Some("字".repeat(1400));
        assert_eq!(
            config.payload(&long).unwrap_err().kind,
            FailureKind::Permanent
        );
    }
}
