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
    /// The last date written as text: (date, `YYYY-MM-DDT`).
    static LAST_DATE_TEXT: Cell<Option<(NaiveDate, [u8; 11])>> = const { Cell::new(None) };
}

/// `00` to `99`, two bytes each.
const DIGIT_PAIRS: &[u8; 200] = b"\
0001020304050607080910111213141516171819\
2021222324252627282930313233343536373839\
4041424344454647484950515253545556575859\
6061626364656667686970717273747576777879\
8081828384858687888990919293949596979899";

/// Writes `v` (below 100) as two digits at `at`.
#[inline]
fn two_digits(buf: &mut [u8], at: usize, v: u32) {
    let i = (v as usize % 100) * 2;
    buf[at..at + 2].copy_from_slice(&DIGIT_PAIRS[i..i + 2]);
}

/// Writes `v` in decimal so that it ends just before `end`; returns where it starts.
/// Two digits at a time. `buf[..end]` must have room (20 bytes take any `u64`).
pub(crate) fn decimal_before(buf: &mut [u8], mut end: usize, mut v: u64) -> usize {
    while v >= 100 {
        end -= 2;
        two_digits(buf, end, (v % 100) as u32);
        v /= 100;
    }
    if v >= 10 {
        end -= 2;
        two_digits(buf, end, v as u32);
    } else {
        end -= 1;
        buf[end] = b'0' + v as u8;
    }
    end
}

/// `YYYY-MM-DDTHH:MM:SS.nnnnnnnnnZ` into `buf` without allocating, the date part
/// remembered per thread. `None` (format it with chrono) outside years 0..=9999 and on
/// leap seconds.
pub(crate) fn rfc3339_nanos<'a>(ts: &DateTime<Utc>, buf: &'a mut [u8; 30]) -> Option<&'a str> {
    use chrono::Datelike;
    // `naive_utc`, not `date_naive`: the latter adds the (zero) offset, with checks.
    let naive = ts.naive_utc();
    let (date, time) = (naive.date(), naive.time());
    let nanos = time.nanosecond();
    if nanos >= 1_000_000_000 {
        return None;
    }
    let date_text = match LAST_DATE_TEXT.get() {
        Some((cached, text)) if cached == date => text,
        _ => {
            let year = u32::try_from(date.year()).ok().filter(|y| *y <= 9999)?;
            let mut text = *b"0000-00-00T";
            two_digits(&mut text, 0, year / 100);
            two_digits(&mut text, 2, year % 100);
            two_digits(&mut text, 5, date.month());
            two_digits(&mut text, 8, date.day());
            LAST_DATE_TEXT.set(Some((date, text)));
            text
        }
    };
    buf[..11].copy_from_slice(&date_text);
    let seconds = time.num_seconds_from_midnight();
    two_digits(buf, 11, seconds / 3600);
    buf[13] = b':';
    two_digits(buf, 14, seconds / 60 % 60);
    buf[16] = b':';
    two_digits(buf, 17, seconds % 60);
    buf[19] = b'.';
    two_digits(buf, 20, nanos / 10_000_000);
    two_digits(buf, 22, nanos / 100_000 % 100);
    two_digits(buf, 24, nanos / 1_000 % 100);
    two_digits(buf, 26, nanos / 10 % 100);
    buf[28] = b'0' + (nanos % 10) as u8;
    buf[29] = b'Z';
    std::str::from_utf8(&buf[..]).ok()
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
    fn text_matches_chrono_across_days_and_years() {
        use chrono::SecondsFormat;
        let mut buf = [0u8; 30];
        for secs in (0..400).map(|i| 1_700_000_000 + i * 3_607).chain([
            0,
            951_782_400,
            253_402_300_799,
            -62_135_596_800,
            86_399,
        ]) {
            for nanos in [0, 5, 10, 99, 100_000_001, 999_999_999, 123_456_789] {
                let ts = DateTime::from_timestamp(secs, nanos).unwrap();
                assert_eq!(
                    rfc3339_nanos(&ts, &mut buf),
                    Some(ts.to_rfc3339_opts(SecondsFormat::Nanos, true).as_str())
                );
            }
        }
        // Years past 9999 and before 0, and leap seconds, are left to chrono.
        for ts in [
            DateTime::from_timestamp(253_402_300_800, 0).unwrap(),
            DateTime::from_timestamp(-62_167_219_201, 0).unwrap(), // year -1
            DateTime::from_timestamp(1_483_228_799, 1_500_000_000).unwrap(),
        ] {
            assert_eq!(rfc3339_nanos(&ts, &mut buf), None, "{ts:?}");
        }
    }

    #[test]
    fn decimals_are_display() {
        let mut buf = [0u8; 20];
        for v in [0, 7, 10, 99, 100, 101, 999, 1_000, 4_294_967_295, u64::MAX] {
            let at = decimal_before(&mut buf, 20, v);
            assert_eq!(&buf[at..], v.to_string().as_bytes());
        }
    }

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
