//! Conversions between event timestamps and Unix seconds, on every event's path.
//!
//! chrono stores a date as year and day of year, so both directions do calendar math:
//! seconds to a date (`DateTime::from_timestamp`) and a date to seconds
//! (`DateTime::timestamp`). Events come in runs from the same day, so each direction
//! remembers its last day per thread and only does the math when the day changes. The
//! results are exactly chrono's (tested against it below).

use std::cell::Cell;

use chrono::{DateTime, NaiveDate, NaiveTime, Timelike, Utc};

/// Days from 0001-01-01 (chrono's day 1) to 1970-01-01.
const UNIX_EPOCH_DAY: i64 = 719_163;
const SECONDS_PER_DAY: i64 = 86_400;

thread_local! {
    /// The last day turned into a date: (days since the Unix epoch, its date).
    static LAST_DAY_TO_DATE: Cell<Option<(i64, NaiveDate)>> = const { Cell::new(None) };
    /// The last date turned into seconds: (date, seconds at its midnight).
    static LAST_DATE_TO_SECONDS: Cell<Option<(NaiveDate, i64)>> = const { Cell::new(None) };
}

/// `DateTime::from_timestamp(seconds, nanos)`: `None` out of chrono's range or with
/// `nanos` of 2 seconds or more (a leap second's `nanos` lies in 1e9..2e9, as chrono
/// allows at a minute's last second only).
pub fn utc_from_unix(seconds: i64, nanos: u32) -> Option<DateTime<Utc>> {
    let day = seconds.div_euclid(SECONDS_PER_DAY);
    let date = match LAST_DAY_TO_DATE.get() {
        Some((cached, date)) if cached == day => date,
        _ => {
            let date = NaiveDate::from_num_days_from_ce_opt(
                i32::try_from(day.checked_add(UNIX_EPOCH_DAY)?).ok()?,
            )?;
            LAST_DAY_TO_DATE.set(Some((day, date)));
            date
        }
    };
    let time = NaiveTime::from_num_seconds_from_midnight_opt(
        seconds.rem_euclid(SECONDS_PER_DAY) as u32,
        nanos,
    )?;
    Some(date.and_time(time).and_utc())
}

/// `ts.timestamp()`: whole seconds since the Unix epoch (a leap second counts as the
/// second it extends, as in chrono).
pub fn unix_seconds(ts: &DateTime<Utc>) -> i64 {
    let naive = ts.naive_utc();
    let date = naive.date();
    let midnight = match LAST_DATE_TO_SECONDS.get() {
        Some((cached, seconds)) if cached == date => seconds,
        _ => {
            let seconds = date.and_time(NaiveTime::MIN).and_utc().timestamp();
            LAST_DATE_TO_SECONDS.set(Some((date, seconds)));
            seconds
        }
    };
    midnight + i64::from(naive.time().num_seconds_from_midnight())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_directions_match_chrono_across_days_and_at_the_edges() {
        let mut cases: Vec<(i64, u32)> = vec![
            (0, 0),
            (-1, 999_999_999),
            (-86_400, 0),
            (-86_401, 5),
            (951_782_400, 123_456_789), // 2000-02-29
            (1_700_000_000, 1),
            (253_402_300_799, 999_999_999), // 9999-12-31T23:59:59
            (-62_135_596_800, 0),           // 0001-01-01
            (DateTime::<Utc>::MAX_UTC.timestamp(), 0),
            (DateTime::<Utc>::MIN_UTC.timestamp(), 0),
        ];
        // A run across midnight, as a cache sees it, and back.
        cases.extend((0..200).map(|i| (1_700_006_300 + i * 37, i as u32)));
        cases.extend((0..200).rev().map(|i| (1_700_006_300 + i * 37, 7)));
        for (secs, nanos) in cases {
            let ours = utc_from_unix(secs, nanos);
            assert_eq!(
                ours,
                DateTime::from_timestamp(secs, nanos),
                "{secs}.{nanos}"
            );
            let ts = ours.expect("in range");
            assert_eq!(unix_seconds(&ts), ts.timestamp(), "{ts}");
        }
        // Out of range both ways, and nanos past a leap second.
        for (secs, nanos) in [
            (i64::MAX, 0),
            (i64::MIN, 0),
            (DateTime::<Utc>::MAX_UTC.timestamp() + 1, 0),
            (DateTime::<Utc>::MIN_UTC.timestamp() - 1, 0),
            (1_700_000_000, 2_000_000_000),
            (1_700_000_000, 1_500_000_000), // not at a minute's end: no leap second
        ] {
            assert_eq!(
                utc_from_unix(secs, nanos),
                DateTime::from_timestamp(secs, nanos)
            );
        }
        // A leap second, where chrono allows one: same seconds as chrono.
        let leap = DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap();
        assert_eq!(utc_from_unix(1_483_228_799, 1_500_000_000), Some(leap));
        assert_eq!(unix_seconds(&leap), leap.timestamp());
    }
}
