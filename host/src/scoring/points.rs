//! A model score's arithmetic: decay (points halve every half-life, computed when read, never
//! by rewriting every contact), thresholds reached, and when decay next takes a score across
//! one (the contact's timer).

use crate::model::{Millis, ModelScore};

/// Points at `now`, decayed from `at` with `half_life` (none: they keep).
pub fn decayed(points: f64, at: Millis, now: Millis, half_life: Option<Millis>) -> f64 {
    match half_life {
        Some(half_life) if now > at && points != 0.0 => {
            points * (-((now - at) as f64) / half_life as f64).exp2()
        }
        _ => points,
    }
}

/// The score's value at `now`.
pub fn value(score: &ModelScore, now: Millis, half_life: Option<Millis>) -> f64 {
    decayed(score.points, score.at, now, half_life)
}

/// How many of `thresholds` (ascending) `value` has reached.
pub fn level(thresholds: &[f64], value: f64) -> u32 {
    thresholds.iter().take_while(|t| value >= **t).count() as u32
}

/// A threshold crossed, one way.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Crossing {
    pub threshold: f64,
    pub up: bool,
}

/// The thresholds crossed going from level `from` to level `to`, in the order they were
/// crossed.
pub fn crossings(thresholds: &[f64], from: u32, to: u32) -> Vec<Crossing> {
    // A level is never past the thresholds it counts (see `ModelScore::revision`).
    let count = thresholds.len();
    let (from, to) = ((from as usize).min(count), (to as usize).min(count));
    if to > from {
        (thresholds[from..to].iter())
            .map(|&threshold| Crossing {
                threshold,
                up: true,
            })
            .collect()
    } else {
        (thresholds[to..from].iter().rev())
            .map(|&threshold| Crossing {
                threshold,
                up: false,
            })
            .collect()
    }
}

/// When decay will have taken `value` (at `now`, at level `level`) across the nearest
/// threshold on its way to zero: a positive score falls below the highest threshold it has
/// reached, a negative one rises to the lowest it has not. `None` when no threshold lies
/// between the value and zero, or there is no decay. The moment is a millisecond past the
/// exact one, so the value then is across.
pub fn next_crossing(
    thresholds: &[f64],
    value: f64,
    level: u32,
    now: Millis,
    half_life: Option<Millis>,
) -> Option<Millis> {
    let target = if value > 0.0 {
        thresholds.get((level as usize).checked_sub(1)?)?
    } else {
        thresholds.get(level as usize)?
    };
    reaches(value, *target, now, half_life)
}

/// When decay will have taken `value` (at `now`) across `bound` on its way to zero, a
/// millisecond past the exact moment so the value then is across; `None` when the bound does
/// not lie between zero and the value, or there is no decay.
pub fn reaches(value: f64, bound: f64, now: Millis, half_life: Option<Millis>) -> Option<Millis> {
    let half_life = half_life? as f64;
    // Decay moves toward zero and never reaches it: a bound of the other sign, zero, or
    // beyond the value is never crossed this way.
    if bound == 0.0 || bound.signum() != value.signum() || bound.abs() > value.abs() {
        return None;
    }
    let after = half_life * (value / bound).log2();
    if !after.is_finite() || after > 1e15 {
        return None;
    }
    Some(now + after.max(0.0).ceil() as Millis + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DAY: Millis = 86_400_000;

    #[test]
    fn points_halve_every_half_life_and_keep_without_one() {
        assert_eq!(decayed(100.0, 0, 30 * DAY, Some(30 * DAY)), 50.0);
        assert_eq!(decayed(100.0, 0, 60 * DAY, Some(30 * DAY)), 25.0);
        assert_eq!(decayed(-8.0, 0, 30 * DAY, Some(30 * DAY)), -4.0);
        assert_eq!(decayed(100.0, 0, 60 * DAY, None), 100.0);
        assert_eq!(
            decayed(100.0, 10, 5, Some(DAY)),
            100.0,
            "no growth backwards"
        );
    }

    #[test]
    fn levels_and_the_crossings_between_them() {
        let thresholds = [40.0, 80.0, 90.0];
        assert_eq!(level(&thresholds, 39.9), 0);
        assert_eq!(level(&thresholds, 80.0), 2);
        assert_eq!(level(&thresholds, 95.0), 3);
        let up = crossings(&thresholds, 0, 2);
        assert_eq!(
            up.iter().map(|c| (c.threshold, c.up)).collect::<Vec<_>>(),
            [(40.0, true), (80.0, true)]
        );
        let down = crossings(&thresholds, 3, 1);
        assert_eq!(
            down.iter().map(|c| (c.threshold, c.up)).collect::<Vec<_>>(),
            [(90.0, false), (80.0, false)]
        );
        assert!(crossings(&thresholds, 2, 2).is_empty());
    }

    #[test]
    fn the_decay_timer_falls_just_past_the_crossing() {
        let thresholds = [40.0, 80.0];
        let half_life = Some(30 * DAY);
        // 160 halves to 80 in 30 days: a millisecond later it is below.
        let due = next_crossing(&thresholds, 160.0, 2, 0, half_life).unwrap();
        assert_eq!(due, 30 * DAY + 1);
        assert!(decayed(160.0, 0, due, half_life) < 80.0);
        assert!(decayed(160.0, 0, due - 2, half_life) >= 80.0);
        // Below every threshold, or without decay: nothing to wait for.
        assert_eq!(next_crossing(&thresholds, 30.0, 0, 0, half_life), None);
        assert_eq!(next_crossing(&thresholds, 160.0, 2, 0, None), None);
        // A negative score rises toward zero across a negative threshold.
        let due = next_crossing(&[-10.0], -40.0, 0, 0, half_life).unwrap();
        assert!(decayed(-40.0, 0, due, half_life) >= -10.0);
        assert_eq!(next_crossing(&[0.0], 5.0, 1, 0, half_life), None);
    }
}
