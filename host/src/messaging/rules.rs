//! The rules a marketing send obeys beyond consent: frequency caps (how often a contact hears
//! from a channel, a journey or the same touchpoint) and the send window (the hours of the
//! contact's own day a message may arrive). Transactional messages and test sends obey
//! neither.

use jiff::civil::Time;
use jiff::tz::TimeZone;

use crate::journeys::windows::parse_time;
use crate::model::Millis;
use crate::store::{Cap, CapScope, DeliveryStatus, OutboxMessage, SendHours};

/// The default of the source documents: the same touchpoint at most twice a day.
pub const DEFAULT_CAPS: [Cap; 1] = [Cap {
    messages: 2,
    per_ms: 86_400_000,
    scope: CapScope::Template,
}];

impl SendHours {
    pub fn check(&self) -> Result<(Time, Time), String> {
        let time = |text: &str| {
            parse_time(text).ok_or_else(|| format!("`{text}` is not a time of day: write HH:MM"))
        };
        let (from, to) = (time(&self.from)?, time(&self.to)?);
        if from == to {
            return Err(
                "`from` and `to` are the same time; leave the window out to send at any hour"
                    .into(),
            );
        }
        Ok((from, to))
    }

    /// `None` when `now` is inside the window in `timezone`; else when it next opens.
    pub fn next_opening(&self, now: Millis, timezone: &str) -> Option<Millis> {
        let (from, to) = self.check().ok()?;
        let tz = TimeZone::get(timezone).unwrap_or(TimeZone::UTC);
        let zoned = jiff::Timestamp::from_millisecond(now)
            .ok()?
            .to_zoned(tz.clone());
        let time = zoned.time();
        let inside = if from < to {
            from <= time && time < to
        } else {
            time >= from || time < to
        };
        if inside {
            return None;
        }
        let today = zoned.date();
        for offset in 0..2 {
            let date = today.checked_add(jiff::Span::new().days(offset)).ok()?;
            let opening = date.to_datetime(from).to_zoned(tz.clone()).ok()?;
            let at = opening.timestamp().as_millisecond();
            if at > now {
                return Some(at);
            }
        }
        None
    }
}

/// A message being sent in the same batch: `(at, journey, template)`.
pub type Going = (Millis, String, String);

/// When a contact may next get `message` under `caps`, given the messages they were sent
/// (and those about to go in the same batch, as `(at, journey, template)`): `None` if now.
pub fn capped_until(
    caps: &[Cap],
    message: &OutboxMessage,
    sent_before: &[OutboxMessage],
    going: &[Going],
    now: Millis,
) -> Option<(Millis, Cap)> {
    let mut sends: Vec<(Millis, &str, &str)> = sent_before
        .iter()
        .filter(|m| m.channel == message.channel && m.id != message.id && !m.test)
        .filter(|m| matches!(m.status, DeliveryStatus::Sent | DeliveryStatus::Delivered))
        .filter_map(|m| {
            let sent = m
                .history
                .iter()
                .rev()
                .find(|s| s.status == DeliveryStatus::Sent)?;
            Some((sent.at, m.journey_id.as_str(), m.template.as_str()))
        })
        .collect();
    sends.extend(going.iter().map(|(at, j, t)| (*at, j.as_str(), t.as_str())));
    let mut until = None;
    for cap in caps {
        let mut counted: Vec<Millis> = sends
            .iter()
            .filter(|(at, journey, template)| {
                *at > now - cap.per_ms
                    && match cap.scope {
                        CapScope::Channel => true,
                        CapScope::Journey => *journey == message.journey_id,
                        CapScope::Template => *template == message.template,
                    }
            })
            .map(|(at, _, _)| *at)
            .collect();
        if counted.len() < cap.messages as usize {
            continue;
        }
        counted.sort();
        // Free again once enough of the counted sends have left the window.
        let frees_at = counted[counted.len() - cap.messages as usize] + cap.per_ms;
        if until.is_none_or(|(at, _)| frees_at > at) {
            until = Some((frees_at, *cap));
        }
    }
    until
}

pub fn describe(cap: &Cap) -> String {
    let scope = match cap.scope {
        CapScope::Channel => "from this channel",
        CapScope::Journey => "from this journey",
        CapScope::Template => "of this message",
    };
    format!(
        "frequency cap: at most {} {scope} per {} h",
        cap.messages,
        cap.per_ms as f64 / 3_600_000.0
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: Millis = 3_600_000;

    #[test]
    fn the_send_window_opens_at_its_start_in_the_contacts_time_zone() {
        let hours = SendHours {
            from: "09:00".into(),
            to: "21:00".into(),
        };
        // 2026-12-01T14:00Z is 22:00 in Shanghai: next opening 09:00 there, 01:00Z.
        let at = |t: &str| t.parse::<jiff::Timestamp>().unwrap().as_millisecond();
        let now = at("2026-12-01T14:00:00Z");
        assert_eq!(
            hours.next_opening(now, "Asia/Shanghai"),
            Some(at("2026-12-02T01:00:00Z"))
        );
        assert_eq!(hours.next_opening(now, "UTC"), None);
        let overnight = SendHours {
            from: "21:00".into(),
            to: "06:00".into(),
        };
        assert_eq!(overnight.next_opening(now, "Asia/Shanghai"), None);
        assert_eq!(
            overnight.next_opening(now, "UTC"),
            Some(at("2026-12-01T21:00:00Z"))
        );
        assert!(
            SendHours {
                from: "9".into(),
                to: "21:00".into()
            }
            .check()
            .is_err()
        );
        let _ = H;
    }
}
