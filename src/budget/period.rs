//! Windows: the span of unix milliseconds a meter's count lives in.
//!
//! Owns: [`window`], the one place a [`Period`] becomes a `[start, end)` span.
//! Does not: read the clock (`now` is passed in) or hold any state (a minute window's anchor
//! is kept by the caller).
//! Key types: none; calendar math is the `time` crate's.

use time::{Duration, OffsetDateTime, UtcOffset};

use super::meter::Period;

/// Length of a [`Period::Minute`] window.
pub const MINUTE_MS: u64 = 60_000;

/// The window of `period` that contains `now_ms`, as `(start, end)` in unix milliseconds,
/// `end` exclusive.
///
/// - `Minute`: the 60 s starting at `anchor_ms` (the current window's start) while
///   `now_ms < anchor_ms + 60 s`, else the 60 s starting at `now_ms` (anchored at first use).
/// - `Day`, `Month`: the calendar day or month containing `now_ms` at the fixed UTC offset
///   `offset_secs` (east positive). An offset outside ±25:59:59 counts as UTC; a time past
///   the calendar's range (year 9999) is in a window that never ends, as is any start before
///   1970 (clamped to 0).
/// - `Total`: `(0, u64::MAX)`.
pub fn window(period: Period, now_ms: u64, anchor_ms: Option<u64>, offset_secs: i32) -> (u64, u64) {
    match period {
        Period::Minute => match anchor_ms {
            Some(a) if now_ms < a.saturating_add(MINUTE_MS) => (a, a.saturating_add(MINUTE_MS)),
            _ => (now_ms, now_ms.saturating_add(MINUTE_MS)),
        },
        Period::Day | Period::Month => {
            calendar(period, now_ms, offset_secs).unwrap_or((0, u64::MAX))
        }
        Period::Total => (0, u64::MAX),
    }
}

/// The calendar day or month containing `now_ms`; `None` past the calendar's range.
fn calendar(period: Period, now_ms: u64, offset_secs: i32) -> Option<(u64, u64)> {
    let offset = UtcOffset::from_whole_seconds(offset_secs).unwrap_or(UtcOffset::UTC);
    let secs = i64::try_from(now_ms / 1000).ok()?;
    let date = OffsetDateTime::from_unix_timestamp(secs)
        .ok()?
        .checked_to_offset(offset)?
        .date();
    let (first, days) = match period {
        Period::Month => (date.replace_day(1).ok()?, date.month().length(date.year())),
        _ => (date, 1),
    };
    let start = first.midnight().assume_offset(offset);
    let end = start.checked_add(Duration::days(i64::from(days)))?;
    Some((unix_ms(start), unix_ms(end)))
}

/// Unix milliseconds of a whole-second instant, clamped at 0.
fn unix_ms(t: OffsetDateTime) -> u64 {
    u64::try_from(t.unix_timestamp())
        .unwrap_or(0)
        .saturating_mul(1000)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Unix ms of a UTC date-time (test helper; the code under test never builds dates).
    fn utc(y: i32, mo: u8, d: u8, h: u8, mi: u8, s: u8) -> u64 {
        let m = time::Month::try_from(mo).unwrap();
        let date = time::Date::from_calendar_date(y, m, d).unwrap();
        let t = date.with_hms(h, mi, s).unwrap().assume_utc();
        u64::try_from(t.unix_timestamp()).unwrap() * 1000
    }

    const H: i32 = 3600;

    #[test]
    fn minute_is_anchored_at_first_use() {
        // No anchor: starts now.
        assert_eq!(window(Period::Minute, 5_000, None, 0), (5_000, 65_000));
        // Inside the anchored window: the anchor's window, to the millisecond.
        assert_eq!(
            window(Period::Minute, 64_999, Some(5_000), 0),
            (5_000, 65_000)
        );
        // A caller slightly behind the anchor (another thread's clock) is still in it.
        assert_eq!(
            window(Period::Minute, 4_990, Some(5_000), 0),
            (5_000, 65_000)
        );
        // At the end: a new window starting now, not at the old end.
        assert_eq!(
            window(Period::Minute, 65_000, Some(5_000), 0),
            (65_000, 125_000)
        );
        assert_eq!(
            window(Period::Minute, 200_000, Some(5_000), 0),
            (200_000, 260_000)
        );
        // The offset does not matter for minutes.
        assert_eq!(window(Period::Minute, 5_000, None, -5 * H), (5_000, 65_000));
        // Saturates at the end of time.
        assert_eq!(
            window(Period::Minute, u64::MAX - 1, None, 0),
            (u64::MAX - 1, u64::MAX)
        );
    }

    #[test]
    fn total_never_ends() {
        assert_eq!(window(Period::Total, 123, None, 0), (0, u64::MAX));
        assert_eq!(
            window(Period::Total, u64::MAX, Some(7), 3 * H),
            (0, u64::MAX)
        );
    }

    #[test]
    fn day_in_utc() {
        let now = utc(2024, 3, 15, 13, 45, 10) + 123;
        assert_eq!(
            window(Period::Day, now, None, 0),
            (utc(2024, 3, 15, 0, 0, 0), utc(2024, 3, 16, 0, 0, 0))
        );
        // Midnight belongs to the day it starts; the last millisecond to the day before.
        let midnight = utc(2024, 3, 16, 0, 0, 0);
        assert_eq!(window(Period::Day, midnight, None, 0).0, midnight);
        assert_eq!(window(Period::Day, midnight - 1, None, 0).1, midnight);
        // The anchor is ignored for calendar periods.
        assert_eq!(
            window(Period::Day, now, Some(1), 0),
            window(Period::Day, now, None, 0)
        );
    }

    #[test]
    fn day_at_a_negative_offset() {
        // 02:00 UTC on the 15th is 21:00 on the 14th at UTC-5: that day runs from 05:00 UTC
        // on the 14th to 05:00 UTC on the 15th.
        let now = utc(2024, 3, 15, 2, 0, 0);
        assert_eq!(
            window(Period::Day, now, None, -5 * H),
            (utc(2024, 3, 14, 5, 0, 0), utc(2024, 3, 15, 5, 0, 0))
        );
        // At 05:00 UTC the new local day starts.
        let five = utc(2024, 3, 15, 5, 0, 0);
        assert_eq!(window(Period::Day, five, None, -5 * H).0, five);
    }

    #[test]
    fn day_at_a_positive_offset_with_minutes() {
        // UTC+5:30. 20:00 UTC on the 15th is 01:30 on the 16th local.
        let ist = 5 * H + 30 * 60;
        let now = utc(2024, 3, 15, 20, 0, 0);
        assert_eq!(
            window(Period::Day, now, None, ist),
            (utc(2024, 3, 15, 18, 30, 0), utc(2024, 3, 16, 18, 30, 0))
        );
    }

    #[test]
    fn month_ends_and_leap_years() {
        let w = |y, mo, d| window(Period::Month, utc(y, mo, d, 12, 0, 0), None, 0);
        // 31-day month.
        assert_eq!(
            w(2024, 1, 31),
            (utc(2024, 1, 1, 0, 0, 0), utc(2024, 2, 1, 0, 0, 0))
        );
        // Leap February: 29 days.
        assert_eq!(
            w(2024, 2, 29),
            (utc(2024, 2, 1, 0, 0, 0), utc(2024, 3, 1, 0, 0, 0))
        );
        assert_eq!(w(2024, 2, 29).1 - w(2024, 2, 29).0, 29 * 86_400_000);
        // Common February: 28 days; 1900 is not a leap year, 2000 is.
        assert_eq!(w(2023, 2, 10).1 - w(2023, 2, 10).0, 28 * 86_400_000);
        assert_eq!(w(2100, 2, 10).1 - w(2100, 2, 10).0, 28 * 86_400_000);
        assert_eq!(w(2000, 2, 10).1 - w(2000, 2, 10).0, 29 * 86_400_000);
        // 30-day month.
        assert_eq!(
            w(2024, 4, 30),
            (utc(2024, 4, 1, 0, 0, 0), utc(2024, 5, 1, 0, 0, 0))
        );
        // December rolls into the next year.
        assert_eq!(
            w(2024, 12, 31),
            (utc(2024, 12, 1, 0, 0, 0), utc(2025, 1, 1, 0, 0, 0))
        );
        // The first millisecond of a month is in it; the one before is not.
        let first = utc(2024, 3, 1, 0, 0, 0);
        assert_eq!(window(Period::Month, first, None, 0).0, first);
        assert_eq!(window(Period::Month, first - 1, None, 0).1, first);
    }

    #[test]
    fn month_at_offsets() {
        // 23:30 UTC on Jan 31 is already Feb 1 at UTC+2 (a leap February).
        let now = utc(2024, 1, 31, 23, 30, 0);
        assert_eq!(
            window(Period::Month, now, None, 2 * H),
            (utc(2024, 1, 31, 22, 0, 0), utc(2024, 2, 29, 22, 0, 0))
        );
        // 03:00 UTC on Mar 1 is still Feb 29 at UTC-8.
        let now = utc(2024, 3, 1, 3, 0, 0);
        assert_eq!(
            window(Period::Month, now, None, -8 * H),
            (utc(2024, 2, 1, 8, 0, 0), utc(2024, 3, 1, 8, 0, 0))
        );
        // New Year's Eve at UTC-10: still December, ending at 10:00 UTC on Jan 1.
        let now = utc(2025, 1, 1, 9, 59, 59);
        assert_eq!(
            window(Period::Month, now, None, -10 * H),
            (utc(2024, 12, 1, 10, 0, 0), utc(2025, 1, 1, 10, 0, 0))
        );
    }

    #[test]
    fn out_of_range_inputs_do_not_panic() {
        // An invalid offset counts as UTC.
        let now = utc(2024, 3, 15, 13, 0, 0);
        assert_eq!(
            window(Period::Day, now, None, 100 * H),
            window(Period::Day, now, None, 0)
        );
        // Past year 9999: a window that never ends.
        assert_eq!(window(Period::Day, u64::MAX, None, 0), (0, u64::MAX));
        assert_eq!(window(Period::Month, u64::MAX / 2, None, 0), (0, u64::MAX));
        // Before 1970 locally: the start clamps at 0, the end is right.
        assert_eq!(
            window(Period::Day, 1_000, None, 5 * H),
            (0, utc(1970, 1, 1, 19, 0, 0))
        );
    }
}
