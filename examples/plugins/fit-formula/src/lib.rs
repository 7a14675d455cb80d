//! A proprietary lead-scoring formula, the kind an enterprise keeps to itself and ships as a
//! plugin (DOMAIN.md §2): each buying signal's base points, scaled by who the person is —
//! seniority from their job title, company size on a log scale, a bonus for target
//! industries. The host runs it on the events its scoring model selects and keeps every
//! change it returns, with its reason, in the contact's score history.
//!
//! ```json
//! {"signals": {"demo_requested": 30, "pricing_viewed": 10, "case_study_read": 4},
//!  "target_industries": ["tech", "finance"]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use wayline_sdk::scorer::{Contact, Event, PluginConfig, PluginInfo, ScoreChange, Scorer};

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Formula {
    /// Base points per event name.
    signals: BTreeMap<String, f64>,
    #[serde(default)]
    target_industries: Vec<String>,
}

impl PluginConfig for Formula {
    /// Only what the formula reads reaches it.
    fn attributes(&self) -> Option<Vec<String>> {
        Some(vec!["job_title".into(), "company_size".into(), "industry".into()])
    }
}

/// How much a person's say weighs: the formula's secret sauce.
fn seniority(title: &str) -> (f64, &'static str) {
    let title = title.to_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| title.contains(w));
    if has(&["chief", "ceo", "cto", "cfo", "founder", "vp", "vice president"]) {
        (2.0, "executive")
    } else if has(&["director", "head of"]) {
        (1.5, "director")
    } else if has(&["manager", "lead"]) {
        (1.2, "manager")
    } else {
        (1.0, "individual")
    }
}

pub struct FitFormula;

impl Scorer for FitFormula {
    type Config = Formula;

    fn describe() -> PluginInfo {
        PluginInfo::new(
            "fit-formula",
            "1.0.0",
            "Buying signals weighted by seniority, company size and industry",
        )
    }

    fn score(config: Formula, contact: Contact, event: Event) -> Result<Vec<ScoreChange>, String> {
        let Some(base) = config.signals.get(&event.name) else {
            return Ok(Vec::new());
        };
        let (weight, level) = seniority(contact.text("job_title").unwrap_or(""));
        // 10 people count 1×, 1,000 people 1.5×, 100,000 people 2×.
        let size = contact.number("company_size").unwrap_or(1.0).max(1.0);
        let scale = 1.0 + (size.log10() - 1.0).max(0.0) / 4.0;
        let target = contact
            .text("industry")
            .is_some_and(|i| config.target_industries.iter().any(|t| t == i));
        let mut points = base * weight * scale;
        if target {
            points *= 1.25;
        }
        let points = (points * 10.0).round() / 10.0;
        let reason = format!(
            "{}: {base} × {weight} ({level}) × {scale:.2} (company of {size}){}",
            event.name,
            if target { " × 1.25 (target industry)" } else { "" }
        );
        Ok(vec![ScoreChange::new(points, reason)])
    }
}

wayline_sdk::scorer::export!(FitFormula);
