//! The SDK's ten-line scorer, built and run for real: 8 points when a contact clicks the
//! pricing link in an email. Start your own plugin by copying this crate.

use wayline_sdk::scorer::{Contact, Event, NoConfig, PluginInfo, ScoreChange, Scorer};

pub struct PricingClicks;

impl Scorer for PricingClicks {
    type Config = NoConfig;

    fn describe() -> PluginInfo {
        PluginInfo::new("pricing-clicks", "1.0.0", "8 points per pricing click")
    }

    fn score(
        _config: NoConfig,
        _contact: Contact,
        event: Event,
    ) -> Result<Vec<ScoreChange>, String> {
        let clicked_pricing =
            event.name == "email_clicked" && event.text("link") == Some("pricing");
        Ok(clicked_pricing
            .then(|| ScoreChange::new(8.0, "clicked pricing in an email"))
            .into_iter()
            .collect())
    }
}

wayline_sdk::scorer::export!(PricingClicks);
