//! A channel's send rate: at most `messages` sends in any window of `per_ms`. A sliding log of
//! the window's send times rather than a refilling bucket, because a bucket that starts full
//! lets twice its size through in one window, and providers count windows (WeCom: 20 a minute
//! per robot).

use std::collections::VecDeque;

use crate::model::Millis;
use crate::store::Rate;

/// Most sends a window remembers: rates above this per window are not limited more finely.
const MAX_REMEMBERED: usize = 100_000;

#[derive(Debug)]
pub struct SendWindow {
    rate: Option<Rate>,
    sent: VecDeque<Millis>,
}

impl SendWindow {
    pub fn new(rate: Option<Rate>, _now: Millis) -> Self {
        SendWindow {
            rate,
            sent: VecDeque::new(),
        }
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

    #[test]
    fn no_window_ever_holds_more_than_the_rate() {
        let mut bucket = SendWindow::new(
            Some(Rate {
                messages: 20,
                per_ms: 60_000,
            }),
            0,
        );
        let mut sent = Vec::new();
        let mut now = 0;
        while now < 600_000 {
            match bucket.take(now) {
                Ok(()) => sent.push(now),
                Err(next) => assert!(next > now),
            }
            now += 500;
        }
        for (i, start) in sent.iter().enumerate() {
            let in_window = sent[i..]
                .iter()
                .take_while(|at| **at < start + 60_000)
                .count();
            assert!(
                in_window <= 20,
                "{in_window} sends in the minute from {start}"
            );
        }
        assert_eq!(sent.len(), 200, "the rate is used, not just respected");
    }
}
