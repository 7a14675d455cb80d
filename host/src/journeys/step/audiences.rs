//! Segments and tag rules in a batch (see `crate::audiences`): each event is added to the
//! windows that count it, and once the batch's steps are done every contact it touched is
//! looked at again — tag rules first (adding or removing their tags), then segments (entering
//! or leaving is an event) — and its audience timer set to the next moment time alone could
//! change an answer.

use std::collections::BTreeMap;

use super::Batch;
use super::nodes::MAX_EVENT_DEPTH;
use crate::audiences::condition::{Counter, Facts};
use crate::audiences::{ENTERED_EVENT, LEFT_EVENT, Rules};
use crate::model::{Audience, Contact, Effect, Event, Millis, Value};
use crate::store::{AudienceWrite, StoreError};

/// Events read back per page when a counter is filled from a contact's past.
const HISTORY_PAGE: usize = 200;

/// Keep of `times` what the counter still needs: inside its span, its newest `keep`.
fn trim(times: &mut Vec<Millis>, counter: &Counter, now: Millis) {
    let expired = times.partition_point(|t| *t <= now - counter.span);
    let surplus = (times.len() - expired).saturating_sub(counter.keep);
    times.drain(..expired + surplus);
}

impl Batch<'_> {
    /// The contact is to be looked at when the batch's steps are done; `depth` is how deep in
    /// a chain of emitted events the work that touched it came.
    pub(super) fn touch(&mut self, contact_id: &str, depth: u32) {
        let held = self.touched.entry(contact_id.to_owned()).or_default();
        *held = (*held).max(depth);
    }

    /// Count `event` in the windows of the contact's counters that count it.
    pub(super) fn note_event(&mut self, contact_id: &str, event: &Event) -> Result<(), StoreError> {
        let rules = self.journeys.audiences.rules();
        if !(rules.counters.values()).any(|c| c.counts(&event.name, &event.properties)) {
            return Ok(());
        }
        let mut audience = match self.noted.remove(contact_id) {
            Some(audience) => audience,
            None => match self.reads.contact(contact_id)? {
                Some(contact) => contact.audience.clone().unwrap_or_default(),
                None => return Ok(()),
            },
        };
        self.fill_windows(contact_id, &rules, &mut audience)?;
        let now = self.now;
        let at = event.timestamp.min(now);
        for (key, counter) in &rules.counters {
            if at > now - counter.span && counter.counts(&event.name, &event.properties) {
                let times = audience.windows.entry(key.clone()).or_default();
                let place = times.partition_point(|t| *t <= at);
                times.insert(place, at);
                trim(times, counter, now);
            }
        }
        // Kept aside until the contact is looked at, which writes it.
        self.noted.insert(contact_id.to_owned(), audience);
        Ok(())
    }

    /// Give the contact a window for each counter in force (one it did not keep yet is filled
    /// from its past events) and drop those no definition counts any more.
    fn fill_windows(
        &self,
        contact_id: &str,
        rules: &Rules,
        audience: &mut Audience,
    ) -> Result<(), StoreError> {
        audience
            .windows
            .retain(|key, _| rules.counters.contains_key(key));
        let now = self.now;
        for (key, counter) in &rules.counters {
            if audience.windows.contains_key(key) {
                continue;
            }
            let mut times = Vec::new();
            let mut before = None;
            'pages: loop {
                let page = (self.journeys.store).contact_events(
                    contact_id,
                    before.as_deref(),
                    HISTORY_PAGE,
                )?;
                for event in &page.events {
                    let at = event.timestamp.min(now);
                    if at <= now - counter.span {
                        break 'pages;
                    }
                    if counter.counts(&event.name, &event.properties) {
                        times.push(at);
                        if times.len() >= counter.keep {
                            break 'pages;
                        }
                    }
                }
                match page.next {
                    Some(next) => before = Some(next),
                    None => break,
                }
            }
            times.sort_unstable();
            audience.windows.insert(key.clone(), times);
        }
        Ok(())
    }

    /// Look again at every contact the batch touched.
    pub(super) fn settle_audiences(&mut self) -> Result<(), StoreError> {
        let rules = self.journeys.audiences.rules();
        let touched = std::mem::take(&mut self.touched);
        for (contact_id, depth) in touched {
            self.settle_audience(&rules, &contact_id, depth)?;
        }
        Ok(())
    }

    fn settle_audience(
        &mut self,
        rules: &Rules,
        contact_id: &str,
        depth: u32,
    ) -> Result<(), StoreError> {
        let Some(contact) = self.reads.contact(contact_id)? else {
            return Ok(());
        };
        if rules.is_empty() && contact.audience.is_none() {
            return Ok(());
        }
        let now = self.now;
        let before = contact.audience.clone().unwrap_or_default();
        let mut audience = (self.noted.remove(contact_id)).unwrap_or_else(|| before.clone());
        self.fill_windows(contact_id, rules, &mut audience)?;
        for (key, times) in &mut audience.windows {
            trim(times, &rules.counters[key], now);
        }
        let scoring = self.journeys.scoring.clone();
        let half_life = move |model: &str| scoring.half_life(model).flatten();

        // Tag rules, each against the contact as the rules before it left it. A rule takes
        // away only a tag it gave, and the tags a deleted rule gave go with it.
        // A contact never looked at has no tag from a rule; one looked at before rules kept
        // what they gave had every tag a rule is named for from it.
        let mut ruled = match (audience.ruled.take(), &contact.audience) {
            (Some(ruled), _) => ruled,
            (None, None) => Default::default(),
            (None, Some(_)) => (rules.tags.iter())
                .map(|rule| rule.record.name.clone())
                .filter(|tag| contact.tags.contains(tag))
                .collect(),
        };
        let mut tags = Vec::new();
        let mut judged: Contact = (*contact).clone();
        for rule in &rules.tags {
            let facts = Facts {
                contact: &judged,
                windows: &audience.windows,
                half_life: &half_life,
                now,
            };
            let holds = rule.checked.condition.holds(&facts);
            let tag = &rule.record.name;
            let effect = match (holds, judged.tags.contains(tag), ruled.contains(tag)) {
                (true, false, _) => {
                    ruled.insert(tag.clone());
                    Effect::AddTag { tag: tag.clone() }
                }
                (false, true, true) => {
                    ruled.remove(tag);
                    Effect::RemoveTag { tag: tag.clone() }
                }
                // Taken away by hand: the rule gives it again when it next starts to hold.
                (false, false, true) => {
                    ruled.remove(tag);
                    continue;
                }
                _ => continue,
            };
            judged.apply(&effect, now);
            tags.push(effect);
        }
        let orphaned: Vec<String> = (ruled.iter())
            .filter(|tag| !rules.tags.iter().any(|rule| rule.record.name == **tag))
            .cloned()
            .collect();
        for tag in orphaned {
            ruled.remove(&tag);
            if judged.tags.contains(&tag) {
                let effect = Effect::RemoveTag { tag };
                judged.apply(&effect, now);
                tags.push(effect);
            }
        }
        audience.ruled = Some(ruled);

        // Segments, and the next moment time alone could change an answer.
        let facts = Facts {
            contact: &judged,
            windows: &audience.windows,
            half_life: &half_life,
            now,
        };
        let mut segments = BTreeMap::new();
        let mut entered = Vec::new();
        let mut left = Vec::new();
        for segment in &rules.segments {
            let (name, generation) = (&segment.record.name, segment.record.generation);
            let was = before.segments.get(name) == Some(&generation);
            let is = segment.checked.condition.holds(&facts);
            if is {
                segments.insert(name.clone(), generation);
            }
            match (was, is) {
                (false, true) => entered.push(name.clone()),
                (true, false) => left.push(name.clone()),
                _ => {}
            }
        }
        let due = (rules.tags.iter().chain(&rules.segments))
            .filter_map(|d| d.checked.condition.next_change(&facts))
            .filter(|at| *at > now)
            .min();
        // A timer set already and due no later than needed stays: early, it only looks again
        // and sets the next, and not moving it saves two writes on most events (a new event
        // puts the end of its windows later).
        audience.timer_at = match before.timer_at {
            Some(set) if set > now && due.is_some_and(|due| set <= due) => Some(set),
            _ => due,
        };
        audience.segments = segments;

        let moves = (entered.iter().map(|s| (s, ENTERED_EVENT)))
            .chain(left.iter().map(|s| (s, LEFT_EVENT)));
        for (segment, name) in moves {
            audience.moves += 1;
            if depth + 1 > MAX_EVENT_DEPTH {
                tracing::warn!(
                    contact = contact_id,
                    segment,
                    "segment change not announced: it came {} events deep in a chain journeys emitted",
                    depth + 1
                );
                continue;
            }
            self.changes.emit(Event {
                // The contact's own count of moves: stable if the batch runs again.
                id: format!("{contact_id}:segment:{}", audience.moves),
                contact_id: contact_id.to_owned(),
                name: name.to_owned(),
                properties: [("segment".to_owned(), Value::Text(segment.clone()))].into(),
                timestamp: now,
                depth: depth + 1,
            });
        }
        if !tags.is_empty() {
            self.changes.change_contact(contact_id, tags);
        }
        // With nothing defined any more, the contact keeps no audience state.
        let audience = (!rules.is_empty()).then_some(audience);
        if audience != contact.audience {
            judged.audience = audience.clone();
            self.changes.set_audience(AudienceWrite {
                contact_id: contact_id.to_owned(),
                audience,
            });
        }
        if let Some(contact) = self.reads.contact_mut(contact_id) {
            *contact = judged;
        }
        Ok(())
    }

    /// A contact's audience timer fired: it is looked at again with the batch's others (a
    /// stale timer, set again since, only looks once more).
    pub(super) fn on_audience_timer(&mut self, contact_id: &str) {
        self.touch(contact_id, 0);
    }
}
