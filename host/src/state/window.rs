//! Quota windows: fixed calendar periods in UTC (day, ISO week from Monday, month), as a
//! pure function of a Unix time.

use std::time::Duration;

/// Seconds per day.
const SECS_PER_DAY: u64 = 86_400;
/// 1970-01-01 was a Thursday: days from a Monday to the epoch.
const EPOCH_DAYS_AFTER_MONDAY: u64 = 3;

/// The length of a quota window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Period {
    /// From 00:00 UTC to the next 00:00 UTC.
    Day,
    /// From Monday 00:00 UTC to the next Monday.
    Week,
    /// From the 1st of the month 00:00 UTC to the 1st of the next.
    Month,
}

impl Period {
    pub fn as_str(self) -> &'static str {
        match self {
            Period::Day => "day",
            Period::Week => "week",
            Period::Month => "month",
        }
    }
}

/// One quota window, `[start, end)` in Unix seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub start: u64,
    pub end: u64,
}

impl Window {
    /// Time left in the window at `now` (Unix seconds).
    pub fn remaining(&self, now: u64) -> Duration {
        Duration::from_secs(self.end.saturating_sub(now))
    }
}

/// The window of `period` that contains `now` (Unix seconds, UTC).
pub fn window(period: Period, now: u64) -> Window {
    let day = now / SECS_PER_DAY;
    match period {
        Period::Day => Window {
            start: day * SECS_PER_DAY,
            end: (day + 1) * SECS_PER_DAY,
        },
        Period::Week => {
            // Saturating: the first days of 1970 belong to a week that began before the epoch.
            let monday = day.saturating_sub((day + EPOCH_DAYS_AFTER_MONDAY) % 7);
            Window {
                start: monday * SECS_PER_DAY,
                end: (monday + 7) * SECS_PER_DAY,
            }
        }
        Period::Month => {
            let (year, month, _) = civil_from_days(day);
            let start = days_from_civil(year, month, 1);
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            Window {
                start: start * SECS_PER_DAY,
                end: days_from_civil(next_year, next_month, 1) * SECS_PER_DAY,
            }
        }
    }
}

/// Days since 1970-01-01 → (year, month 1–12, day 1–31), proleptic Gregorian
/// (Howard Hinnant's algorithm, for days on or after the epoch).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

/// (year ≥ 1970, month, day) → days since 1970-01-01.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // 2024-02-29T13:14:15Z, a Thursday in a leap year.
    const LEAP_DAY: u64 = 1_709_212_455;

    #[test]
    fn day_window() {
        let w = window(Period::Day, LEAP_DAY);
        assert_eq!(w.start, 1_709_164_800); // 2024-02-29T00:00:00Z
        assert_eq!(w.end, 1_709_251_200); // 2024-03-01T00:00:00Z
        assert_eq!(window(Period::Day, w.end).start, w.end);
        assert_eq!(window(Period::Day, w.end - 1).start, w.start);
    }

    #[test]
    fn week_starts_on_monday() {
        let w = window(Period::Week, LEAP_DAY);
        assert_eq!(w.start, 1_708_905_600); // Monday 2024-02-26
        assert_eq!(w.end, 1_709_510_400); // Monday 2024-03-04
        let w = window(Period::Week, 5 * SECS_PER_DAY); // Tuesday 1970-01-06
        assert_eq!(w.start, 4 * SECS_PER_DAY);
    }

    #[test]
    fn month_windows_follow_the_calendar() {
        let w = window(Period::Month, LEAP_DAY);
        assert_eq!(w.start, 1_706_745_600); // 2024-02-01
        assert_eq!(w.end, 1_709_251_200); // 2024-03-01
        let december = window(Period::Month, 1_734_000_000); // 2024-12-12
        assert_eq!(december.start, 1_733_011_200); // 2024-12-01
        assert_eq!(december.end, 1_735_689_600); // 2025-01-01
        assert_eq!(window(Period::Month, december.end).start, december.end);
    }

    #[test]
    fn calendar_round_trip() {
        for days in [0, 59, 60, 365, 10_957, 19_782, 20_000, 50_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days, "{y}-{m}-{d}");
        }
        assert_eq!(civil_from_days(19_782), (2024, 2, 29));
    }

    #[test]
    fn remaining_time() {
        let w = window(Period::Day, LEAP_DAY);
        assert_eq!(w.remaining(w.end - 10), Duration::from_secs(10));
        assert_eq!(w.remaining(w.end + 10), Duration::ZERO);
    }
}
