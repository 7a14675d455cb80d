//! Each first-party plugin, called through the runtime with realistic inputs.

use serde_json::json;
use wayline::model::{Effect, Value};
use wayline::runtime::PluginSettings;

use crate::support::{self, contact, event};

#[test]
fn event_trigger_enrolls_on_the_named_event_when_filters_hold() {
    let (runtime, _clock) = support::runtime();
    let trigger = support::load(&runtime, &support::plugin_bytes("event-trigger"));
    let config = json!({"event": "registered", "where": [{"property": "source", "op": "in", "value": ["web", "landing-page"]}]}).to_string();
    let config = support::prepare(&runtime, &trigger, &config);
    let from_web = event("registered", json!({"source": "web"}));
    let from_crm = event("registered", json!({"source": "crm-import"}));
    let login = event("logged_in", json!({"source": "web"}));
    assert!(
        runtime
            .matches(&trigger, &config, &from_web, &contact())
            .result
            .unwrap()
    );
    assert!(
        !runtime
            .matches(&trigger, &config, &from_crm, &contact())
            .result
            .unwrap()
    );
    assert!(
        !runtime
            .matches(&trigger, &config, &login, &contact())
            .result
            .unwrap()
    );
}

#[test]
fn attribute_condition_splits_by_nurture_tier_and_segment() {
    let (runtime, _clock) = support::runtime();
    let condition = support::load(&runtime, &support::plugin_bytes("attribute-condition"));
    let tiers = json!({"branches": [
        {"label": "high-potential", "when": [{"field": "score", "op": "gte", "value": 70}, {"field": "score", "op": "lte", "value": 90}]},
        {"label": "watching", "when": [{"field": "score", "op": "gte", "value": 40}]}],
        "default": "low-intent"})
    .to_string();
    let tiers = support::prepare(&runtime, &condition, &tiers);
    let mut lead = contact();
    assert_eq!(
        runtime
            .evaluate(&condition, &tiers, &lead, None)
            .result
            .unwrap(),
        "watching"
    );
    lead.score = 85.0;
    assert_eq!(
        runtime
            .evaluate(&condition, &tiers, &lead, None)
            .result
            .unwrap(),
        "high-potential"
    );
    lead.score = 12.0;
    assert_eq!(
        runtime
            .evaluate(&condition, &tiers, &lead, None)
            .result
            .unwrap(),
        "low-intent"
    );

    let segment = json!({"branches": [{"label": "south-china-tech", "when": [
        {"field": "attribute.region", "op": "eq", "value": "South China"},
        {"field": "attribute.industry", "op": "eq", "value": "tech"}]}], "default": "elsewhere"})
    .to_string();
    let segment = support::prepare(&runtime, &condition, &segment);
    assert_eq!(
        runtime
            .evaluate(&condition, &segment, &contact(), None)
            .result
            .unwrap(),
        "south-china-tech"
    );

    let opened = json!({"branches": [{"label": "opened", "when": [{"field": "event.campaign", "op": "eq", "value": "welcome"}]}], "default": "not-opened"}).to_string();
    let opened = support::prepare(&runtime, &condition, &opened);
    let open = event("email_opened", json!({"campaign": "welcome"}));
    assert_eq!(
        runtime
            .evaluate(&condition, &opened, &contact(), Some(&open))
            .result
            .unwrap(),
        "opened"
    );
    assert_eq!(
        runtime
            .evaluate(&condition, &opened, &contact(), None)
            .result
            .unwrap(),
        "not-opened"
    );
}

#[test]
fn update_contact_returns_declarative_effects_with_personalisation() {
    let (runtime, _clock) = support::runtime();
    let action = support::load(&runtime, &support::plugin_bytes("update-contact"));
    let config = json!({
        "set": {"greeting": "Dear {{attribute.first_name}}, your solution is ready"},
        "add_tags": ["mql"], "remove_tags": ["cold"],
        "score": {"delta": 10, "reason": "attended webinar"}, "stage": "mql",
        "send": {"channel": "email", "template": "welcome", "variables": {"offer": "SPRING10"}}
    })
    .to_string();
    let config = support::prepare(&runtime, &action, &config);
    let effects = runtime
        .run_action(&action, &config, &contact(), None)
        .result
        .unwrap();
    assert_eq!(
        effects,
        vec![
            Effect::SetAttribute {
                name: "greeting".into(),
                value: Value::Text("Dear Wei, your solution is ready".into())
            },
            Effect::AddTag { tag: "mql".into() },
            Effect::RemoveTag { tag: "cold".into() },
            Effect::AdjustScore {
                delta: 10.0,
                reason: "attended webinar".into()
            },
            Effect::SetLifecycleStage {
                stage: "mql".into()
            },
            Effect::SendMessage {
                channel: "email".into(),
                template: "welcome".into(),
                variables: [("offer".to_owned(), Value::Text("SPRING10".into()))].into()
            },
        ]
    );
}

const POINTS_TABLE: &str = r#"{"rules": [
    {"event": "form_submitted", "points": 10, "reason": "filled a form"},
    {"event": "whitepaper_downloaded", "points": 20, "reason": "downloaded a white paper"},
    {"event": "page_viewed", "where": [{"property": "page_type", "op": "eq", "value": "product"}], "points": 5, "reason": "viewed a product page"},
    {"event": "email_opened", "points": 3, "reason": "opened an email"},
    {"attribute": "company_size", "op": "gte", "value": 500, "points": 15, "once": true, "reason": "company of 500+"}]}"#;

#[test]
fn rule_scorer_applies_the_points_table_and_awards_company_size_once_per_contact() {
    let (runtime, _clock) = support::runtime();
    let scorer = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
    let table = support::prepare(&runtime, &scorer, POINTS_TABLE);
    let score = |name: &str, properties: serde_json::Value| {
        let changes = runtime
            .score(&scorer, &table, &contact(), &event(name, properties))
            .result
            .unwrap();
        changes
            .into_iter()
            .map(|c| (c.delta, c.reason))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        score("form_submitted", json!({})),
        [
            (10.0, "filled a form".to_owned()),
            (15.0, "company of 500+".to_owned())
        ]
    );
    // The company-size points were remembered in the plugin's key-value space.
    assert_eq!(
        score("form_submitted", json!({})),
        [(10.0, "filled a form".to_owned())]
    );
    assert_eq!(
        score("page_viewed", json!({"page_type": "product"})),
        [(5.0, "viewed a product page".to_owned())]
    );
    assert_eq!(score("page_viewed", json!({"page_type": "blog"})), []);
}

#[test]
fn rule_scorer_applies_the_weighted_table() {
    let (runtime, _clock) = support::runtime();
    let scorer = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
    let weighted = r#"{"rules": [
        {"event": "whitepaper_downloaded", "points": 5, "weight": 0.2},
        {"event": "webinar_attended", "points": 10, "weight": 0.3},
        {"event": "email_clicked", "where": [{"property": "link", "op": "eq", "value": "pricing"}], "points": 8, "weight": 0.25},
        {"event": "sales_contacted", "points": 15, "weight": 0.25}]}"#;
    let weighted = support::prepare(&runtime, &scorer, weighted);
    let total = |name: &str, properties: serde_json::Value| -> f64 {
        runtime
            .score(&scorer, &weighted, &contact(), &event(name, properties))
            .result
            .unwrap()
            .iter()
            .map(|c| c.delta)
            .sum()
    };
    assert!((total("webinar_attended", json!({})) - 3.0).abs() < 1e-9);
    assert!((total("email_clicked", json!({"link": "pricing"})) - 2.0).abs() < 1e-9);
    assert_eq!(total("email_clicked", json!({"link": "blog"})), 0.0);
}

#[test]
fn a_bad_config_is_refused_with_the_plugins_own_located_messages() {
    let (runtime, _clock) = support::runtime();
    let cases = [
        ("event-trigger", json!({"where": []}), "event"),
        (
            "attribute-condition",
            json!({"branches": [{"label": "a", "when": [{"field": "scroe", "op": "gte", "value": 1}]}], "default": "b"}),
            "branches[0].when[0].field",
        ),
        ("update-contact", json!({"set": {"a": null}}), "set.a"),
        (
            "rule-scorer",
            json!({"rules": [{"event": "x", "points": "ten"}]}),
            "rules[0].points",
        ),
        ("webhook-channel", json!({"url": "ftp://crm"}), "url"),
    ];
    for (name, config, path) in cases {
        let plugin = support::load(&runtime, &support::plugin_bytes(name));
        let problems = runtime
            .validate_config(&plugin, &config.to_string())
            .result
            .unwrap()
            .unwrap_err();
        assert!(
            problems.iter().any(|p| p.path == path),
            "{name}: {problems:?}"
        );
    }
}

#[test]
fn every_first_party_plugin_describes_itself() {
    let (runtime, _clock) = support::runtime();
    for name in [
        "event-trigger",
        "attribute-condition",
        "update-contact",
        "rule-scorer",
        "webhook-channel",
    ] {
        let plugin = runtime
            .load(&support::plugin_bytes(name), &PluginSettings::default())
            .unwrap();
        assert_eq!(plugin.info.name, name);
        assert!(
            plugin.info.config_schema.is_object(),
            "{name} publishes a JSON Schema"
        );
        assert!(!plugin.info.description.is_empty());
    }
}

#[test]
fn the_sdk_ten_line_example_scores_pricing_clicks() {
    let (runtime, _clock) = support::runtime();
    let example = support::load(&runtime, &support::example_bytes("pricing-clicks"));
    assert_eq!(example.id(), "pricing-clicks@1.0.0");
    let config = support::prepare(&runtime, &example, "{}");
    let pricing = runtime
        .score(
            &example,
            &config,
            &contact(),
            &event("email_clicked", json!({"link": "pricing"})),
        )
        .result
        .unwrap();
    assert_eq!(
        pricing
            .iter()
            .map(|c| (c.delta, c.reason.as_str()))
            .collect::<Vec<_>>(),
        [(8.0, "clicked pricing in an email")]
    );
    let blog = runtime
        .score(
            &example,
            &config,
            &contact(),
            &event("email_clicked", json!({"link": "blog"})),
        )
        .result
        .unwrap();
    assert!(blog.is_empty());
}

#[test]
fn a_once_per_contact_score_is_remembered_across_restarts() {
    use std::sync::Arc;
    use wayline::plugin_kv::StoredKv;
    use wayline::runtime::{Runtime, RuntimeConfig};
    use wayline::store::{SledStore, Store};

    let data = tempfile::tempdir().unwrap();
    let total = || {
        let store: Arc<dyn Store> = Arc::new(SledStore::open(data.path()).unwrap());
        let runtime = Runtime::new(RuntimeConfig {
            kv: Arc::new(StoredKv(store.clone())),
            ..RuntimeConfig::default()
        })
        .unwrap();
        let scorer = support::load(&runtime, &support::plugin_bytes("rule-scorer"));
        let changes = runtime
            .score(
                &scorer,
                &support::prepare(&runtime, &scorer, POINTS_TABLE),
                &contact(),
                &event("form_submitted", json!({})),
            )
            .result
            .unwrap();
        store.flush().unwrap();
        changes.iter().map(|c| c.delta).sum::<f64>()
    };
    assert_eq!(total(), 25.0, "form + company size");
    assert_eq!(
        total(),
        10.0,
        "after a restart the company-size points are not awarded again"
    );
}
