//! "Weekdays at 10:00 or 15:00" in the contact's own time zone: when is the next such moment?

use jiff::civil::{Time, Weekday};
use jiff::tz::TimeZone;

use super::definition::TimeWindow;
use crate::model::Millis;

/// A [`TimeWindow`] checked and ready to compute with.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    days: Vec<Weekday>,
    times: Vec<Time>,
}

impl Window {
    /// Read the days and times; the error says which one is wrong.
    pub fn parse(window: &TimeWindow) -> Result<Window, String> {
        let days = window
            .days
            .iter()
            .map(|day| {
                parse_day(day).ok_or_else(|| {
                    format!("`{day}` is not a day: use mon … sun or weekdays/weekends")
                })
            })
            .collect::<Result<Vec<_>, _>>()?
            .concat();
        if window.times.is_empty() {
            return Err("give at least one time of day, like \"10:00\"".into());
        }
        let mut times = window
            .times
            .iter()
            .map(|time| {
                parse_time(time)
                    .ok_or_else(|| format!("`{time}` is not a time of day: write HH:MM, 24-hour"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        times.sort();
        Ok(Window { days, times })
    }

    /// The first listed moment at or after `now` in `timezone` (an IANA name; UTC if unknown).
    pub fn next_at_or_after(&self, now: Millis, timezone: &str) -> Millis {
        let tz = TimeZone::get(timezone).unwrap_or(TimeZone::UTC);
        let Ok(instant) = jiff::Timestamp::from_millisecond(now) else {
            return now;
        };
        let today = instant.to_zoned(tz.clone()).date();
        // Eight days always reach a listed weekday; DST gaps move a time forward, never back.
        for offset in 0..8 {
            let Ok(date) = today.checked_add(jiff::Span::new().days(offset)) else {
                break;
            };
            if !self.days.is_empty() && !self.days.contains(&date.weekday()) {
                continue;
            }
            for time in &self.times {
                if let Ok(zoned) = date.to_datetime(*time).to_zoned(tz.clone()) {
                    let at = zoned.timestamp().as_millisecond();
                    if at >= now {
                        return at;
                    }
                }
            }
        }
        now
    }
}

fn parse_day(day: &str) -> Option<Vec<Weekday>> {
    use Weekday::*;
    Some(match day.to_ascii_lowercase().as_str() {
        "mon" | "monday" => vec![Monday],
        "tue" | "tuesday" => vec![Tuesday],
        "wed" | "wednesday" => vec![Wednesday],
        "thu" | "thursday" => vec![Thursday],
        "fri" | "friday" => vec![Friday],
        "sat" | "saturday" => vec![Saturday],
        "sun" | "sunday" => vec![Sunday],
        "weekdays" => vec![Monday, Tuesday, Wednesday, Thursday, Friday],
        "weekends" => vec![Saturday, Sunday],
        _ => return None,
    })
}

pub(crate) fn parse_time(text: &str) -> Option<Time> {
    let (hour, minute) = text.split_once(':')?;
    if hour.len() > 2 || minute.len() != 2 {
        return None;
    }
    Time::new(hour.parse().ok()?, minute.parse().ok()?, 0, 0).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Millis {
        text.parse::<jiff::Timestamp>().unwrap().as_millisecond()
    }

    fn window(days: &[&str], times: &[&str]) -> Window {
        Window::parse(&TimeWindow {
            days: days.iter().map(|d| d.to_string()).collect(),
            times: times.iter().map(|t| t.to_string()).collect(),
        })
        .unwrap()
    }

    #[test]
    fn weekdays_at_ten_or_three_in_the_contacts_time_zone() {
        let w = window(&["weekdays"], &["10:00", "15:00"]);
        // Friday 2026-11-27 16:00 in Shanghai (08:00Z) → Monday 10:00 Shanghai (02:00Z).
        assert_eq!(
            w.next_at_or_after(at("2026-11-27T08:00:00Z"), "Asia/Shanghai"),
            at("2026-11-30T02:00:00Z")
        );
        // Monday 11:00 Shanghai → the same day at 15:00.
        assert_eq!(
            w.next_at_or_after(at("2026-11-30T03:00:00Z"), "Asia/Shanghai"),
            at("2026-11-30T07:00:00Z")
        );
        // Exactly 10:00 counts as now.
        assert_eq!(
            w.next_at_or_after(at("2026-11-30T02:00:00Z"), "Asia/Shanghai"),
            at("2026-11-30T02:00:00Z")
        );
        // The same instant for a contact in Berlin: Friday 09:00 there → Friday 10:00.
        assert_eq!(
            w.next_at_or_after(at("2026-11-27T08:00:00Z"), "Europe/Berlin"),
            at("2026-11-27T09:00:00Z")
        );
    }

    #[test]
    fn bad_days_and_times_are_named() {
        let bad = |days: &[&str], times: &[&str]| {
            Window::parse(&TimeWindow {
                days: days.iter().map(|d| d.to_string()).collect(),
                times: times.iter().map(|t| t.to_string()).collect(),
            })
            .unwrap_err()
        };
        assert!(bad(&["funday"], &["10:00"]).contains("`funday`"));
        assert!(bad(&[], &["25:00"]).contains("`25:00`"));
        assert!(bad(&[], &[]).contains("at least one time"));
    }
}
