//! Lifecycle stages in a batch (see `crate::lifecycle`): after each event from outside the
//! contact's activity is brought up to date and the rules decide its stage (and again on a
//! contact's update or new rules, with its activity as it stands); a stage timer per
//! contact fires at the next moment a time-based rule could start or stop holding, so
//! "dormant after 90 days" needs no scan of contacts.

use super::Batch;
use crate::audiences::condition::Facts;
use crate::lifecycle::{Condition, Rules, STAGE_EVENT};
use crate::model::{Activity, Effect, Event, Millis, Value};
use crate::store::StoreError;

/// Whether `condition` holds for `facts`' contact with `activity`.
fn holds(condition: &Condition, activity: &Activity, facts: &Facts<'_>) -> bool {
    let now = facts.now;
    match condition {
        Condition::InactiveFor(quiet) => now - activity.last_at >= *quiet,
        Condition::Count { event, at_least } => {
            activity.counts.get(event).copied().unwrap_or(0) >= *at_least
        }
        Condition::RegisteredWithin(within) => now - facts.contact.created_at < *within,
        Condition::Matches(condition) => condition.holds(facts),
        Condition::Otherwise => true,
    }
}

/// The next moment after `now` a time-based rule starts or stops holding.
fn next_change(rules: &Rules, activity: &Activity, facts: &Facts<'_>) -> Option<Millis> {
    (rules.stages.iter())
        .filter_map(|(_, condition)| match condition {
            Condition::InactiveFor(quiet) => Some(activity.last_at + quiet),
            Condition::RegisteredWithin(within) => Some(facts.contact.created_at + within),
            Condition::Matches(condition) => condition.next_change(facts),
            Condition::Count { .. } | Condition::Otherwise => None,
        })
        .filter(|at| *at > facts.now)
        .min()
}

impl Batch<'_> {
    /// An event arrived: if it is the contact's own doing (from outside, not emitted by a
    /// journey), it is their latest interaction and, if the rules count it, one more.
    pub(super) fn track_stage(
        &mut self,
        contact_id: &str,
        event: &Event,
    ) -> Result<(), StoreError> {
        let Some(rules) = self.journeys.lifecycle.rules() else {
            return Ok(());
        };
        if event.depth > 0 || self.reads.contact(contact_id)?.is_none() {
            return Ok(());
        }
        let now = self.now;
        let Some(contact) = self.reads.contact_mut(contact_id) else {
            return Ok(());
        };
        let mut activity = contact.activity.clone().unwrap_or(Activity {
            last_at: contact.created_at,
            ..Activity::default()
        });
        activity.last_at = activity.last_at.max(event.timestamp.min(now));
        let counted = rules.counted.contains(&event.name);
        if counted {
            *activity.counts.entry(event.name.clone()).or_default() += 1;
        }
        let counted = counted.then_some(event.name.as_str());
        self.settle_stage(
            contact_id,
            &rules,
            activity,
            counted,
            &event.name,
            &event.id,
        )
    }

    /// The contact or the rules changed (an update, new rules): the rules look at the contact
    /// again with its activity as it stands.
    pub(super) fn restage(&mut self, contact_id: &str) -> Result<(), StoreError> {
        let Some(rules) = self.journeys.lifecycle.rules() else {
            return Ok(());
        };
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        let activity = contact.activity.clone().unwrap_or(Activity {
            last_at: contact.created_at,
            ..Activity::default()
        });
        // Not the timer's form of name: a timer may fire in the same millisecond.
        let source = format!("update:{contact_id}@{}", self.now);
        self.settle_stage(contact_id, &rules, activity, None, "update", &source)
    }

    /// The contact's stage timer fired (a stale one, set again since, is let go).
    pub(super) fn on_stage_timer(
        &mut self,
        contact_id: &str,
        due_at: Millis,
    ) -> Result<(), StoreError> {
        let Some(rules) = self.journeys.lifecycle.rules() else {
            return Ok(());
        };
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        let Some(activity) = contact
            .activity
            .clone()
            .filter(|a| a.timer_at == Some(due_at))
        else {
            return Ok(());
        };
        self.settle_stage(
            contact_id,
            &rules,
            activity,
            None,
            "time",
            // Named by the contact's own timer: many contacts' timers fall due at once.
            &format!("{}@{due_at}", crate::lifecycle::timer_id(contact_id)),
        )
    }

    /// Keep `activity`, set the stage the first holding rule gives (a stage the rules do not
    /// manage is left alone) and the timer for the next time-based change.
    fn settle_stage(
        &mut self,
        contact_id: &str,
        rules: &Rules,
        mut activity: Activity,
        counted: Option<&str>,
        cause: &str,
        source: &str,
    ) -> Result<(), StoreError> {
        let now = self.now;
        let scoring = self.journeys.scoring.clone();
        let half_life = move |model: &str| scoring.half_life(model).flatten();
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        let windows = Default::default();
        let facts = Facts {
            contact: &contact,
            windows: &windows,
            half_life: &half_life,
            now,
        };
        let due = next_change(rules, &activity, &facts);
        // A timer due no later than needed stays (early, it only looks again): a contact who
        // keeps coming back does not move it on every event.
        activity.timer_at = match activity.timer_at {
            Some(set) if set > now && due.is_none_or(|due| set <= due) => Some(set),
            _ => due,
        };
        let place = |stage: &str| (rules.stages.iter()).position(|(s, _)| s == stage);
        let stage = (rules.stages.iter())
            .position(|(_, condition)| holds(condition, &activity, &facts))
            .filter(|found| {
                let current = &facts.contact.lifecycle_stage;
                rules.stages[*found].0 != *current
                    && rules.managed.contains(current)
                    // A funnel moves forward only: to a stage listed before the contact's.
                    && (!rules.request.forward_only
                        || place(current).is_none_or(|now_at| *found < now_at))
            })
            .map(|found| rules.stages[found].0.clone());
        let Some(contact) = self.reads.contact_mut(contact_id) else {
            return Ok(());
        };
        // A look that changes nothing (an update, a sweep, with the timer where it was)
        // writes nothing.
        if contact.activity.as_ref() != Some(&activity) {
            contact.activity = Some(activity.clone());
            self.changes.add_activity(contact_id, &activity, counted);
        }
        let Some(to) = stage else {
            return Ok(());
        };
        let from = std::mem::replace(&mut contact.lifecycle_stage, to.clone());
        contact.updated_at = now;
        self.changes.change_contact(
            contact_id,
            vec![Effect::SetLifecycleStage { stage: to.clone() }],
        );
        self.changes.emit(Event {
            id: format!("{source}:stage"),
            contact_id: contact_id.to_owned(),
            name: STAGE_EVENT.to_owned(),
            properties: [
                ("from".to_owned(), Value::Text(from)),
                ("to".to_owned(), Value::Text(to)),
                ("cause".to_owned(), Value::Text(cause.to_owned())),
            ]
            .into(),
            timestamp: now,
            depth: 1,
        });
        Ok(())
    }
}
