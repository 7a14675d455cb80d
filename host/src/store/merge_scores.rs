//! A merge's share of scoring and lifecycle state: the gone contact's model scores added to the
//! kept one's at the moment of the merge (each decayed by its model's half-life first), its
//! counted events added and the later of the two last interactions kept. The gone contact's
//! timers go, and the kept contact's are set to now, so its worker looks at once at what the
//! sum crossed (a threshold, a stage) and announces it.

use std::collections::BTreeMap;

use super::StoreError;
use super::codec::decode;
use super::layout::{TreeId, timer_key};
use super::scoring::ScoringModelRecord;
use super::sled_store::{SledStore, backend};
use super::write_set::WriteSet;
use crate::model::{Activity, Millis, ModelScore};

/// The half-life of model `name` as stored; none for a model without decay or gone.
fn half_life(store: &SledStore, name: &str) -> Result<Option<Millis>, StoreError> {
    let Some(bytes) = store.scoring_models.get(name).map_err(backend)? else {
        return Ok(None);
    };
    let record: ScoringModelRecord = decode(&bytes)?;
    Ok(record
        .half_life
        .and_then(|text| crate::journeys::definition::parse_duration(&text).ok()))
}

/// Move the timer `id` of contact `owner` from `old` to `new`.
fn move_timer(writes: &mut WriteSet<'_>, id: &str, owner: &str, old: Option<Millis>, new: Millis) {
    if let Some(old) = old {
        writes.remove(TreeId::Timers, timer_key(old, id));
    }
    writes.put(
        TreeId::Timers,
        timer_key(new, id),
        owner.as_bytes().to_vec(),
    );
}

#[allow(clippy::too_many_arguments)]
pub(super) fn merge_scores(
    store: &SledStore,
    writes: &mut WriteSet<'_>,
    kept: &mut BTreeMap<String, ModelScore>,
    gone: BTreeMap<String, ModelScore>,
    from: &str,
    into: &str,
    now: Millis,
) -> Result<(), StoreError> {
    for (model, score) in gone {
        if let Some(at) = score.timer_at {
            let id = crate::scoring::timer_id(&model, from);
            writes.remove(TreeId::Timers, timer_key(at, &id));
        }
        let half_life = half_life(store, &model)?;
        let added = crate::scoring::points::value(&score, now, half_life);
        // The person's level so far: the kept contact's, or the gone one's if only it scored.
        let held = kept.entry(model.clone()).or_insert(ModelScore {
            points: 0.0,
            at: now,
            timer_at: None,
            ..score
        });
        held.points = crate::scoring::points::value(held, now, half_life) + added;
        held.at = now;
        let id = crate::scoring::timer_id(&model, into);
        move_timer(writes, &id, into, held.timer_at, now);
        held.timer_at = Some(now);
    }
    Ok(())
}

pub(super) fn merge_activity(
    writes: &mut WriteSet<'_>,
    kept: &mut Option<Activity>,
    gone: Option<Activity>,
    from: &str,
    into: &str,
    now: Millis,
) {
    let Some(gone) = gone else {
        return;
    };
    if let Some(at) = gone.timer_at {
        writes.remove(
            TreeId::Timers,
            timer_key(at, &crate::lifecycle::timer_id(from)),
        );
    }
    let held = kept.get_or_insert_with(|| Activity {
        last_at: gone.last_at,
        ..Activity::default()
    });
    held.last_at = held.last_at.max(gone.last_at);
    for (event, count) in gone.counts {
        *held.counts.entry(event).or_default() += count;
    }
    let id = crate::lifecycle::timer_id(into);
    move_timer(writes, &id, into, held.timer_at, now);
    held.timer_at = Some(now);
}

/// The audience state of a contact merged away: its member keys and timer go; its window
/// times and the tags rules gave it join the kept contact's, whose timer is set to now so that
/// its worker looks at once at what the two together make (segments entered, tags).
/// No `segment_left` is announced for the one merged away: the person left no segment, one of
/// their two records went, and the event would reach journeys as the kept contact's.
pub(super) fn merge_audience(
    writes: &mut WriteSet<'_>,
    kept: &mut Option<crate::model::Audience>,
    gone: Option<crate::model::Audience>,
    from: &str,
    into: &str,
    now: Millis,
) {
    let Some(gone) = gone else {
        return;
    };
    for (segment, generation) in &gone.segments {
        writes.remove(
            TreeId::SegmentMembers,
            super::sled_audiences::member_key(segment, *generation, from),
        );
    }
    if let Some(at) = gone.timer_at {
        writes.remove(
            TreeId::Timers,
            timer_key(at, &crate::audiences::timer_id(from)),
        );
    }
    let held = kept.get_or_insert_with(Default::default);
    // The merged-away contact's tags join the kept one's; those a rule gave stay the rule's.
    if let Some(theirs) = gone.ruled {
        held.ruled
            .get_or_insert_with(Default::default)
            .extend(theirs);
    }
    for (counter, times) in gone.windows {
        let mine = held.windows.entry(counter).or_default();
        mine.extend(times);
        mine.sort_unstable();
    }
    let id = crate::audiences::timer_id(into);
    move_timer(writes, &id, into, held.timer_at, now);
    held.timer_at = Some(now);
}
