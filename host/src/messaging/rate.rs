//! A channel's send rate: at most `messages` sends in any window of `per_ms`. A sliding log of
//! the window's send times rather than a refilling bucket, because a bucket that starts full
//! lets twice its size through in one window, and providers count windows (WeCom: 20 a minute
//! per robot).
//!
//! The window is saved with each batch that sends on the channel, before those sends, and a
//! binding made ready (at start, or bound again) takes it back, so neither a restart nor a new
//! binding lets a second window's worth through. It is saved as counts per sixty-fourth of the
//! window, each count taken back as if its sends were made when its slice ends: later than
//! they were, never earlier, so a restored window holds back at least as long as the real one.

use std::collections::VecDeque;

use crate::model::Millis;
use crate::store::{Rate, SavedWindow};

/// Slices a saved window is counted in.
const SLICES: Millis = 64;

/// Most sends a window remembers: rates above this per window are not limited more finely.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct SendWindow {
    rate: Option<Rate>,
    sent: VecDeque<Millis>,
}

impl SendWindow {
    pub fn new(rate: Option<Rate>) -> Self {
        SendWindow {
            rate,
            sent: VecDeque::new(),
        }
    }

    /// The window of `rate` with the sends `saved` remembers, as of `now`.
    pub fn restore(rate: Option<Rate>, saved: Option<SavedWindow>, now: Millis) -> Self {
        let mut window = Self::new(rate);
        let (Some(rate), Some(saved)) = (rate, saved) else {
            return window;
        };
        let limit = (rate.messages as usize).min(MAX_REMEMBERED);
        for (end, count) in saved.slices {
            let at = end.min(now);
            if at <= now - rate.per_ms {
                continue;
            }
            window
                .sent
                .extend(std::iter::repeat_n(at, (count as usize).min(limit)));
        }
        // The newest are kept: a binding with a lower rate than the one saved must count the
        // sends that expire last.
        while window.sent.len() > limit {
            window.sent.pop_front();
        }
        window
    }

    /// What to save of it: its sends counted per slice.
    pub fn saved(&self) -> SavedWindow {
        let Some(rate) = self.rate else {
            return SavedWindow::default();
        };
        let width = (rate.per_ms + SLICES - 1).div_euclid(SLICES).max(1);
        let mut slices: Vec<(Millis, u32)> = Vec::new();
        for at in &self.sent {
            // Rounded up: a send restored at its slice's end (or at a `now` before it) is
            // counted in the same slice when saved again, so restarts do not carry it on.
            let end = (at + width - 1).div_euclid(width) * width;
            match slices.last_mut() {
                Some((last, count)) if *last == end => *count += 1,
                _ => slices.push((end, 1)),
            }
        }
        SavedWindow { slices }
    }

    /// Take a send at `now`, or say when the next one may go.
    pub fn take(&mut self, now: Millis) -> Result<(), Millis> {
        let Some(rate) = self.rate else {
            return Ok(());
        };
        while self
            .sent
            .front()
            .is_some_and(|at| *at <= now - rate.per_ms || *at > now)
        {
            self.sent.pop_front();
        }
        let limit = (rate.messages as usize).min(MAX_REMEMBERED);
        if self.sent.len() < limit {
            self.sent.push_back(now);
            return Ok(());
        }
        Err(self.sent.front().copied().unwrap_or(now) + rate.per_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The most sends in any minute, of send times in order.
    fn busiest_minute(sent: &[Millis]) -> usize {
        (0..sent.len())
            .map(|i| {
                sent[i..]
                    .iter()
                    .take_while(|at| **at < sent[i] + 60_000)
                    .count()
            })
            .max()
            .unwrap_or(0)
    }

    #[test]
    fn no_window_ever_holds_more_than_the_rate() {
        let mut bucket = SendWindow::new(Some(Rate {
            messages: 20,
            per_ms: 60_000,
        }));
        let mut sent = Vec::new();
        let mut now = 0;
        while now < 600_000 {
            match bucket.take(now) {
                Ok(()) => sent.push(now),
                Err(next) => assert!(next > now),
            }
            now += 500;
        }
        assert!(busiest_minute(&sent) <= 20, "{sent:?}");
        assert_eq!(sent.len(), 200, "the rate is used, not just respected");
    }

    /// Bound again with a lower rate, the window counts the newest of the saved sends, which
    /// expire last.
    #[test]
    fn a_window_restored_under_a_lower_rate_counts_its_newest_sends() {
        let per_minute = |messages| Rate {
            messages,
            per_ms: 60_000,
        };
        let mut window = SendWindow::new(Some(per_minute(20)));
        for second in 0..20 {
            window.take(second * 1_000).unwrap();
        }
        let mut lower = SendWindow::restore(Some(per_minute(10)), Some(window.saved()), 20_000);
        // The sends of 0–9 s have left the minute; those of 10–19 s have not.
        assert!(lower.take(61_000).is_err());
        assert!(lower.take(81_000).is_ok());
    }

    /// A window saved and taken back at any moment (a restart, a new binding) never lets
    /// more through in any window than the rate, and holds back no longer than a slice more.
    #[test]
    fn a_window_saved_and_restored_anywhere_still_holds_to_the_rate() {
        let rate = Rate {
            messages: 20,
            per_ms: 60_000,
        };
        for restart_every in [700, 3_100, 29_000, 61_000] {
            let mut window = SendWindow::new(Some(rate));
            let (mut sent, mut now) = (Vec::new(), 0);
            while now < 600_000 {
                if now % restart_every < 500 {
                    window = SendWindow::restore(Some(rate), Some(window.saved()), now);
                }
                if window.take(now).is_ok() {
                    sent.push(now);
                }
                now += 500;
            }
            assert!(busiest_minute(&sent) <= 20, "{sent:?}");
            // Each slice is 60 s / 64: a restored send counts until its slice ends.
            assert!(
                sent.len() >= 180,
                "{} sent, restarting every {restart_every} ms",
                sent.len()
            );
        }
    }
}
